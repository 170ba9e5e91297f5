"""OUT: the Parquet dataset (schema, whole-file writes, the scan that repairs and resumes it)."""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagger.dataset.common import DatasetError, absolute, is_url, require, url_fs
from tagger.files import write_atomic
from tagger.labels import Labels
from tagger.postprocess import mcut_threshold

PART_PREFIX = "part-"  # OUT/part-<digest>.parquet: the tags, one row per image
ERRORS_DIR = "_errors"  # OUT/_errors/<digest>.parquet: what could not be tagged, and why (readers skip "_" folders)
METADATA_KEY = b"wd14-tagger"  # in each file's schema metadata: what wrote it, the floor, the options
KEY_COLUMNS = ("key", "source", "content_hash", "model")


def output_schema(embeddings: bool = False) -> Any:
    """The schema of OUT's ``part-*.parquet`` files (one row per image)."""
    pa = require("pyarrow")
    probs = pa.map_(pa.string(), pa.float32())
    fields = [
        pa.field("key", pa.string(), nullable=False),  # the path or URL; a WebDataset sample's key
        pa.field("source", pa.string(), nullable=False),  # the file it was read from (the shard for WebDataset)
        pa.field("content_hash", pa.string(), nullable=False),  # BLAKE2b-128 of the bytes (the cache's key)
        pa.field("model", pa.string(), nullable=False),  # repo@revision, or local:<folder>
        pa.field("rating", probs),  # every rating
        pa.field("general", probs),  # general tags at or above the floor, highest first
        pa.field("character", probs),  # character tags at or above the floor, highest first
        # the model's other categories (copyright, artist, meta...: the families that have them), each as above
        pa.field("categories", pa.map_(pa.string(), probs)),
        pa.field("mcut_general", pa.float32()),  # MCut points of the full vectors: --mcut stays exact later
        pa.field("mcut_character", pa.float32()),
        pa.field("caption", pa.string()),  # the caption as `tag` writes it under this run's options
    ]
    if embeddings:
        fields.append(pa.field("embedding", pa.list_(pa.float32())))
    return pa.schema(fields)


def errors_schema() -> Any:
    pa = require("pyarrow")
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("content_hash", pa.string()),  # null when the bytes could not be read
            pa.field("model", pa.string(), nullable=False),
            pa.field("error", pa.string(), nullable=False),
            pa.field("run", pa.string(), nullable=False),  # the run that met it (UTC start time and a token)
        ]
    )


@dataclass(frozen=True)
class OutputStore:
    """OUT: a folder (a path, or a URL fsspec opens) of ``part-<digest>.parquet`` files and ``_errors/``.

    Every file appears whole or not at all: a local file is written beside its place under a hidden name and
    renamed (``files.write_atomic``); on object stores one upload is one object. Hidden leftovers of a crash
    are removed when a run starts.
    """

    url: str

    @property
    def local(self) -> bool:
        return not is_url(self.url)

    @property
    def fs(self) -> Any:
        return self._fs_root()[0]

    @property
    def root(self) -> str:
        return self._fs_root()[1]

    def _fs_root(self) -> tuple[Any, str]:
        if self.local:
            fsspec = require("fsspec")
            return fsspec.filesystem("file"), absolute(Path(self.url))
        fs, root = url_fs(self.url)
        return fs, root.rstrip("/")

    def check(self) -> None:
        fs, root = self._fs_root()
        if fs.exists(root) and not fs.isdir(root):
            raise DatasetError(f"--output {self.url} is a file; give a folder for the Parquet dataset")
        fs.makedirs(root, exist_ok=True)

    def files(self, errors: bool = False) -> list[str]:
        fs, root = self._fs_root()
        folder = posixpath.join(root, ERRORS_DIR) if errors else root
        if not fs.exists(folder):
            return []
        names = fs.ls(folder, detail=False)
        prefix = "" if errors else PART_PREFIX
        picked = [n for n in names if posixpath.basename(n).startswith(prefix) and n.endswith(".parquet")]
        return sorted(p for p in picked if not posixpath.basename(p).startswith("."))

    def write(self, name: str, data: bytes, errors: bool = False) -> str:
        fs, root = self._fs_root()
        folder = posixpath.join(root, ERRORS_DIR) if errors else root
        target = posixpath.join(folder, name)
        if self.local:
            write_atomic(Path(target), data)
        else:
            fs.makedirs(folder, exist_ok=True)
            tmp = posixpath.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
            fs.pipe_file(tmp, data)
            fs.mv(tmp, target)
        return target

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path)

    def remove_leftovers(self) -> int:
        """Delete the hidden temporary files a crash left behind; returns how many."""
        fs, root = self._fs_root()
        gone = 0
        for folder in (root, posixpath.join(root, ERRORS_DIR)):
            if not fs.exists(folder):
                continue
            for name in fs.ls(folder, detail=False):
                base = posixpath.basename(name)
                if base.startswith(".") and base.endswith(".tmp"):
                    self.remove(name)
                    gone += 1
        return gone

    def read(self, path: str, columns: Iterable[str] | None = None) -> Any:
        pq = require("pyarrow.parquet")
        return pq.read_table(path, columns=list(columns) if columns else None, filesystem=self.fs)

    def schema(self, path: str) -> Any:
        pq = require("pyarrow.parquet")
        return pq.read_schema(path, filesystem=self.fs)


def parquet_bytes(table: Any) -> bytes:
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.blake2b(digest_size=12)
    for line in sorted(lines):
        h.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def part_name(table: Any) -> str:
    """Named after its rows: the same rows written again (a retried task) replace the same file."""
    rows = zip(*(table.column(c).to_pylist() for c in ("key", "content_hash", "model")), strict=True)
    return f"{PART_PREFIX}{_digest(chr(0).join(r) for r in rows)}.parquet"


def errors_name(table: Any) -> str:
    rows = zip(*(table.column(c).to_pylist() for c in ("key", "error", "run")), strict=True)
    return f"{_digest(chr(0).join(r) for r in rows)}.parquet"


@dataclass
class Holdings:
    """What OUT holds for one model: ``{source: {key: content_hash}}``, and the duplicates it had."""

    done: dict[str, dict[str, str]]
    rows: int
    duplicates: int


def scan_output(store: OutputStore, model_id: str, sources: set[str] | None = None,
                drop: set[tuple[str, str]] | None = None) -> Holdings:  # fmt: skip
    """Read what OUT holds for ``model_id`` (of ``sources``, when given) and repair it.

    Rows that came out twice (same key, content hash and model) keep their first copy, and the rows of
    ``drop`` (``(key, content_hash)`` of ``model_id``: images whose content changed since) go: each file
    concerned is rewritten without them, the new file written before the old one goes, so that no row is ever
    lost. Raises DatasetError for files in OUT that this command did not write.
    """
    pa = require("pyarrow")
    pc = require("pyarrow.compute")
    paths = store.files()
    tables = []
    for index, path in enumerate(paths):
        schema = store.schema(path)
        if METADATA_KEY not in (schema.metadata or {}) or not set(KEY_COLUMNS) <= set(schema.names):
            raise DatasetError(
                f"{path} in --output {store.url} was not written by this command; give a folder of its own "
                "(a new one, or one an earlier `dataset` run wrote)"
            )
        table = store.read(path, KEY_COLUMNS)
        n = table.num_rows
        table = table.append_column("file", pa.array(np.full(n, index, dtype=np.int32)))
        tables.append(table.append_column("row", pa.array(np.arange(n, dtype=np.int32))))
    if not tables:
        return Holdings({}, 0, 0)
    index_table = pa.concat_tables(tables)
    index_table = index_table.append_column("i", pa.array(np.arange(index_table.num_rows, dtype=np.int64)))

    unwanted: dict[int, set[int]] = {}  # file -> rows to remove
    groups = index_table.group_by(["key", "content_hash", "model"]).aggregate([("i", "min"), ("i", "count")])
    repeated = groups.filter(pc.greater(groups["i_count"], 1))
    duplicates = 0
    if repeated.num_rows:
        joined = index_table.join(repeated, keys=["key", "content_hash", "model"], join_type="inner")
        extra = joined.filter(pc.not_equal(joined["i"], joined["i_min"]))
        for file, row in zip(extra["file"].to_pylist(), extra["row"].to_pylist(), strict=True):
            unwanted.setdefault(file, set()).add(row)
            duplicates += 1
    if drop:
        mine = index_table.filter(pc.equal(index_table["model"], model_id))
        mine = mine.filter(pc.is_in(mine["key"], value_set=pa.array(sorted({k for k, _ in drop}), pa.string())))
        for key, digest, file, row in zip(*(mine[c].to_pylist() for c in ("key", "content_hash", "file", "row")),
                                          strict=True):  # fmt: skip
            if (key, digest) in drop:
                unwanted.setdefault(file, set()).add(row)
    for file, rows in unwanted.items():
        _rewrite_without(store, paths[file], rows)

    mine = index_table.filter(pc.equal(index_table["model"], model_id))
    if sources is not None:
        mine = mine.filter(pc.is_in(mine["source"], value_set=pa.array(sorted(sources), pa.string())))
    done: dict[str, dict[str, str]] = {}
    gone = {(f, r) for f, rows in unwanted.items() for r in rows}
    for src, key, digest, file, row in zip(
        *(mine[c].to_pylist() for c in ("source", "key", "content_hash", "file", "row")), strict=True
    ):
        if (file, row) not in gone:
            done.setdefault(src, {})[key] = digest
    return Holdings(done, index_table.num_rows - len(gone), duplicates)


def _rewrite_without(store: OutputStore, path: str, rows: set[int]) -> None:
    pa = require("pyarrow")
    table = store.read(path)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[list(rows)] = False
    kept = table.filter(pa.array(keep))
    if kept.num_rows:
        name = part_name(kept)
        if posixpath.join(posixpath.dirname(path), name) != path:
            store.write(name, parquet_bytes(kept))
    if kept.num_rows == 0 or posixpath.basename(path) != part_name(kept):
        store.remove(path)


def prune_errors(store: OutputStore, run: str, sources: set[str]) -> None:
    """Drop earlier runs' error rows of ``sources``: this complete run tried each of them again."""
    pa = require("pyarrow")
    pc = require("pyarrow.compute")
    value_set = pa.array(sorted(sources), pa.string())
    for path in store.files(errors=True):
        table = store.read(path)
        if "run" not in table.column_names:
            continue
        stale = pc.and_(pc.not_equal(table["run"], run), pc.is_in(table["source"], value_set=value_set))
        if not pc.any(stale).as_py():
            continue
        kept = table.filter(pc.invert(stale))
        if kept.num_rows:
            store.write(errors_name(kept), parquet_bytes(kept), errors=True)
        store.remove(path)


class ProbColumns:
    """OUT's probability columns, row by row: every rating, the tags at or above ``floor`` (highest first) and
    the MCut points of the full vectors, so that any threshold >= floor and MCut can be applied later without
    the model (what the probability cache keeps, as columns). Built as flat arrays: a real model has ~10,000
    tags and a row may keep hundreds."""

    GROUPS = ("rating", "general", "character")

    def __init__(self, labels: Labels, floor: float) -> None:
        self.labels, self.floor = labels, floor
        self.named = np.array([bool(name.strip()) for name in labels.names], dtype=bool)
        self.offsets: dict[str, list[int]] = {g: [0] for g in self.GROUPS}
        self.index: dict[str, list[np.ndarray]] = {g: [] for g in self.GROUPS}
        self.values: dict[str, list[np.ndarray]] = {g: [] for g in self.GROUPS}
        self.mcut: dict[str, list[float]] = {"mcut_general": [], "mcut_character": []}
        # the other categories: one inner map per (row, category), the outer map keyed by category names
        self.extra = labels.extra
        self.inner: tuple[list[int], list[np.ndarray], list[np.ndarray]] = ([0], [], [])

    def _kept(self, idx: np.ndarray, probs: np.ndarray, floor: bool) -> np.ndarray:
        idx = idx[self.named[idx]]  # a tag list's placeholder row without a name is never a tag
        if floor:
            idx = idx[probs[idx] >= self.floor]
        return idx[np.argsort(-probs[idx], kind="stable")]

    def add(self, probs: np.ndarray) -> None:
        for group in self.GROUPS:
            idx = self._kept(getattr(self.labels, group), probs, floor=group != "rating")
            self.offsets[group].append(self.offsets[group][-1] + len(idx))
            self.index[group].append(idx)
            self.values[group].append(probs[idx])
        offsets, index, values = self.inner
        for name in self.extra:
            idx = self._kept(self.labels.groups[name], probs, floor=True)
            offsets.append(offsets[-1] + len(idx))
            index.append(idx)
            values.append(probs[idx])
        self.mcut["mcut_general"].append(mcut_threshold(probs[self.labels.general]))
        self.mcut["mcut_character"].append(mcut_threshold(probs[self.labels.character]))

    def columns(self, schema: Any) -> dict[str, Any]:
        pa = require("pyarrow")
        names = pa.array(self.labels.names, pa.string())
        out: dict[str, Any] = {}
        for group in self.GROUPS:
            idx = np.concatenate(self.index[group]) if self.index[group] else np.zeros(0, np.int64)
            vals = np.concatenate(self.values[group]) if self.values[group] else np.zeros(0, np.float32)
            out[group] = pa.MapArray.from_arrays(
                pa.array(self.offsets[group], pa.int32()), names.take(pa.array(idx)), pa.array(vals, pa.float32()),
                type=schema.field(group).type,
            )  # fmt: skip
        for name, values in self.mcut.items():
            out[name] = pa.array(values, pa.float32())
        rows = len(self.mcut["mcut_general"])
        offsets, index, values = self.inner
        idx = np.concatenate(index) if index else np.zeros(0, np.int64)
        vals = np.concatenate(values) if values else np.zeros(0, np.float32)
        map_type = schema.field("categories").type
        inner = pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), names.take(pa.array(idx)),
                                        pa.array(vals, pa.float32()), type=map_type.item_type)  # fmt: skip
        outer_offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * len(self.extra))
        categories = pa.array(list(self.extra) * rows, pa.string())
        out["categories"] = pa.MapArray.from_arrays(outer_offsets, categories, inner, type=map_type)
        return out
