"""The Ray stages: decode tasks, the inference actor (and how the model reaches its node), write tasks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tagger import __version__
from tagger.batch import BatchConfig, Job, write_outputs
from tagger.cache import DEFAULT_FLOOR, content_hash
from tagger.dataset.common import require
from tagger.dataset.output import (
    METADATA_KEY,
    OutputStore,
    ProbColumns,
    errors_name,
    errors_schema,
    output_schema,
    parquet_bytes,
    part_name,
)
from tagger.dataset.sources import read_bytes, shard_members
from tagger.errors import ImageError
from tagger.hub import ModelFiles
from tagger.labels import Labels
from tagger.options import TagOptions, options_to_dict
from tagger.pipeline import prepare_source
from tagger.postprocess import postprocess

log = logging.getLogger(__name__)

ROWS_PER_DECODE_BLOCK = 8  # decoded images per block a decode task hands on: an actor takes one or more at a time
ENV_NODE_MODELS = "TAGGER_RAY_MODELS"


def node_models_dir() -> Path:
    """Where a node keeps the model copies that reach it through the object store: ``$TAGGER_RAY_MODELS``, else
    ``wd14-tagger-ray`` in the temporary folder."""
    env = os.environ.get(ENV_NODE_MODELS)
    return Path(env).expanduser() if env else Path(tempfile.gettempdir()) / "wd14-tagger-ray"


@dataclass(frozen=True)
class ModelShip:
    """How inference actors get the model the driver resolved: its files on the driver's node; elsewhere the
    same bytes from the object store, written once per node into a folder named by their hash."""

    files: ModelFiles
    driver_node: str
    digest: str = ""
    refs: tuple[Any, ...] = ()  # ObjectRefs of the model and tags bytes; empty when no other node can exist

    def files_here(self) -> ModelFiles:
        import ray

        if not self.refs or ray.get_runtime_context().get_node_id() == self.driver_node:
            return self.files
        folder = node_models_dir() / self.digest
        model, tags = folder / self.files.model_path.name, folder / self.files.tags_path.name
        if not (model.exists() and tags.exists()):
            data = ray.get(list(self.refs))
            tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.tmp")
            tmp.mkdir(parents=True)
            try:
                (tmp / model.name).write_bytes(data[0])
                (tmp / tags.name).write_bytes(data[1])
                folder.parent.mkdir(parents=True, exist_ok=True)
                tmp.rename(folder)  # whole or absent; another actor of this node may have been first
            except OSError:
                if not (model.exists() and tags.exists()):
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("model %s copied to %s from the object store", self.files.name, folder)
        return replace(self.files, model_path=model, tags_path=tags)


def ship_model(files: ModelFiles, single_node: bool) -> ModelShip:
    """The model the driver resolved, ready for every actor: put once in the object store unless no node other
    than the driver's can run an actor (a Ray this run started here)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if single_node:
        return ModelShip(files, node)
    model, tags = files.model_path.read_bytes(), files.tags_path.read_bytes()
    digest = hashlib.blake2b(model, digest_size=16)
    digest.update(b"\0" + tags)
    return ModelShip(files, node, digest.hexdigest(), (ray.put(model), ray.put(tags)))


def embedding_problem(model: Any) -> str | None:
    """Why ``--embeddings`` cannot be had from the loaded ``model`` (None: it can)."""
    if model.embedding_name is not None:
        return None
    return (
        f"--embeddings: model {model.name} has no embedding output (PixAI's tagger has one; a tagger.json can name "
        "a model's embedding output); leave out --embeddings"
    )


def pack(tensor: np.ndarray) -> tuple[bytes, str]:
    """A preprocessed tensor as bytes and its layout (``u1:448,448,3``) for the object store. A tensor of whole
    numbers 0..255 (WD14's: 8-bit pixels, BGR) travels as uint8, a quarter of the size, and comes back to the
    same float32 values; any other (a family that normalises) as float32."""
    shape = ",".join(str(d) for d in tensor.shape)
    small = tensor.astype(np.uint8)
    if np.array_equal(small, tensor):
        return small.tobytes(), f"u1:{shape}"
    return np.ascontiguousarray(tensor, dtype=np.float32).tobytes(), f"f4:{shape}"


def unpack(data: bytes, layout: str) -> np.ndarray:
    kind, shape = layout.split(":")
    array = np.frombuffer(data, dtype=np.uint8 if kind == "u1" else np.float32)
    return array.reshape(tuple(int(d) for d in shape.split(","))).astype(np.float32)


class _Rows:
    """Decoded rows on their way to the model: one Arrow table per block."""

    COLUMNS = ("key", "source", "content_hash", "status", "error", "caption", "backup", "replaces", "layout", "pixels")

    def __init__(self) -> None:
        self.data: dict[str, list[Any]] = {c: [] for c in self.COLUMNS}

    def __len__(self) -> int:
        return len(self.data["key"])

    def add(self, key: str, source: str, status: str, *, digest: str | None = None, error: str | None = None,
            caption: str | None = None, backup: str | None = None, replaces: str | None = None,
            layout: str | None = None, pixels: bytes | None = None) -> None:  # fmt: skip
        values = (key, source, digest, status, error, caption, backup, replaces, layout, pixels)
        for column, value in zip(self.COLUMNS, values, strict=True):
            self.data[column].append(value)

    def table(self) -> Any:
        pa = require("pyarrow")
        types = {"pixels": pa.binary()}
        return pa.table({c: pa.array(v, types.get(c, pa.string())) for c, v in self.data.items()})


def _prepare(
    rows: _Rows, key: str, source: str, data: bytes, prep: Any, done: str | None, item: dict[str, Any]
) -> None:
    digest = content_hash(data)
    if digest == done and not item.get("recaption"):
        rows.add(key, source, "skipped", digest=digest)
        return
    try:
        tensor = prepare_source(data, prep)
    except ImageError as e:
        rows.add(key, source, "failed", digest=digest, error=e.reason)
        return
    pixels, layout = pack(tensor)
    status = "recaption" if digest == done else "todo"
    rows.add(key, source, status, digest=digest, caption=item.get("caption"), backup=item.get("backup"),
             replaces=done if status == "todo" else None, layout=layout, pixels=pixels)  # fmt: skip


def decode_block(block: Any, prep: Any) -> Iterator[Any]:
    """Ray task: listed files and shards -> rows of preprocessed tensors, skips and failures. ``prep`` is the
    model's preparer (``LoadedModel.prepare``), or the WD14 input side."""
    rows = _Rows()
    for item in block.to_pylist():
        source = item["source"]
        done = dict(zip(item["done_keys"] or [], item["done_hashes"] or [], strict=True))
        if item["problem"]:
            rows.add(source, source, "failed", error=item["problem"])
        elif item["kind"] == "tar":
            for key, data, error in shard_members(source):
                if error is not None:
                    rows.add(key, source, "failed", error=error)
                else:
                    _prepare(rows, key, source, data, prep, done.get(key), {})
                if len(rows) >= ROWS_PER_DECODE_BLOCK:
                    yield rows.table()
                    rows = _Rows()
        else:
            try:
                data = read_bytes(source)
            except ImageError as e:
                rows.add(source, source, "failed", error=e.reason)
            else:
                _prepare(rows, source, source, data, prep, done.get(source), item)
        if len(rows) >= ROWS_PER_DECODE_BLOCK:
            yield rows.table()
            rows = _Rows()
    if len(rows):
        yield rows.table()


class Infer:
    """Ray actor: one model session, made once, runs every block it is given."""

    def __init__(self, ship: ModelShip, device: str, threads: int, batch_size: int | None, embeddings: bool):
        from tagger.pipeline import default_batch_size
        from tagger.runtime import Device, create_session

        self.model = create_session(ship.files_here(), Device.parse(device), threads)
        if self.model.device_note:
            log.warning("%s", self.model.device_note)
        self.batch = self.model.fixed_batch or batch_size or default_batch_size(self.model)
        self.embeddings = embeddings

    def __call__(self, block: Any) -> Any:
        pa = require("pyarrow")
        status = block.column("status").to_pylist()
        pixels, layouts = block.column("pixels").to_pylist(), block.column("layout").to_pylist()
        todo = [i for i, s in enumerate(status) if s in ("todo", "recaption")]
        probs: list[bytes | None] = [None] * len(status)
        embedding: list[list[float] | None] = [None] * len(status)
        for start in range(0, len(todo), self.batch):
            chosen = todo[start : start + self.batch]
            batch = np.stack([unpack(pixels[i], layouts[i]) for i in chosen])
            out, emb = self.model.run_outputs(batch, embeddings=self.embeddings)
            out = np.asarray(out, dtype=np.float32)
            for j, i in enumerate(chosen):
                probs[i] = out[j].tobytes()
                if emb is not None:
                    embedding[i] = emb[j].tolist()
        block = block.drop_columns(["pixels", "layout"]).append_column("probs", pa.array(probs, pa.binary()))
        if self.embeddings:
            block = block.append_column("embedding", pa.array(embedding, pa.list_(pa.float32())))
        return block


@dataclass(frozen=True)
class WriteSpec:
    output: str
    model_id: str
    labels: Labels
    options: TagOptions
    run: str
    captions: BatchConfig | None = None
    embeddings: bool = False
    floor: float = DEFAULT_FLOOR


def write_block(block: Any, spec: WriteSpec) -> Any:
    """Ray task: postprocess a block, write its Parquet file, its errors and its caption files; returns what
    it did as one row of counts for the driver."""
    pa = require("pyarrow")
    store = OutputStore(spec.output)
    schema = output_schema(spec.embeddings)
    tagged: dict[str, list[Any]] = {n: [] for n in ("key", "source", "content_hash", "model", "caption", "embedding")}
    probs_columns = ProbColumns(spec.labels, spec.floor)
    errors: dict[str, list[Any]] = {name: [] for name in errors_schema().names}
    counts = {"skipped": 0, "recaptioned": 0, "backups": 0}
    replaced: list[str] = []

    def fail(row: dict[str, Any], reason: str) -> None:
        for name, value in zip(errors, (row["key"], row["source"], row["content_hash"], spec.model_id, reason,
                                        spec.run), strict=True):  # fmt: skip
            errors[name].append(value)

    for row in block.to_pylist():
        status = row["status"]
        if status == "skipped":
            counts["skipped"] += 1
            continue
        if status == "failed":
            fail(row, row["error"])
            continue
        probs = np.frombuffer(row["probs"], dtype=np.float32)
        result = postprocess(probs, spec.labels, spec.options)
        if row["caption"] and spec.captions is not None:
            job = Job(Path(row["key"]), Path(row["caption"]), Path(row["backup"]) if row["backup"] else None)
            try:
                written = write_outputs(job, probs, spec.labels, None, result, spec.captions, spec.options,
                                        spec.model_id, row.get("embedding"))  # fmt: skip
            except OSError as e:
                fail(row, f"caption {job.caption} could not be written ({e.strerror or e})")
                continue
            counts["backups"] += written.backed_up
        if status == "recaption":
            counts["recaptioned"] += 1
            continue
        probs_columns.add(probs)
        record = {"key": row["key"], "source": row["source"], "content_hash": row["content_hash"],
                  "model": spec.model_id, "caption": result.prompt, "embedding": row.get("embedding")}  # fmt: skip
        for name, value in record.items():
            tagged[name].append(value)
        if row["replaces"]:
            replaced.append(f"{row['key']}\0{row['replaces']}")

    meta = {
        METADATA_KEY: json.dumps(
            {
                "version": __version__,
                "model": spec.model_id,
                "floor": spec.floor,
                "options": options_to_dict(spec.options),
            }
        ).encode()
    }
    if tagged["key"]:
        data = {**tagged, **probs_columns.columns(schema)}
        table = pa.Table.from_pydict({n: data[n] for n in schema.names}, schema=schema.with_metadata(meta))
        store.write(part_name(table), parquet_bytes(table))
    if errors["key"]:
        table = pa.Table.from_pydict(errors, schema=errors_schema().with_metadata(meta))
        store.write(errors_name(table), parquet_bytes(table), errors=True)
    failures = [f"{k}\0{e}" for k, e in zip(errors["key"], errors["error"], strict=True)]
    return pa.table(
        {
            "tagged": [len(tagged["key"])],
            "skipped": [counts["skipped"]],
            "failed": [len(errors["key"])],
            "recaptioned": [counts["recaptioned"]],
            "backups": [counts["backups"]],
            "failures": pa.array([failures], pa.list_(pa.string())),
            "replaced": pa.array([replaced], pa.list_(pa.string())),
        }
    )
