"""Batch captioning: one caption file per image, written the way training tools read them.

Nothing is ever lost: each caption is written atomically as soon as its image is done, existing captions
are only touched when the user chose so, one broken image never stops the batch, and running the same
command again resumes (with ``existing="skip"`` only what is missing is tagged, and skipped images are not
even decoded).

For training (issue #13): captions are plain text (no WebUI escapes unless asked), a caption a run changes is
kept as ``NAME.bak`` first, a dry run says what would be written where, and the probability cache tells what
thresholds and excludes would do to the dataset before anything is written.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from PIL import Image

from tagger.compare import compare
from tagger.embedded import read_generation_data
from tagger.errors import ImageError, TaggerError
from tagger.files import atomic_file, hash_file, new_hash, write_atomic
from tagger.images import image_extensions
from tagger.options import TagOptions
from tagger.postprocess import TagResult, normalize_tag, postprocess

log = logging.getLogger(__name__)

EXISTING_POLICIES = ("skip", "overwrite", "append", "prepend")
# What a run does with an image's caption: write a new one, leave it, or change it by the policy.
ACTIONS = ("new", "skip", "overwrite", "append", "prepend")
METADATA_SUFFIXES = (".json", ".jsonl")
CAPTION_SOURCES = ("tags", "merge")
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
    # -- training captions (issue #13)
    escape: bool = False  # backslash-escape ( ) [ ] \ in captions: only for the WebUI's parser, trainers read text
    backup: bool = True  # a caption the run changes is kept first as NAME.bak (or under backup_dir)
    backup_dir: Path | None = None  # the backups here instead, mirroring the captions' folders
    metadata: Path | None = None  # one .json or .jsonl file for the whole run (kohya's --output_path)
    workers: int | None = None  # decoding threads; None: what the machine can use; 0: in series, no threads
    # "merge": an image carrying a prompt (A1111, NovelAI, ComfyUI) is captioned from it and the tags together
    # (Comparison.caption_tags: trigger words kept, noise dropped); "tags": the tags alone, as always.
    caption_from: str = "tags"


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
    # tags as the single-image view spells them (no escapes, no weights), counted once per tagged image
    tag_counts: collections.Counter[str] = field(default_factory=collections.Counter)
    cancelled: bool = False
    backups: int = 0  # captions kept as a backup before the run changed them

    @property
    def total(self) -> int:
        return self.tagged + self.skipped + self.failed


@dataclass(frozen=True)
class Job:
    """One image and where its caption goes; path-like, so the engine reads it as the image."""

    image: Path
    caption: Path
    backup: Path | None = None  # where the caption goes first if it exists and the run changes it

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
    """Refuse inputs or output paths outside ``config.roots``, naming the folders that are allowed."""
    if config.roots is None:
        return
    allowed = ", ".join(str(r) for r in config.roots) or "none"
    outputs = [p for p in (config.output_dir, config.backup_dir, config.metadata) if p]
    for path in [*config.inputs, *outputs]:
        if not within(Path(path), config.roots):
            raise BatchConfigError(f"{path} is outside the folders batches may use here (allowed: {allowed})")


def check_config(config: BatchConfig) -> None:
    """Refuse settings that cannot work, before anything is read or written; BatchConfigError says which."""
    if config.existing not in EXISTING_POLICIES:
        raise BatchConfigError(f"existing: {config.existing!r} is not one of {', '.join(EXISTING_POLICIES)}")
    if config.caption_from not in CAPTION_SOURCES:
        raise BatchConfigError(f"caption from: {config.caption_from!r} is not one of {', '.join(CAPTION_SOURCES)}")
    check_filename_format(config.filename_format)
    for inp in config.inputs:
        if not Path(inp).exists():
            raise BatchConfigError(f"{inp}: no such file or folder")
    for name, folder in (("output folder", config.output_dir), ("backup folder", config.backup_dir)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            raise BatchConfigError(f"{name} {folder} is a file")
    if config.metadata is not None:
        meta = Path(config.metadata)
        if meta.suffix.lower() not in METADATA_SUFFIXES:
            raise BatchConfigError(f"metadata file {meta}: name it .json (one object) or .jsonl (a line per image)")
        if meta.is_dir():
            raise BatchConfigError(f"metadata file {meta} is a folder; give a file name ending in .json or .jsonl")
    if config.workers is not None and not 0 <= config.workers <= 256:
        raise BatchConfigError(f"workers: {config.workers} is not between 0 and 256")
    check_roots(config)


# -- writing ----------------------------------------------------------------------------------------


def split_caption(text: str, separator: str = ",") -> list[str]:
    """The tags of a caption: split at ``separator`` (its visible part: ``, `` splits at ``,``) and newlines."""
    sep = separator.strip() or ","
    return [t.strip() for t in text.replace("\n", sep).split(sep) if t.strip()]


def merge_tags(existing: list[str], new: list[str], mode: str, separator: str = ",") -> list[str]:
    """``append``/``prepend`` ``new`` to ``existing``: existing order kept, duplicates dropped (excludes' rules).

    A new tag holding the separator (``tag "quoted", comma's``) was split in two when the caption was read back;
    it counts as there when all its parts are."""
    seen = {normalize_tag(t) for t in existing}
    fresh = []
    for tag in new:
        key = normalize_tag(tag)
        parts = {normalize_tag(p) for p in split_caption(tag, separator)}
        if key not in seen and not (len(parts) > 1 and parts <= seen):
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


# -- the plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """What a run does with one image: ``action`` is one of ACTIONS, ``duplicate`` (the same file or content
    as an earlier image: skipped) or ``failed`` with ``reason`` (a collision, a name that cannot be)."""

    image: Path
    caption: Path | None
    action: str
    reason: str = ""
    backup: Path | None = None  # where the caption is kept first (when it exists and the run changes it)


def backup_path(caption: Path, base: Path, config: BatchConfig) -> Path:
    """``NAME.txt.bak`` beside the caption, or the caption's path below ``base`` inside ``config.backup_dir``."""
    if config.backup_dir is None:
        return caption.with_name(caption.name + ".bak")
    try:
        rel = caption.relative_to(base)
    except ValueError:
        rel = Path(caption.name)
    return Path(config.backup_dir) / rel


def iter_plan(config: BatchConfig, cancel: threading.Event | None = None) -> Iterator[Planned]:
    """Every image of the batch with what a run does with it, in order, streaming; reads names and stats only
    (a ``[hash:...]`` name reads the file). The run and the dry run both follow this plan."""
    claimed: dict[str, Path] = {}  # caption file -> the image it belongs to in this run
    backups: dict[str, Path] = {}  # backup file -> the caption it keeps
    for image, root in iter_images(config.inputs, config.recursive):
        if cancel is not None and cancel.is_set():
            return
        yield plan_image(image, root, config, claimed, backups)


def plan_image(
    image: Path, root: Path, config: BatchConfig, claimed: dict[str, Path], backups: dict[str, Path]
) -> Planned:
    """What a run does with ``image`` (found under ``root``): its caption and backup paths and the action.
    ``claimed`` (caption file -> image) and ``backups`` (backup file -> caption) are the run's so far; the
    dataset command plans its local images with this too."""
    try:
        cap = caption_path(image, root, config)
    except BatchConfigError as e:
        return Planned(image, None, "failed", str(e))
    except OSError as e:  # hash token on an unreadable file
        return Planned(image, None, "failed", f"cannot be read ({e.strerror or e})")
    if config.roots is not None and not (within(image, config.roots) and within(cap, config.roots)):
        return Planned(
            image, cap, "failed", f"refused: a link leads it or its caption {cap} out of the allowed folders"
        )
    first = claimed.setdefault(_caption_key(cap), image)
    if first is not image:  # the caption is already another image's: never overwrite it silently
        if _same_file(first, image) or "[hash:" in config.filename_format:
            return Planned(image, cap, "duplicate", f"same file or content as {first}; its caption is {cap}")
        return Planned(image, cap, "failed", _collision_reason(image, first, cap, config))
    exists = cap.exists()
    action = config.existing if exists else "new"
    backup = None
    if config.backup and config.existing != "skip":
        backup = backup_path(cap, Path(config.output_dir) if config.output_dir else root, config)
        other = backups.setdefault(_caption_key(backup), cap)
        if other != cap:
            why = f"its caption's backup {backup} would replace the backup of {other}"
            return Planned(image, cap, "failed", f"not tagged: {why}; give each input folder its own run")
    return Planned(image, cap, action, backup=backup)


@dataclass
class BatchPlan:
    """A dry run: what a run would do with each image, nothing written."""

    entries: list[Planned]

    @property
    def counts(self) -> collections.Counter[str]:
        return collections.Counter(e.action for e in self.entries)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(str(e.image), e.reason) for e in self.entries if e.action == "failed"]

    @property
    def backups(self) -> list[Planned]:
        """The captions that would be kept as a backup before the run changes them."""
        return [e for e in self.entries if e.backup is not None and e.action in ("overwrite", "append", "prepend")]

    def lines(self) -> Iterator[str]:
        """One line per image: ``ACTION  IMAGE -> CAPTION``, with the backup or the reason."""
        for e in self.entries:
            if e.action == "failed":
                yield f"failed     {e.image}: {e.reason}"
            elif e.action == "duplicate":
                yield f"duplicate  {e.image}: {e.reason}"
            else:
                keep = f" (backup {e.backup})" if e.backup is not None and e.action != "new" else ""
                yield f"{e.action:<10} {e.image} -> {e.caption}{keep}"

    def summary(self) -> str:
        c = self.counts
        parts = [f"{c[a]} {a}" for a in ACTIONS] + [f"{c['duplicate']} duplicate", f"{c['failed']} failed"]
        text = f"dry run, nothing written: {len(self.entries)} images: {', '.join(parts)}"
        if self.backups:
            text += f"; {len(self.backups)} captions would be kept as a backup first"
        return text


def plan_batch(config: BatchConfig) -> BatchPlan:
    """What ``run_batch`` would do with ``config``, without decoding an image or writing anything."""
    check_config(config)
    return BatchPlan(list(iter_plan(config)))


# -- statistics from the probability cache -----------------------------------------------------------


@dataclass
class BatchStats:
    """What these options would make of the images whose probabilities the cache holds, before writing."""

    images: int = 0  # images in the plan (failed ones left out)
    cached: int = 0  # those the cache answers exactly at these thresholds
    before: collections.Counter[str] = field(default_factory=collections.Counter)  # tags before the excludes
    after: collections.Counter[str] = field(default_factory=collections.Counter)  # and after
    losing: int = 0  # images that lose at least one tag to the excludes
    compared: int = 0  # cached images with a caption file now
    gaining: int = 0  # ... that would gain tags against it
    dropping: int = 0  # ... that would lose tags against it
    unchanged: int = 0  # ... whose tags would be the same
    gained: int = 0  # tags gained, in all
    dropped: int = 0  # tags lost, in all

    @property
    def missing(self) -> int:
        return self.images - self.cached

    def summary_lines(self, top: int = 20) -> list[str]:
        """How many images the cache answered, tags per image before and after the excludes, what the excludes
        took, and the change against the caption files there now."""
        out = [f"probability cache: {self.cached} of {self.images} images"]
        if self.missing:
            out[0] += f" ({self.missing} not in it, or under its floor at these thresholds: a run tags them)"
        if not self.cached:
            return out
        n = self.cached
        out.append(
            f"tags per image: {sum(self.before.values()) / n:.1f} before the excludes, "
            f"{sum(self.after.values()) / n:.1f} after; {self.losing} images lose tags to the excludes"
        )
        gone = sorted(((t, c - self.after[t]) for t, c in self.before.items() if c > self.after[t]), key=_by_count)
        if gone:
            out.append("excluded: " + ", ".join(f"{t} ({k} images)" for t, k in gone[:top]))
        if self.compared:
            out.append(
                f"against the {self.compared} caption files there now: {self.gaining} images gain tags "
                f"({self.gained} in all), {self.dropping} lose tags ({self.dropped} in all), {self.unchanged} unchanged"
            )
        return out

    def lines(self, top: int = 20) -> list[str]:
        """``summary_lines`` and the ``top`` most frequent tags, before and after the excludes."""
        out = self.summary_lines(top)
        if self.cached:
            out.append(f"top tags (of {self.cached} images): before excludes -> after")
            out += [f"  {tag}: {self.before[tag]} -> {c}" for tag, c in sorted(self.after.items(), key=_by_count)[:top]]
        return out


def _by_count(kv: tuple[str, int]) -> tuple[int, str]:
    return -kv[1], kv[0]


def batch_stats(
    tagger: Any, model: str, config: BatchConfig, options: TagOptions, plan: BatchPlan | None = None
) -> BatchStats:
    """Tag statistics of the batch at these options from the probability cache alone (no model run, no
    writes): tags before and after the excludes, and against the caption files there now."""
    plan = plan or plan_batch(config)
    opts = replace(options, escape=config.escape)
    unexcluded = replace(opts, exclude_tags=(), exclude_categories=())
    entries = [e for e in plan.entries if e.action not in ("failed", "duplicate")]
    stats = BatchStats(images=len(entries))
    by_image = {e.image: e for e in entries}
    for image, labels, hit in tagger.iter_cached(model, (e.image for e in entries)):
        if hit is None or not hit.serves(unexcluded, labels):  # exact for both counts
            continue
        stats.cached += 1
        before = postprocess(hit.probs, labels, unexcluded, mcut=hit.mcut).plain
        after = postprocess(hit.probs, labels, opts, mcut=hit.mcut).plain
        stats.before.update(before)
        stats.after.update(after)
        stats.losing += len(after) < len(before)
        cap = by_image[image].caption
        if cap is None or not cap.is_file():
            continue
        try:
            now = {normalize_tag(t) for t in split_caption(_read_caption(cap), opts.separator)}
        except OSError:
            continue
        new = {normalize_tag(p) for t in after for p in split_caption(t, opts.separator)}  # as read back
        stats.compared += 1
        stats.gained += len(new - now)
        stats.dropped += len(now - new)
        stats.gaining += bool(new - now)
        stats.dropping += bool(now - new)
        stats.unchanged += new == now
    return stats


# -- tag counts -------------------------------------------------------------------------------------


def top_tags(counts: collections.Counter[str], images: int, n: int = 200) -> list[list[object]]:
    """``[tag, images, share %]`` rows for the most frequent tags, ties broken alphabetically."""
    ordered = sorted(counts.items(), key=_by_count)[:n]
    return [[tag, c, round(100.0 * c / images, 1) if images else 0.0] for tag, c in ordered]


def write_counts_csv(path: Path, counts: collections.Counter[str], images: int) -> Path:
    """All tag counts as CSV (``tag,images,share_percent``), UTF-8 with a BOM so spreadsheet apps read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tag", "images", "share_percent"])
        w.writerows(top_tags(counts, images, n=len(counts)))
    return path


# -- the metadata file -------------------------------------------------------------------------------


class MetadataFile:
    """One file for the whole run, as kohya's ``--output_path``: ``.json`` maps each image to ``{"tags",
    "image_size"}``, ``.jsonl`` holds a line ``{"image_path", "caption", "image_size"}`` per image; both add the
    model and the probabilities at or above SIDECAR_FLOOR (``rating``, ``general``, ``character``). An image
    skipped because its caption exists is in it with that caption and ``"existing": true``.

    Written piece by piece into a temporary file that replaces the file when the run ends (cancelled runs
    included), so memory stays flat and a crash leaves the previous file as it was.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        self.entries = 0
        self._stack = contextlib.ExitStack()
        self._fh: IO[str] | None = None

    def __enter__(self) -> MetadataFile:
        self._fh = self._stack.enter_context(atomic_file(self.path))
        if not self.jsonl:
            self._fh.write("{")
        return self

    def add(self, image: Path, caption: str, extra: dict[str, Any]) -> None:
        assert self._fh is not None
        size = _image_size(image)
        if self.jsonl:
            record = {"image_path": str(image), "caption": caption, "image_size": size, **extra}
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            record = {"tags": caption, "image_size": size, **extra}
            sep = "," if self.entries else ""
            self._fh.write(
                f"{sep}\n  {json.dumps(str(image), ensure_ascii=False)}: {json.dumps(record, ensure_ascii=False)}"
            )
        self.entries += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._fh is not None and kind is None and not self.jsonl:
            self._fh.write("\n}\n" if self.entries else "}\n")
        self._stack.__exit__(kind, exc, tb)


def _image_size(image: Path) -> list[int] | None:
    """``[width, height]`` from the file's header (as kohya records it), None when the header cannot be read."""
    try:
        with Image.open(image) as im:
            return [int(im.size[0]), int(im.size[1])]
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


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
    """Caption every image of ``config.inputs``. See the module docstring for the guarantees.

    Captions are formatted by ``options`` with ``config.escape`` for escaping (plain text by default: the
    WebUI's escapes are for its prompt parser, not for trainers).
    """
    check_config(config)
    opts = replace(options, escape=config.escape)

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
    meta: MetadataFile | None = None

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

    def skip(item: Planned) -> None:
        nonlocal done
        done += 1
        summary.skipped += 1
        if item.action == "duplicate":
            log.info("%s: %s", item.image, item.reason)
        elif meta is not None and item.caption is not None:
            with contextlib.suppress(OSError):
                meta.add(item.image, _read_caption(item.caption), {"existing": True})
        report(str(item.image))

    def jobs() -> Iterator[Job]:
        for item in iter_plan(config, cancel):
            if item.action == "failed":
                fail(item.image, item.reason)
            elif item.action in ("skip", "duplicate"):
                skip(item)
            else:
                assert item.caption is not None
                yield Job(item.image, item.caption, item.backup)

    with contextlib.ExitStack() as stack:
        if config.metadata is not None:
            meta = stack.enter_context(MetadataFile(config.metadata))
        try:
            stream = tagger.iter_probs(
                model, jobs(), opts, batch_size=config.batch_size, cancel=cancel, workers=config.workers,
                embeddings=config.embeddings,
            )  # fmt: skip
            for pred, labels, mcut, _cached in stream:
                job = pred.source
                if pred.error is not None:
                    fail(job.image, pred.error.reason if isinstance(pred.error, ImageError) else str(pred.error))
                    continue
                result = postprocess(pred.probs, labels, opts, mcut=mcut)
                try:
                    written = write_outputs(
                        job, pred.probs, labels, mcut, result, config, opts, model_id, pred.embedding,
                        record=meta is not None,
                    )  # fmt: skip
                except OSError as e:
                    fail(job.image, f"caption {job.caption} could not be written ({e.strerror or e})")
                    continue
                if meta is not None and written.record is not None:
                    keep = ("model", "rating", "general", "character", "categories", "floor")
                    meta.add(job.image, written.text, {k: written.record[k] for k in keep if k in written.record})
                summary.backups += written.backed_up
                summary.tag_counts.update(written.counted)
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


@dataclass(frozen=True)
class Written:
    """What ``write_outputs`` wrote for one image."""

    text: str  # the caption file's text
    backed_up: bool  # the caption there was kept at the job's backup first
    counted: list[str]  # the caption's tags as the single-image view spells them (for tag counts)
    record: dict[str, Any] | None  # the JSON sidecar's record (when written or asked for)


def write_outputs(
    job: Job,
    probs: Any,
    labels: Any,
    mcut: Any,
    result: TagResult,
    config: BatchConfig,
    options: TagOptions,
    model_id: str,
    embedding: Any = None,
    *,
    record: bool = False,
) -> Written:
    """Everything a run writes for one tagged image: its caption (from the embedded prompt and the tags under
    ``caption_from`` merge), the JSON sidecar and the embedding where ``config`` asks for them. ``options`` is
    what ``result`` was made with (its escape is ``config.escape``); ``record`` asks for the sidecar's record
    without the file. ``tag DIR`` and the dataset command both write through this. Raises OSError."""
    merged = merged_caption(job.image, probs, labels, options, mcut) if config.caption_from == "merge" else None
    text, backed_up = _write_caption(job, merged or list(result.tags), config, options.separator)
    rec = sidecar_record(probs, labels, model_id, result) if config.json_sidecar or record else None
    if config.json_sidecar:
        write_atomic(job.caption.with_suffix(".json"), json.dumps(rec, ensure_ascii=False) + "\n")
    if config.embeddings and embedding is not None:
        write_atomic(job.caption.with_suffix(EMBEDDING_SUFFIX), embedding_bytes(embedding))
    return Written(text, backed_up, merged or list(result.plain), rec)


def merged_caption(image: Path, probs: Any, labels: Any, options: TagOptions, mcut: Any) -> list[str] | None:
    """The caption of ``image`` from its embedded prompt and the tags; None when it carries no prompt."""
    data = read_generation_data(image)
    if data is None or not data.prompt.strip():
        return None
    return compare(data.prompt, probs, labels, options, mcut=mcut).caption_tags()


def _read_caption(path: Path) -> str:
    return path.read_text(encoding="utf-8-sig", errors="replace")


def _write_caption(job: Job, tags: list[str], config: BatchConfig, separator: str) -> tuple[str, bool]:
    """Write the caption (merged with the one there for append/prepend); a caption that changes is kept at
    ``job.backup`` first. Returns the caption's text and whether a backup was written."""
    try:
        old: bytes | None = job.caption.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None and config.existing in ("append", "prepend"):
        existing = split_caption(old.decode("utf-8-sig", errors="replace"), separator)
        tags = merge_tags(existing, tags, config.existing, separator)
    text = separator.join(tags)
    if old is not None and old == text.encode("utf-8"):
        return text, False  # unchanged: the file and any older backup stay as they are
    backed_up = old is not None and job.backup is not None
    if backed_up:
        write_atomic(job.backup, old)  # type: ignore[arg-type]
    write_atomic(job.caption, text)
    return text, backed_up
