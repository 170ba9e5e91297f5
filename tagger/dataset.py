"""Tagging datasets beyond one machine: ``python -m tagger dataset SRC --output OUT`` on Ray Data.

One streaming Ray Data pipeline, so memory stays flat however large SRC is:

1. listing (the driver): SRC's images and WebDataset shards, each with what OUT already holds for it;
2. decode (Ray tasks on CPUs): read the bytes, hash them (the probability cache's content hash), skip what OUT
   holds (key + content hash + model id), decode and preprocess with the engine's ``prepare_source``; a bad
   file becomes a failed row, never a failed run;
3. inference (an actor pool, one model session per actor, a GPU each when the cluster has them): the engine's
   ``create_session`` and ``LoadedModel.run``. The model is resolved once, on the driver (``Tagger``: models
   folder, Hugging Face cache or one download); actors on the driver's node load those files, actors on other
   nodes get the same bytes once per node through the object store;
4. write (Ray tasks): ``postprocess`` under the tag options, one Parquet file per block written atomically and
   named after its rows, failures into ``OUT/_errors``, and with ``--captions`` the caption files beside local
   images, written by the same code as ``tag DIR`` (``batch.write_caption``).

Ray retries the tasks and restarts the actors of a worker or node that dies. A block written again after a
retry lands under the same name; a row that still came out twice (a retried block batched otherwise) is
removed by the scan of OUT that ends every run and starts the next. Ray, pyarrow and fsspec are imported here
only, inside the functions that need them: nothing else in the project imports Ray.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import posixpath
import secrets
import shutil
import socket
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from tagger import __version__
from tagger.batch import (
    EXISTING_POLICIES,
    BatchConfig,
    BatchConfigError,
    Job,
    caption_path,
    check_filename_format,
    claim_caption,
    iter_images,
    write_caption,
)
from tagger.cache import DEFAULT_FLOOR, content_hash
from tagger.errors import ImageError, TaggerError
from tagger.files import write_atomic
from tagger.hub import ModelFiles
from tagger.images import image_extensions
from tagger.labels import Labels
from tagger.options import TagOptions, options_to_dict
from tagger.pipeline import prepare_source
from tagger.postprocess import mcut_threshold, postprocess
from tagger.runtime import available_cpus

log = logging.getLogger(__name__)

PART_PREFIX = "part-"  # OUT/part-<digest>.parquet: the tags, one row per image
ERRORS_DIR = "_errors"  # OUT/_errors/<digest>.parquet: what could not be tagged, and why (readers skip "_" folders)
METADATA_KEY = b"wd14-tagger"  # in each file's schema metadata: what wrote it, the floor, the options
LISTING_EXTENSIONS = (".parquet", ".csv", ".txt")  # SRC files that list image paths (or shard paths)
SHARD_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
PATH_COLUMNS = ("path", "image", "file", "filename", "url", "image_path", "source")
FILES_PER_TASK = 16  # listed files per decode task (a shard is a task of its own)
ROWS_PER_DECODE_BLOCK = 16  # decoded images per block a decode task hands on
DECODE_MEMORY = 256 * 1024**2  # heap reserved per decode task: a large image decodes into ~100-200 MB
KEY_COLUMNS = ("key", "source", "content_hash", "model")
ENV_NODE_MODELS = "TAGGER_RAY_MODELS"
MAX_FAILURES_SHOWN = 100  # failures the summary keeps (OUT/_errors has them all)
_RAY_EXTRA = "pip install -e '.[ray]' (ray[data], pyarrow and fsspec)"


class DatasetError(TaggerError):
    """The dataset run cannot start or go on (Ray missing, cluster unreachable, bad SRC or OUT)."""


# -- configuration ----------------------------------------------------------------------------------------


@dataclass
class DatasetConfig:
    sources: list[str]
    output: str
    model: str
    options: TagOptions = field(default_factory=TagOptions)
    models_dir: str | None = None
    device: str = "auto"  # auto | cpu | cuda: auto uses the cluster's GPUs when it has any
    download: bool = True
    batch_size: int | None = None  # images per model run (as ``tag``): default 16 on a GPU, 1 on a CPU
    actors: tuple[int, int] | None = None  # (min, max) inference actors; None: one per GPU, else one per node
    threads: int | None = None  # CPU threads (and Ray CPUs) per actor; None: 1 with a GPU, else half a node's
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs and the device is not cpu
    rows_per_file: int = 1024
    address: str | None = None  # a Ray cluster to join; None: $RAY_ADDRESS, else a new one on this machine
    captions: BatchConfig | None = None  # also write caption files beside local images, as ``tag DIR``
    embeddings: bool = False
    path_column: str | None = None  # the column of a Parquet/CSV listing that holds the paths


@dataclass
class DatasetSummary:
    tagged: int = 0  # rows added to OUT
    skipped: int = 0  # already in OUT (same key, content and model)
    failed: int = 0
    recaptioned: int = 0  # already in OUT, tagged again only to write its missing caption file
    replaced: int = 0  # rows of images whose content changed since, removed for their new rows
    duplicates: int = 0  # rows that came out twice (a retry) and were removed
    elapsed: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # the first MAX_FAILURES_SHOWN
    output: str = ""
    complete: bool = False

    @property
    def images_per_s(self) -> float:
        return (self.tagged + self.recaptioned) / self.elapsed if self.elapsed > 0 else 0.0


def parse_actors(text: str) -> tuple[int, int]:
    """``"4"`` -> (4, 4); ``"2:8"`` (or ``2-8``) -> (2, 8): an autoscaling pool. Raises ValueError."""
    parts = text.replace("-", ":").split(":")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--actors: {text!r} is not N or MIN:MAX (e.g. 4, or 2:8 to scale between 2 and 8)")
    low, high = int(parts[0]), int(parts[-1])
    if low < 1 or high < low:
        raise ValueError(f"--actors: {text!r} needs 1 <= MIN <= MAX")
    return low, high


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DatasetError(
            f"the dataset command runs on Ray Data, and {e.name or module} is not installed here: {_RAY_EXTRA}"
        ) from e


# -- SRC: what to tag ---------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One listed image file or WebDataset shard."""

    source: str  # an absolute local path or a URL
    kind: str  # "image" | "tar"
    root: Path | None = None  # the folder SRC named (captions under --output-dir mirror from it)
    caption: str | None = None  # the caption file to write (--captions)
    problem: str | None = None  # why it fails before it is read (a caption another image has...)


def _is_url(text: str) -> bool:
    return "://" in text


def _absolute(path: Path | str) -> str:
    """The path made absolute and normal (``..`` folded), links left as named: an image's key."""
    return os.path.normpath(Path(path).expanduser().absolute())


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


def _kind(name: str) -> str:
    low = name.lower()
    if low.endswith(SHARD_EXTENSIONS):
        return "tar"
    if low.endswith(LISTING_EXTENSIONS):
        return "listing"
    return "image"


def _url_fs(url: str) -> tuple[Any, str]:
    fsspec = _import("fsspec")
    if url.split("://", 1)[0].lower() == "memory":
        raise DatasetError(
            f"{url}: memory:// files live inside one process, and Ray's workers are other processes that cannot "
            "see them; give a folder, or a URL of storage every node can read (file://, s3://, gs://, ...)"
        )
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:  # an unknown protocol, or its package missing (s3fs, gcsfs...)
        raise DatasetError(f"{url}: cannot open this URL ({e})") from e


def list_sources(sources: Iterable[str], path_column: str | None = None) -> Iterator[Entry]:
    """The images and shards of every SRC, each once, in a stable order.

    A folder gives its images, sub-folders included (sorted, as ``tag DIR -r``); a glob the images and shards
    it matches; a ``.parquet``/``.csv``/``.txt`` file the paths it lists (relative ones from its folder); a
    ``.tar`` file is a WebDataset shard; any other file named directly is an image. URLs work the same way
    through fsspec. Raises DatasetError for a SRC that does not exist or matches nothing.
    """
    seen: set[str] = set()
    exts = image_extensions()
    for src in sources:
        found = 0
        for entry in _list_one(src, path_column, exts):
            if entry.source not in seen:
                seen.add(entry.source)
                found += 1
                yield entry
        if not found:
            log.warning("%s: no images or shards in it", src)


def _list_one(src: str, path_column: str | None, exts: frozenset[str]) -> Iterator[Entry]:
    if _is_url(src):
        fs, path = _url_fs(src)
        if _has_magic(path):
            matches = [m for m in sorted(fs.glob(path)) if fs.isfile(m)]
            if not matches:
                raise DatasetError(f"{src}: the pattern matches no file")
            for m in matches:
                if _kind(m) == "tar" or PurePosixPath(m).suffix.lower() in exts:
                    yield Entry(fs.unstrip_protocol(m), _kind(m))
        elif fs.isdir(path):
            for m in sorted(fs.find(path)):
                if PurePosixPath(m).suffix.lower() in exts:
                    yield Entry(fs.unstrip_protocol(m), "image")
        elif fs.exists(path):
            yield from _named_file(fs.unstrip_protocol(path), path_column)
        else:
            raise DatasetError(f"{src}: no such file or folder")
        return
    path = Path(src).expanduser()
    if _has_magic(src):
        pattern = str(Path(src).expanduser())
        matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]  # noqa: PTH207 - absolute patterns
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise DatasetError(f"{src}: the pattern matches no file")
        for m in matches:
            if _kind(m.name) == "tar" or m.suffix.lower() in exts:
                yield Entry(_absolute(m), _kind(m.name))
    elif path.is_dir():
        root = Path(_absolute(path))
        for image, _ in iter_images([root], recursive=True):
            yield Entry(str(image), "image", root)
    elif path.is_file():
        yield from _named_file(_absolute(path), path_column)
    else:
        raise DatasetError(f"{src}: no such file or folder")


def _named_file(source: str, path_column: str | None) -> Iterator[Entry]:
    kind = _kind(source)
    if kind != "listing":
        yield Entry(source, kind)
        return
    for i, value in enumerate(_read_listing(source, path_column)):
        if not value or not str(value).strip():
            yield Entry(f"{source}#{i + 1}", "image", problem=f"entry {i + 1} of the listing {source} is empty")
            continue
        value = str(value).strip()
        if _is_url(value):
            target = value
        elif _is_url(source):
            target = posixpath.join(posixpath.dirname(source), value)
        else:
            target = _absolute(Path(source).parent / Path(value).expanduser())
        yield Entry(target, "tar" if _kind(target) == "tar" else "image")


def _read_listing(source: str, path_column: str | None) -> list[Any]:
    """The paths a ``.txt`` (one a line), ``.csv`` (with a header) or ``.parquet`` listing holds."""
    try:
        with _open(source) as fh:
            if source.lower().endswith(".txt"):
                return [line.strip() for line in fh.read().decode("utf-8-sig").splitlines() if line.strip()]
            if source.lower().endswith(".csv"):
                table = _import("pyarrow.csv").read_csv(fh)
            else:
                table = _import("pyarrow.parquet").read_table(fh)
    except DatasetError:
        raise
    except Exception as e:  # pyarrow's errors for malformed files, OSError, UnicodeDecodeError
        raise DatasetError(f"listing {source} cannot be read: {type(e).__name__}: {e}") from e
    names = table.column_names
    if path_column is not None:
        if path_column not in names:
            raise DatasetError(f"listing {source} has no column {path_column!r} (its columns: {', '.join(names)})")
        column = path_column
    else:
        lower = {n.lower(): n for n in names}
        column = next((lower[c] for c in PATH_COLUMNS if c in lower), names[0] if len(names) == 1 else None)
        if column is None:
            raise DatasetError(
                f"listing {source}: which column holds the image paths? None is called "
                f"{', '.join(PATH_COLUMNS)}; name it with --path-column (its columns: {', '.join(names)})"
            )
    return table.column(column).to_pylist()


def _open(source: str) -> Any:
    """A binary file object for a local path or a URL."""
    if _is_url(source):
        fsspec = _import("fsspec")
        return fsspec.open(source, "rb").open()
    return open(source, "rb")


def _read_bytes(source: str) -> bytes:
    """The whole file; ImageError (the reason as ``tag`` words it) when it cannot be read."""
    try:
        with _open(source) as fh:
            return fh.read()
    except FileNotFoundError:
        raise ImageError(source, "file not found") from None
    except IsADirectoryError:
        raise ImageError(source, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(source, "permission denied: the file cannot be read") from None
    except OSError as e:
        raise ImageError(source, f"cannot read the file ({e.strerror or e})") from e


def assign_captions(entries: list[Entry], config: BatchConfig) -> None:
    """Where each local image's caption goes, with ``tag DIR``'s rules: a name that would leave the output
    folder or that another image already has fails that image (``batch.claim_caption``)."""
    check_filename_format(config.filename_format)
    claimed: dict[str, Path] = {}
    for entry in entries:
        if entry.problem is not None:
            continue
        if entry.kind != "image" or _is_url(entry.source):
            what = "a WebDataset shard" if entry.kind == "tar" else "a URL"
            raise DatasetError(
                f"--captions writes caption files beside local image files, and {entry.source} is {what}; "
                "leave out --captions (OUT's caption column holds the same text), or give local folders"
                + (" as paths instead of file:// URLs" if entry.source.startswith("file://") else "")
            )
        image = Path(entry.source)
        try:
            cap = caption_path(image, entry.root or image.parent, config)
        except BatchConfigError as e:
            entry.problem = str(e)
            continue
        except OSError as e:  # a [hash:] name of an unreadable file
            entry.problem = f"cannot be read ({e.strerror or e})"
            continue
        problem = claim_caption(claimed, image, cap, config)
        if problem:
            entry.problem = problem
        elif problem is None:
            entry.caption = str(cap)


# -- OUT: the Parquet dataset -------------------------------------------------------------------------------


def output_schema(embeddings: bool = False) -> Any:
    """The schema of OUT's ``part-*.parquet`` files (one row per image)."""
    pa = _import("pyarrow")
    probs = pa.map_(pa.string(), pa.float32())
    fields = [
        pa.field("key", pa.string(), nullable=False),  # the path or URL; a WebDataset sample's key
        pa.field("source", pa.string(), nullable=False),  # the file it was read from (the shard for WebDataset)
        pa.field("content_hash", pa.string(), nullable=False),  # BLAKE2b-128 of the bytes (the cache's key)
        pa.field("model", pa.string(), nullable=False),  # repo@revision, or local:<folder>
        pa.field("rating", probs),  # every rating
        pa.field("general", probs),  # general tags at or above the floor, highest first
        pa.field("character", probs),  # character tags at or above the floor, highest first
        pa.field("mcut_general", pa.float32()),  # MCut points of the full vectors: --mcut stays exact later
        pa.field("mcut_character", pa.float32()),
        pa.field("caption", pa.string()),  # the caption as `tag` writes it under this run's options
    ]
    if embeddings:
        fields.append(pa.field("embedding", pa.list_(pa.float32())))
    return pa.schema(fields)


def errors_schema() -> Any:
    pa = _import("pyarrow")
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
        return not _is_url(self.url)

    @property
    def fs(self) -> Any:
        return self._fs_root()[0]

    @property
    def root(self) -> str:
        return self._fs_root()[1]

    def _fs_root(self) -> tuple[Any, str]:
        if self.local:
            fsspec = _import("fsspec")
            return fsspec.filesystem("file"), _absolute(Path(self.url))
        fs, root = _url_fs(self.url)
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
        pq = _import("pyarrow.parquet")
        return pq.read_table(path, columns=list(columns) if columns else None, filesystem=self.fs)

    def schema(self, path: str) -> Any:
        pq = _import("pyarrow.parquet")
        return pq.read_schema(path, filesystem=self.fs)


def _parquet_bytes(table: Any) -> bytes:
    pa = _import("pyarrow")
    pq = _import("pyarrow.parquet")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.blake2b(digest_size=12)
    for line in sorted(lines):
        h.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def _part_name(table: Any) -> str:
    """Named after its rows: the same rows written again (a retried task) replace the same file."""
    rows = zip(*(table.column(c).to_pylist() for c in ("key", "content_hash", "model")), strict=True)
    return f"{PART_PREFIX}{_digest(chr(0).join(r) for r in rows)}.parquet"


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
    pa = _import("pyarrow")
    pc = _import("pyarrow.compute")
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
    pa = _import("pyarrow")
    table = store.read(path)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[list(rows)] = False
    kept = table.filter(pa.array(keep))
    if kept.num_rows:
        name = _part_name(kept)
        if posixpath.join(posixpath.dirname(path), name) != path:
            store.write(name, _parquet_bytes(kept))
    if kept.num_rows == 0 or posixpath.basename(path) != _part_name(kept):
        store.remove(path)


def prune_errors(store: OutputStore, run: str, sources: set[str]) -> None:
    """Drop earlier runs' error rows of ``sources``: this complete run tried each of them again."""
    pa = _import("pyarrow")
    pc = _import("pyarrow.compute")
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
            store.write(_errors_name(kept), _parquet_bytes(kept), errors=True)
        store.remove(path)


def _errors_name(table: Any) -> str:
    rows = zip(*(table.column(c).to_pylist() for c in ("key", "error", "run")), strict=True)
    return f"{_digest(chr(0).join(r) for r in rows)}.parquet"


# -- the model on every node --------------------------------------------------------------------------------


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
    import ray

    node = ray.get_runtime_context().get_node_id()
    if single_node:
        return ModelShip(files, node)
    model, tags = files.model_path.read_bytes(), files.tags_path.read_bytes()
    digest = hashlib.blake2b(model + b"\0" + tags, digest_size=16).hexdigest()
    return ModelShip(files, node, digest, (ray.put(model), ray.put(tags)))


def embedding_problem(model: Any) -> str | None:
    """Why ``--embeddings`` cannot be had from ``model`` (None: it can).

    The hook for model families with an embedding output (issue 10): their ``LoadedModel`` offers
    ``run_with_embedding(batch) -> (probs [N, T], embedding [N, D])``, which ``run_model`` calls. The WD14
    taggers give probabilities only.
    """
    if callable(getattr(model, "run_with_embedding", None)):
        return None
    return f"--embeddings: model {model.name} gives no embedding, only tag probabilities; leave out --embeddings"


def run_model(model: Any, batch: np.ndarray, embeddings: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if embeddings:
        probs, embedding = model.run_with_embedding(batch)
        return np.asarray(probs, dtype=np.float32), np.asarray(embedding, dtype=np.float32)
    return np.asarray(model.run(batch), dtype=np.float32), None


# -- the stages ---------------------------------------------------------------------------------------------


class _Rows:
    """Decoded rows on their way to the model: one Arrow table per block."""

    COLUMNS = ("key", "source", "content_hash", "status", "error", "caption", "replaces", "pixels")

    def __init__(self) -> None:
        self.data: dict[str, list[Any]] = {c: [] for c in self.COLUMNS}

    def __len__(self) -> int:
        return len(self.data["key"])

    def add(self, key: str, source: str, status: str, *, digest: str | None = None, error: str | None = None,
            caption: str | None = None, replaces: str | None = None, pixels: bytes | None = None) -> None:  # fmt: skip
        for column, value in zip(self.COLUMNS, (key, source, digest, status, error, caption, replaces, pixels),
                                 strict=True):  # fmt: skip
            self.data[column].append(value)

    def table(self) -> Any:
        pa = _import("pyarrow")
        types = {"pixels": pa.binary()}
        return pa.table({c: pa.array(v, types.get(c, pa.string())) for c, v in self.data.items()})


def _prepare(rows: _Rows, key: str, source: str, data: bytes, size: int, done: str | None, recaption: bool,
             caption: str | None) -> None:  # fmt: skip
    digest = content_hash(data)
    if digest == done and not recaption:
        rows.add(key, source, "skipped", digest=digest)
        return
    try:
        tensor = prepare_source(data, size)
    except ImageError as e:
        rows.add(key, source, "failed", digest=digest, error=e.reason)
        return
    # The engine's tensor holds whole numbers 0..255 (8-bit images): as uint8 it crosses the object store at a
    # quarter of the size and comes back to the same float32 values.
    pixels = tensor.astype(np.uint8).tobytes()
    status = "recaption" if digest == done else "todo"
    rows.add(key, source, status, digest=digest, caption=caption, replaces=done if status == "todo" else None,
             pixels=pixels)  # fmt: skip


def decode_block(block: Any, size: int) -> Iterator[Any]:
    """Ray task: listed files and shards -> rows of preprocessed pixels, skips and failures."""
    rows = _Rows()
    for item in block.to_pylist():
        source = item["source"]
        done = dict(zip(item["done_keys"] or [], item["done_hashes"] or [], strict=True))
        if item["problem"]:
            rows.add(source, source, "failed", error=item["problem"])
        elif item["kind"] == "tar":
            for key, data, error in _shard_members(source):
                if error is not None:
                    rows.add(key, source, "failed", error=error)
                else:
                    _prepare(rows, key, source, data, size, done.get(key), False, None)
                if len(rows) >= ROWS_PER_DECODE_BLOCK:
                    yield rows.table()
                    rows = _Rows()
        else:
            try:
                data = _read_bytes(source)
            except ImageError as e:
                rows.add(source, source, "failed", error=e.reason)
            else:
                _prepare(rows, source, source, data, size, done.get(source), bool(item["recaption"]), item["caption"])
        if len(rows) >= ROWS_PER_DECODE_BLOCK:
            yield rows.table()
            rows = _Rows()
    if len(rows):
        yield rows.table()


def _shard_members(source: str) -> Iterator[tuple[str, bytes | None, str | None]]:
    """``(key, bytes, None)`` for each image of a WebDataset shard, in order; ``(key, None, reason)`` for one
    that cannot be read, and ``(shard, None, reason)`` when the shard itself breaks off (what came before it
    stays tagged). The key is the member's name without its extension (``__key__`` for ``000123.jpg``)."""
    exts = image_extensions()
    count = 0
    try:
        with _open(source) as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if not member.isfile() or PurePosixPath(name).suffix.lower() not in exts:
                    continue
                key = str(PurePosixPath(name).with_suffix(""))
                stream = tar.extractfile(member)
                if stream is None:
                    yield key, None, "cannot be read from the shard"
                    continue
                data = stream.read()
                count += 1
                yield key, data, None
    except FileNotFoundError:
        yield source, None, "file not found"
    except PermissionError:
        yield source, None, "permission denied: the file cannot be read"
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        where = f"after its first {count} image{'s' if count != 1 else ''}" if count else "before its first image"
        yield source, None, f"the WebDataset shard is damaged {where}: {type(e).__name__}: {e}"


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
        pa = _import("pyarrow")
        status = block.column("status").to_pylist()
        pixels = block.column("pixels").to_pylist()
        todo = [i for i, s in enumerate(status) if s in ("todo", "recaption")]
        probs: list[bytes | None] = [None] * len(status)
        embedding: list[list[float] | None] = [None] * len(status)
        side = self.model.size
        for start in range(0, len(todo), self.batch):
            chosen = todo[start : start + self.batch]
            batch = np.stack([np.frombuffer(pixels[i], dtype=np.uint8) for i in chosen])
            batch = batch.reshape(len(chosen), side, side, 3).astype(np.float32)
            out, emb = run_model(self.model, batch, self.embeddings)
            for j, i in enumerate(chosen):
                probs[i] = out[j].tobytes()
                if emb is not None:
                    embedding[i] = emb[j].tolist()
        block = block.drop_columns(["pixels"]).append_column("probs", pa.array(probs, pa.binary()))
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


class ProbColumns:
    """OUT's probability columns, row by row: every rating, the tags at or above ``floor`` (highest first) and
    the MCut points of the full vectors, so that any threshold >= floor and MCut can be applied later without
    the model (what the probability cache keeps, as columns). Built as flat arrays: a real model has ~10,000
    tags and a row may keep hundreds."""

    GROUPS = ("rating", "general", "character")

    def __init__(self, labels: Labels, floor: float) -> None:
        self.labels, self.floor = labels, floor
        self.offsets: dict[str, list[int]] = {g: [0] for g in self.GROUPS}
        self.index: dict[str, list[np.ndarray]] = {g: [] for g in self.GROUPS}
        self.values: dict[str, list[np.ndarray]] = {g: [] for g in self.GROUPS}
        self.mcut: dict[str, list[float]] = {"mcut_general": [], "mcut_character": []}

    def add(self, probs: np.ndarray) -> None:
        for group in self.GROUPS:
            idx = getattr(self.labels, group)
            if group != "rating":
                idx = idx[probs[idx] >= self.floor]
            idx = idx[np.argsort(-probs[idx], kind="stable")]
            self.offsets[group].append(self.offsets[group][-1] + len(idx))
            self.index[group].append(idx)
            self.values[group].append(probs[idx])
        self.mcut["mcut_general"].append(mcut_threshold(probs[self.labels.general]))
        self.mcut["mcut_character"].append(mcut_threshold(probs[self.labels.character]))

    def columns(self, schema: Any) -> dict[str, Any]:
        pa = _import("pyarrow")
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
        return out


def write_block(block: Any, spec: WriteSpec) -> Any:
    """Ray task: postprocess a block, write its Parquet file, its errors and its caption files; returns what
    it did as one row of counts for the driver."""
    pa = _import("pyarrow")
    store = OutputStore(spec.output)
    schema = output_schema(spec.embeddings)
    tagged: dict[str, list[Any]] = {n: [] for n in ("key", "source", "content_hash", "model", "caption", "embedding")}
    probs_columns = ProbColumns(spec.labels, spec.floor)
    errors: dict[str, list[Any]] = {name: [] for name in errors_schema().names}
    counts = {"skipped": 0, "recaptioned": 0}
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
            job = Job(Path(row["key"]), Path(row["caption"]))
            try:
                if spec.captions.existing != "skip" or not job.caption.exists():
                    write_caption(job, result, spec.captions, probs, spec.labels, spec.model_id)
            except OSError as e:
                fail(row, f"caption {job.caption} could not be written ({e.strerror or e})")
                continue
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
        store.write(_part_name(table), _parquet_bytes(table))
    if errors["key"]:
        table = pa.Table.from_pydict(errors, schema=errors_schema().with_metadata(meta))
        store.write(_errors_name(table), _parquet_bytes(table), errors=True)
    failures = [f"{k}\0{e}" for k, e in zip(errors["key"], errors["error"], strict=True)]
    return pa.table(
        {
            "tagged": [len(tagged["key"])],
            "skipped": [counts["skipped"]],
            "failed": [len(errors["key"])],
            "recaptioned": [counts["recaptioned"]],
            "failures": pa.array([failures], pa.list_(pa.string())),
            "replaced": pa.array([replaced], pa.list_(pa.string())),
        }
    )


# -- the run ------------------------------------------------------------------------------------------------


def _check_reachable(address: str) -> None:
    """Fail at once, with what to do, when nothing answers at a cluster address (Ray itself would retry for
    many minutes)."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise DatasetError(
            f"--address {address!r} is not HOST:PORT (the head node's GCS address, port 6379 by default) or "
            "ray://HOST:PORT (Ray Client, port 10001)"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except OSError as e:
        raise DatasetError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}). Check the address (the head node's "
            "GCS address, HOST:6379 by default, or ray://HOST:10001 for Ray Client), that the cluster is up "
            "(`ray status` on the head node) and that no firewall is in between. Without --address and "
            "$RAY_ADDRESS the command starts Ray on this machine."
        ) from e


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (else ``$RAY_ADDRESS``; ``auto``: the one ``ray start`` began on this
    machine), or start Ray on this machine; True when this call started Ray (and so should stop it)."""
    ray = _import("ray")
    _import("ray.data")
    if ray.is_initialized():
        return False
    # "local", not None: without an address ray.init() would join the cluster named in /tmp/ray's address file,
    # which a crashed test or an old `ray start` can leave pointing at nothing (and then it retries for minutes).
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address not in ("auto", "local"):
        _check_reachable(address)
    # On this machine Ray gets twice its cores as CPUs: an inference actor holds its threads' CPUs even while it
    # waits, and decode tasks then share the cores with it, as `tag`'s decode threads share them with the model's.
    local = {"num_cpus": 2 * available_cpus()} if address == "local" else {}
    try:
        ray.init(address=address, log_to_driver=True, **local)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError for a bad cluster
        where = "a Ray instance on this machine" if address == "local" else f"the Ray cluster at {address}"
        raise DatasetError(f"cannot start or join {where}: {type(e).__name__}: {e}") from e
    return address == "local"


def _listing_tables(entries: list[Entry], holdings: Holdings) -> list[Any]:
    """The listing as Arrow tables, one per decode task: files in groups, each shard alone."""
    pa = _import("pyarrow")
    tables, group = [], []

    def flush() -> None:
        if group:
            data = {k: [r[k] for r in group] for k in group[0]}
            types = {"recaption": pa.bool_(), "done_keys": pa.list_(pa.string()),
                     "done_hashes": pa.list_(pa.string())}  # fmt: skip
            tables.append(pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in data.items()}))
            group.clear()

    for entry in entries:
        done = holdings.done.get(entry.source, {})
        recaption = bool(entry.caption and done.get(entry.source) and not Path(entry.caption).exists())
        group.append({
            "source": entry.source, "kind": entry.kind, "caption": entry.caption, "problem": entry.problem,
            "recaption": recaption, "done_keys": list(done), "done_hashes": list(done.values()),
        })  # fmt: skip
        if entry.kind == "tar" or len(group) >= FILES_PER_TASK:
            flush()
    flush()
    return tables


def _plan(cfg: DatasetConfig, ray: Any, started: bool) -> tuple[tuple[int, int], int, float]:
    """(min, max) actors, threads per actor and GPUs per actor for this cluster.

    With GPUs: one actor per GPU (``--gpus-per-actor``), one thread each. Without: one actor per node, with half
    the node's (logical) CPUs as threads; the rest decode.
    """
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    node_cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    node_cpus = [c for c in node_cpus if c > 0] or [cpus]
    device = cfg.device.strip().lower()
    if device.startswith("cuda:"):
        raise DatasetError("--device cuda:N: on Ray each actor gets GPUs of its own (--gpus-per-actor); use cuda")
    if device not in ("auto", "cpu", "cuda"):
        raise DatasetError(f"--device {cfg.device!r}: use auto, cpu or cuda")
    gpa = cfg.gpus_per_actor
    if gpa is None:
        gpa = 1.0 if device != "cpu" and gpus >= 1 else 0.0
    if device == "cpu":
        gpa = 0.0
    if gpa < 0:
        raise DatasetError("--gpus-per-actor must be 0 or more")
    if (device == "cuda" or gpa > 0) and gpus == 0:
        raise DatasetError("the Ray cluster has no GPUs (ray.cluster_resources()); use --device cpu, or add GPU nodes")
    actors = cfg.actors or ((max(1, int(gpus // gpa)),) * 2 if gpa > 0 else (len(node_cpus),) * 2)
    threads = cfg.threads or (1 if gpa > 0 else max(1, min(node_cpus) // 2))
    if threads > max(node_cpus):
        raise DatasetError(f"--threads {threads}: no node of the cluster has that many CPUs (at most {max(node_cpus)})")
    if actors[1] * threads >= cpus:
        message = (
            f"{actors[1]} actors x {threads} threads take all {cpus} CPUs of the cluster, and none is left to "
            "decode images: use fewer --actors or --threads"
        )
        if started:  # a cluster of this machine cannot grow
            raise DatasetError(message)
        log.warning("%s (unless the cluster grows)", message)
    return actors, threads, gpa


def run_dataset(cfg: DatasetConfig, say: Callable[[str], None] = lambda text: None) -> DatasetSummary:
    """Tag every image of ``cfg.sources`` into the Parquet dataset ``cfg.output``. See the module docstring."""
    if cfg.captions is not None and cfg.captions.existing not in EXISTING_POLICIES:
        raise DatasetError(f"--existing {cfg.captions.existing!r} is not one of {', '.join(EXISTING_POLICIES)}")
    if cfg.rows_per_file < 1:
        raise DatasetError("--rows-per-file must be at least 1")
    for module in ("pyarrow", "fsspec", "ray"):
        _import(module)
    store = OutputStore(cfg.output)
    store.check()
    entries = list(list_sources(cfg.sources, cfg.path_column))
    if cfg.captions is not None:
        assign_captions(entries, cfg.captions)
    shards = sum(e.kind == "tar" for e in entries)

    from tagger.engine import Tagger

    # The model is resolved (and downloaded, once) here on the driver, and loaded on its CPU to learn its input
    # size and check it before any cluster work: a model that cannot be had fails now.
    tagger = Tagger(cfg.models_dir, "cpu", download=cfg.download, progress=sys.stderr.isatty(), threads=1)
    probe = tagger.load(cfg.model)
    files, labels, size = probe.files, probe.labels, probe.size
    if cfg.embeddings and (problem := embedding_problem(probe)):
        raise DatasetError(problem)
    tagger.unload_all()
    del probe
    model_id = files.model_id

    store.remove_leftovers()
    holdings = scan_output(store, model_id, {e.source for e in entries})
    held = sum(len(v) for v in holdings.done.values())
    say(
        f"{len(entries) - shards} image files and {shards} WebDataset shards in SRC; {cfg.output} holds "
        f"{held} of their images tagged by {model_id}"
        + (f" ({holdings.duplicates} duplicate rows removed)" if holdings.duplicates else "")
    )

    started = connect(cfg.address)
    ray = _import("ray")
    summary = DatasetSummary(output=cfg.output, duplicates=holdings.duplicates)
    start = time.perf_counter()
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        actors, threads, gpa = _plan(cfg, ray, started)
        say(
            f"Ray: {len(nodes)} node(s); {actors[0] if actors[0] == actors[1] else f'{actors[0]}-{actors[1]}'} "
            f"inference actor(s) x {threads} thread(s)" + (f", {gpa:g} GPU each" if gpa else ", on CPUs")
        )
        ship = ship_model(files, single_node=started and len(nodes) == 1)
        run = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
        spec = WriteSpec(cfg.output, model_id, labels, cfg.options, run, cfg.captions, cfg.embeddings)
        replaced: set[tuple[str, str]] = set()
        tables = _listing_tables(entries, holdings)
        # A local OUT is the driver's folder: every write runs on the driver's node (the others may not see it).
        write_node = ship.driver_node if store.local and (len(nodes) > 1 or not started) else None
        plan = Plan(actors, threads, gpa, cfg.batch_size or (16 if gpa else 1), write_node)
        if tables:
            with _streaming_settings():
                ds = _pipeline(ray, tables, size, ship, plan, cfg, spec)
                for counts in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    for row in counts.to_pylist():
                        summary.tagged += row["tagged"]
                        summary.skipped += row["skipped"]
                        summary.failed += row["failed"]
                        summary.recaptioned += row["recaptioned"]
                        room = MAX_FAILURES_SHOWN - len(summary.failures)
                        summary.failures += [_pair(f) for f in row["failures"][: max(0, room)]]
                        replaced.update(_pair(r) for r in row["replaced"])
        # The run is complete: remove what a write task killed mid-file left, any row a retry wrote twice, the
        # rows of images whose content changed, and the earlier runs' errors of images this run tried again.
        store.remove_leftovers()
        final = scan_output(store, model_id, drop=replaced)
        summary.duplicates += final.duplicates
        summary.tagged -= final.duplicates  # written twice by this run (a retried block), counted once
        summary.replaced = len(replaced)
        prune_errors(store, run, {e.source for e in entries})
        summary.complete = True
    finally:
        summary.elapsed = time.perf_counter() - start
        if started:
            ray.shutdown()
    return summary


def _pair(text: str) -> tuple[str, str]:
    first, second = text.split("\0", 1)
    return first, second


@dataclass(frozen=True)
class Plan:
    """How the run uses the cluster (``_plan``)."""

    actors: tuple[int, int]  # (min, max)
    threads: int  # per actor
    gpus: float  # per actor
    batch: int  # images per model run the driver expects (the actor's own default decides in the end)
    write_node: str | None = None  # the node every write task runs on (a local OUT is the driver's), else any


@contextlib.contextmanager
def _streaming_settings() -> Iterator[None]:
    """Ray Data's settings for this run, restored after it. Ray Data reserves a share of the cluster for each
    operator by default; with decode, inference and write the decode tasks got a third of the CPUs and ran one
    at a time on a 4-CPU node (measured: 22 images/s there, 28 without reservations, and decoding is what
    bounds throughput: see README). Without reservations its backpressure policies still cap each operator's
    tasks by how fast its output queue grows, so decoded images do not pile up ahead of a slow model."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        ctx.op_resource_reservation_enabled = saved


def _pipeline(ray: Any, tables: list[Any], size: int, ship: ModelShip, plan: Plan, cfg: DatasetConfig,
              spec: WriteSpec) -> Any:  # fmt: skip
    from ray.data import ActorPoolStrategy

    low, high = plan.actors
    pool = ActorPoolStrategy(size=low) if low == high else ActorPoolStrategy(min_size=low, max_size=high)
    gpu_args = {"num_gpus": plan.gpus} if plan.gpus else {}
    ds = ray.data.from_arrow(tables)
    # Decoding runs as tasks of their own: the memory reservation keeps Ray Data from fusing them into the
    # inference actors (fusion needs equal resources), where they would queue behind the model.
    ds = ds.map_batches(decode_block, batch_size=None, batch_format="pyarrow", fn_kwargs={"size": size},
                        num_cpus=1, memory=DECODE_MEMORY)  # fmt: skip
    ds = ds.map_batches(
        Infer,
        batch_size=max(8, 4 * plan.batch),  # rows per call: small enough that every actor gets work
        batch_format="pyarrow",
        compute=pool,
        fn_constructor_kwargs={
            "ship": ship,
            "device": "cuda" if plan.gpus else "cpu",
            "threads": plan.threads,
            "batch_size": cfg.batch_size,
            "embeddings": cfg.embeddings,
        },
        num_cpus=plan.threads,
        **gpu_args,
    )
    where = {"label_selector": {"ray.io/node-id": plan.write_node}} if plan.write_node else {}
    return ds.map_batches(write_block, batch_size=cfg.rows_per_file, batch_format="pyarrow", fn_kwargs={"spec": spec},
                          num_cpus=1, **where)  # fmt: skip
