"""SRC: what to tag (folders, globs, URLs, listings, WebDataset shards), and reading it, on any node."""

from __future__ import annotations

import glob
import logging
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tagger.batch import BatchConfig, iter_images, plan_image
from tagger.dataset.common import DatasetError, absolute, is_url, open_source, require, url_fs
from tagger.images import image_extensions, read_error

log = logging.getLogger(__name__)

LISTING_EXTENSIONS = (".parquet", ".csv", ".txt")  # SRC files that list image paths (or shard paths)
SHARD_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
PATH_COLUMNS = ("path", "image", "file", "filename", "url", "image_path", "source")


@dataclass
class Entry:
    """One listed image file or WebDataset shard."""

    source: str  # an absolute local path or a URL
    kind: str  # "image" | "tar"
    root: Path | None = None  # the folder SRC named (captions under --output-dir mirror from it)
    caption: str | None = None  # the caption file to write (--captions)
    backup: str | None = None  # where the caption there now is kept first, when the run changes it
    problem: str | None = None  # why it fails before it is read (a caption another image has...)


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


def _kind(name: str) -> str:
    low = name.lower()
    if low.endswith(SHARD_EXTENSIONS):
        return "tar"
    if low.endswith(LISTING_EXTENSIONS):
        return "listing"
    return "image"


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
    if is_url(src):
        fs, path = url_fs(src)
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
                yield Entry(absolute(m), _kind(m.name))
    elif path.is_dir():
        root = Path(absolute(path))
        for image, _ in iter_images([root], recursive=True):
            yield Entry(str(image), "image", root)
    elif path.is_file():
        yield from _named_file(absolute(path), path_column)
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
        if is_url(value):
            target = value
        elif is_url(source):
            target = posixpath.join(posixpath.dirname(source), value)
        else:
            target = absolute(Path(source).parent / Path(value).expanduser())
        yield Entry(target, "tar" if _kind(target) == "tar" else "image")


def _read_listing(source: str, path_column: str | None) -> list[Any]:
    """The paths a ``.txt`` (one a line), ``.csv`` (with a header) or ``.parquet`` listing holds."""
    try:
        with open_source(source) as fh:
            if source.lower().endswith(".txt"):
                return [line.strip() for line in fh.read().decode("utf-8-sig").splitlines() if line.strip()]
            if source.lower().endswith(".csv"):
                table = require("pyarrow.csv").read_csv(fh)
            else:
                table = require("pyarrow.parquet").read_table(fh)
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


def read_bytes(source: str) -> bytes:
    """The whole file; ImageError (the reason as ``tag`` words it) when it cannot be read."""
    try:
        with open_source(source) as fh:
            return fh.read()
    except OSError as e:
        raise read_error(source, e) from e


def shard_members(source: str) -> Iterator[tuple[str, bytes | None, str | None]]:
    """``(key, bytes, None)`` for each image of a WebDataset shard, in order; ``(key, None, reason)`` for one
    that cannot be read, and ``(shard, None, reason)`` when the shard itself breaks off (what came before it
    stays tagged). The key is the member's name without its extension (``__key__`` for ``000123.jpg``)."""
    exts = image_extensions()
    count = 0
    try:
        with open_source(source) as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
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


def assign_captions(entries: list[Entry], config: BatchConfig) -> None:
    """Where each local image's caption goes, planned by ``tag DIR``'s own step (``batch.plan_image``): a name
    that would leave the output folder, or that another image already has, fails that image; an image whose
    caption exists under ``--existing skip`` (or a second link to the same file) gets none, and is tagged into
    OUT all the same."""
    claimed: dict[str, Path] = {}
    backups: dict[str, Path] = {}
    for entry in entries:
        if entry.problem is not None:
            continue
        if entry.kind != "image" or is_url(entry.source):
            what = "a WebDataset shard" if entry.kind == "tar" else "a URL"
            raise DatasetError(
                f"--captions writes caption files beside local image files, and {entry.source} is {what}; "
                "leave out --captions (OUT's caption column holds the same text), or give local folders"
                + (" as paths instead of file:// URLs" if entry.source.startswith("file://") else "")
            )
        image = Path(entry.source)
        planned = plan_image(image, entry.root or image.parent, config, claimed, backups)
        if planned.action == "failed":
            entry.problem = planned.reason
        elif planned.action not in ("skip", "duplicate") and planned.caption is not None:
            entry.caption = str(planned.caption)
            entry.backup = str(planned.backup) if planned.backup is not None else None
