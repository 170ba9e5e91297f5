"""Batch captioning: one caption file per image, written the way training tools read them.

Nothing is ever lost: each caption is written atomically as soon as its image is done, existing captions
are only touched when the user chose so, one broken image never stops the batch, and running the same
command again resumes (with ``existing="skip"`` only what is missing is tagged, and skipped images are not
even decoded).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagger.errors import ImageError, TaggerError
from tagger.files import hash_file, new_hash, write_atomic
from tagger.images import image_extensions
from tagger.options import TagOptions
from tagger.postprocess import TagResult, normalize_tag, postprocess

log = logging.getLogger(__name__)

EXISTING_POLICIES = ("skip", "overwrite", "append", "prepend")
SIDECAR_FLOOR = 0.01  # probabilities below this are left out of JSON sidecars (re-thresholding stays exact above)
EMBEDDING_SUFFIX = ".npy"  # image.txt -> image.npy: a float32 vector, numpy.load reads it
_TOKEN = re.compile(r"\[([a-z]+)(?::([A-Za-z0-9_-]+))?\]")


class BatchConfigError(TaggerError):
    """The batch's settings cannot work (missing folder, a caption name that escapes the output folder...)."""


@dataclass
class BatchConfig:
    inputs: list[Path]
    recursive: bool = False
    output_dir: Path | None = None
    filename_format: str = "[name].txt"
    existing: str = "skip"  # skip | overwrite | append | prepend
    json_sidecar: bool = False
    batch_size: int | None = None
    embeddings: bool = False  # also write the model's image embedding beside each caption (EMBEDDING_SUFFIX)
    roots: tuple[Path, ...] | None = None  # resolved folders that images and captions must stay in (None: anywhere)


@dataclass
class BatchProgress:
    done: int
    total: int
    tagged: int
    skipped: int
    failed: int
    elapsed: float
    rate: float  # images tagged per second
    eta: float | None  # seconds left, None until a rate is known
    current: str


@dataclass
class BatchSummary:
    tagged: int = 0
    skipped: int = 0
    failed: int = 0
    elapsed: float = 0.0
    images_per_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    tag_counts: collections.Counter[str] = field(default_factory=collections.Counter)
    cancelled: bool = False

    @property
    def total(self) -> int:
        return self.tagged + self.skipped + self.failed


@dataclass(frozen=True)
class Job:
    """One image and where its caption goes; path-like, so the engine reads it as the image."""

    image: Path
    caption: Path

    def __fspath__(self) -> str:
        return os.fspath(self.image)

    def __str__(self) -> str:
        return str(self.image)


# -- discovery --------------------------------------------------------------------------------------


def is_image_file(path: Path, exts: frozenset[str]) -> bool:
    return path.suffix.lower() in exts and path.is_file()


def iter_images(inputs: Iterable[Path], recursive: bool = False) -> Iterator[tuple[Path, Path]]:
    """Yield ``(image, root)`` for every image under ``inputs``, streaming, in a stable sorted order.

    A folder contributes the image files in it (sub-folders with ``recursive``); other files are ignored
    silently, and a folder named like an image is not an image. A file named directly is always taken.
    ``root`` is the folder that output paths mirror from.
    """
    exts = image_extensions()
    for inp in inputs:
        inp = Path(inp)
        if inp.is_dir():
            yield from _walk(inp, inp, recursive, exts)
        else:
            yield inp, inp.parent


def _walk(folder: Path, root: Path, recursive: bool, exts: frozenset[str]) -> Iterator[tuple[Path, Path]]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        log.warning("cannot list %s: %s", folder, e)
        return
    subdirs = []
    for entry in entries:
        path = Path(entry.path)
        try:
            if entry.is_dir():
                subdirs.append(path)
            elif entry.is_file() and path.suffix.lower() in exts:
                yield path, root
        except OSError:
            continue
    if recursive:
        for sub in subdirs:
            yield from _walk(sub, root, recursive, exts)


# -- caption names ----------------------------------------------------------------------------------


def check_filename_format(fmt: str) -> None:
    """Refuse a caption name format that is empty, absolute, climbs out with ``..`` or has unknown tokens."""
    if not fmt or not fmt.strip():
        raise BatchConfigError("filename format: empty; use e.g. [name].txt")
    for m in _TOKEN.finditer(fmt):
        token, arg = m.groups()
        if token == "hash":
            try:
                new_hash(arg or "")
            except ValueError:
                raise BatchConfigError(
                    f"filename format: [hash:{arg or ''}] needs a hash algorithm such as md5, sha1, sha256, "
                    f"shake_128 (available here: {', '.join(sorted(hashlib.algorithms_available))})"
                ) from None
        elif token not in ("name", "extension") or arg:
            raise BatchConfigError(
                f"filename format: unknown token {m.group(0)}; known: [name] [extension] [hash:ALGO]"
            )
    literal = _TOKEN.sub("x", fmt)
    parts = re.split(r"[\\/]", literal)
    if literal.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", literal) or ".." in parts:
        raise BatchConfigError(f"filename format {fmt!r} would write outside the output folder; use a plain name")
    if not parts[-1] or parts[-1] in (".", ".."):
        raise BatchConfigError(f"filename format {fmt!r} does not end in a file name")


def caption_path(image: Path, root: Path, config: BatchConfig) -> Path:
    """Where ``image``'s caption goes; raises BatchConfigError if that would leave the output folder."""
    out_root = Path(config.output_dir) if config.output_dir else None
    base = (out_root / image.parent.relative_to(root)) if out_root else image.parent
    values = {"name": image.stem, "extension": image.suffix[1:]}

    def sub(m: re.Match[str]) -> str:
        token, arg = m.groups()
        value = hash_file(image, arg) if token == "hash" else values[token]
        if "/" in value or "\\" in value or value in (".", ".."):
            raise BatchConfigError(f"{image}: its name would put the caption outside the output folder")
        return value

    name = _TOKEN.sub(sub, config.filename_format)
    target = base / name
    limit = (out_root or image.parent).resolve()
    resolved = target.resolve()
    if resolved != limit and limit not in resolved.parents:
        raise BatchConfigError(f"{image}: caption {target} would be written outside {limit}; refused")
    return target


def within(path: Path, roots: tuple[Path, ...]) -> bool:
    """True when ``path``, with links and ``..`` resolved, is one of ``roots`` (resolved) or inside one."""
    resolved = Path(path).resolve()
    return any(resolved == root or root in resolved.parents for root in roots)


def check_roots(config: BatchConfig) -> None:
    """Refuse inputs or an output folder outside ``config.roots``, naming the folders that are allowed."""
    if config.roots is None:
        return
    allowed = ", ".join(str(r) for r in config.roots) or "none"
    for path in [*config.inputs, *([config.output_dir] if config.output_dir else [])]:
        if not within(Path(path), config.roots):
            raise BatchConfigError(f"{path} is outside the folders batches may use here (allowed: {allowed})")


# -- writing ----------------------------------------------------------------------------------------


def split_caption(text: str) -> list[str]:
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


def merge_tags(existing: list[str], new: list[str], mode: str) -> list[str]:
    """``append``/``prepend`` ``new`` to ``existing``: existing order kept, duplicates dropped (excludes' rules)."""
    seen = {normalize_tag(t) for t in existing}
    fresh = []
    for tag in new:
        key = normalize_tag(tag)
        if key not in seen:
            seen.add(key)
            fresh.append(tag)
    return existing + fresh if mode == "append" else fresh + existing


def sidecar_record(result_probs: Any, labels: Any, model_id: str, result: TagResult) -> dict[str, Any]:
    import numpy as np

    probs = np.asarray(result_probs)

    def group(idx: Any) -> dict[str, float]:
        keep = [int(i) for i in idx if probs[i] >= SIDECAR_FLOOR]
        keep.sort(key=lambda i: -probs[i])
        return {labels.names[i]: round(float(probs[i]), 6) for i in keep}

    record = {
        "model": model_id,
        "prompt": result.prompt,
        "rating": {labels.names[i]: round(float(probs[i]), 6) for i in labels.rating},
        "general": group(labels.general),
        "character": group(labels.character),
        "floor": SIDECAR_FLOOR,
    }
    if labels.extra:  # the model's other categories (copyright, artist, meta, ...), as general and character
        record["categories"] = {name: group(labels.groups[name]) for name in labels.extra}
    return record


def embedding_bytes(embedding: Any) -> bytes:
    """A ``.npy`` file's bytes holding ``embedding`` as a float32 vector."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(embedding, dtype=np.float32).reshape(-1), allow_pickle=False)
    return buf.getvalue()


# -- the run ----------------------------------------------------------------------------------------


def run_batch(
    tagger: Any,
    model: str,
    config: BatchConfig,
    options: TagOptions,
    *,
    progress: Callable[[BatchProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> BatchSummary:
    """Caption every image of ``config.inputs``. See the module docstring for the guarantees."""
    if config.existing not in EXISTING_POLICIES:
        raise BatchConfigError(f"existing: {config.existing!r} is not one of {', '.join(EXISTING_POLICIES)}")
    check_filename_format(config.filename_format)
    for inp in config.inputs:
        if not Path(inp).exists():
            raise BatchConfigError(f"{inp}: no such file or folder")
    if config.output_dir and Path(config.output_dir).exists() and not Path(config.output_dir).is_dir():
        raise BatchConfigError(f"output folder {config.output_dir} is a file")
    check_roots(config)

    # A first pass over names only (no decoding): the total for progress and ETA, and every caption path
    # checked before anything is written. Hash tokens are checked here too: they never hold separators.
    total = 0
    static_cfg = config if "[hash:" not in config.filename_format else None
    for image, root in iter_images(config.inputs, config.recursive):
        total += 1
        if static_cfg is not None:
            caption_path(image, root, static_cfg)

    model_id = tagger.resolve(model).model_id  # fails here, before any work, when the model cannot be had
    if config.embeddings and tagger.load(model).embedding_name is None:
        raise BatchConfigError(
            f"embeddings: model {model} has no embedding output (PixAI's tagger has one; a tagger.json can name "
            "a model's embedding output)"
        )
    summary = BatchSummary()
    start = time.perf_counter()
    done = 0

    def report(current: str) -> None:
        if progress is None:
            return
        elapsed = time.perf_counter() - start
        rate = summary.tagged / elapsed if elapsed > 0 else 0.0
        left = total - done
        eta = left / rate if rate > 0 else None
        progress(
            BatchProgress(done, total, summary.tagged, summary.skipped, summary.failed, elapsed, rate, eta, current)
        )

    def fail(path: Path, reason: str) -> None:
        nonlocal done
        done += 1
        summary.failed += 1
        summary.failures.append((str(path), reason))
        log.warning("%s: %s", path, reason)
        report(str(path))

    def skip(path: Path) -> None:
        nonlocal done
        done += 1
        summary.skipped += 1
        report(str(path))

    claimed: dict[str, Path] = {}  # caption file -> the image it belongs to in this run

    def jobs() -> Iterator[Job]:
        for image, root in iter_images(config.inputs, config.recursive):
            if cancel is not None and cancel.is_set():
                return
            try:
                cap = caption_path(image, root, config)
            except BatchConfigError as e:
                fail(image, str(e))
                continue
            except OSError as e:  # hash token on an unreadable file
                fail(image, f"cannot be read ({e.strerror or e})")
                continue
            if config.roots is not None and not (within(image, config.roots) and within(cap, config.roots)):
                fail(image, f"refused: a link leads it or its caption {cap} out of the allowed folders")
                continue
            first = claimed.setdefault(_caption_key(cap), image)
            if first is not image:  # the caption is already another image's: never overwrite it silently
                if _same_file(first, image) or "[hash:" in config.filename_format:
                    log.info("%s: same file or content as %s; its caption is %s", image, first, cap)
                    skip(image)
                else:
                    fail(image, _collision_reason(image, first, cap, config))
                continue
            if config.existing == "skip" and cap.exists():
                skip(image)
                continue
            yield Job(image, cap)

    try:
        stream = tagger.iter_probs(
            model, jobs(), options, batch_size=config.batch_size, cancel=cancel, embeddings=config.embeddings
        )
        for pred, labels, mcut, _cached in stream:
            job = pred.source
            if pred.error is not None:
                fail(job.image, pred.error.reason if isinstance(pred.error, ImageError) else str(pred.error))
                continue
            result = postprocess(pred.probs, labels, options, mcut=mcut)
            try:
                _write_caption(job, result, config)
                if config.json_sidecar:
                    record = sidecar_record(pred.probs, labels, model_id, result)
                    write_atomic(job.caption.with_suffix(".json"), json.dumps(record, ensure_ascii=False) + "\n")
                if config.embeddings and pred.embedding is not None:
                    write_atomic(job.caption.with_suffix(EMBEDDING_SUFFIX), embedding_bytes(pred.embedding))
            except OSError as e:
                fail(job.image, f"caption {job.caption} could not be written ({e.strerror or e})")
                continue
            summary.tag_counts.update(result.tags)
            summary.tagged += 1
            done += 1
            report(str(job.image))
    finally:
        summary.elapsed = time.perf_counter() - start
        summary.images_per_s = summary.tagged / summary.elapsed if summary.elapsed > 0 else 0.0
        summary.cancelled = cancel is not None and cancel.is_set()
    return summary


def _caption_key(caption: Path) -> str:
    """What makes two caption paths the same file: resolved, and case-folded where names ignore case."""
    key = os.path.normcase(str(caption.resolve()))
    return key.casefold() if sys.platform == "darwin" else key  # macOS volumes ignore case by default


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _collision_reason(image: Path, first: Path, caption: Path, config: BatchConfig) -> str:
    """Why ``image`` got no caption (``first`` already has ``caption``), and how to give each its own."""
    why = f"not tagged: its caption {caption} is already the caption of {first}, which was kept"
    if "[name]" not in config.filename_format:
        fix = "put [name] in the filename format (e.g. --filename-format '[name].txt')"
    elif image.name != first.name:
        fix = "use the filename format [name].[extension].txt (--filename-format '[name].[extension].txt')"
    else:
        fix = "caption each folder into its own output folder, or tag their common parent folder recursively"
    return f"{why}; to give each image its own, {fix}"


def _write_caption(job: Job, result: TagResult, config: BatchConfig) -> None:
    tags = list(result.tags)
    if config.existing in ("append", "prepend") and job.caption.exists():
        old = job.caption.read_text(encoding="utf-8-sig", errors="replace")
        tags = merge_tags(split_caption(old), tags, config.existing)
    write_atomic(job.caption, ", ".join(tags))
