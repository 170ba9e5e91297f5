"""Probabilities -> tags and a prompt. Pure functions: no model, no I/O, so every option is cheap to test
and re-thresholding a cached prediction costs microseconds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from tagger.catalog import KAOMOJI
from tagger.labels import Labels
from tagger.options import TagOptions

CHARACTER_MCUT_FLOOR = 0.15  # the reference Space floors the character MCut threshold here
_ESCAPE = re.compile(r"([\\()\[\]])")
_UNESCAPE = re.compile(r"\\(.)")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class TagResult:
    """What one image comes out as under one set of options.

    ``general`` and ``character`` hold the tags that passed (csv names, unformatted) in prompt order with
    unrounded probabilities; ``rating`` holds all ratings, highest first; ``categories`` the tags that passed
    of every other category the model has (copyright, artist, meta, ...), by category, in prompt order.
    """

    prompt: str
    rating: dict[str, float]
    general: dict[str, float]
    character: dict[str, float]
    tags: tuple[str, ...] = field(default=())  # the prompt's items, formatted
    categories: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def top_rating(self) -> str | None:
        return next(iter(self.rating), None)

    def merged(self) -> dict[str, float]:
        """Ratings and tags in one dict: the shape the older taggers' API answered (other categories after)."""
        extra = {name: p for tags in self.categories.values() for name, p in tags.items()}
        return {**self.rating, **self.character, **self.general, **extra}


# Categories of names (who drew it, which work) take the character threshold when none is given.
NAME_CATEGORIES = ("copyright", "artist")


def category_threshold(category: str, opts: TagOptions) -> float:
    """The threshold of an extra category: the one given, else the character threshold for copyright and
    artist, else the general threshold."""
    given = opts.category_threshold(category)
    if given is not None:
        return given
    return opts.character_threshold if category in NAME_CATEGORIES else opts.general_threshold


def normalize_tag(tag: str) -> str:
    """Comparison key of a tag: case, underscores vs spaces, backslash escapes and extra spaces ignored."""
    tag = _UNESCAPE.sub(r"\1", tag.strip())
    return _SPACES.sub(" ", tag.replace("_", " ")).strip().lower()


def format_tag(name: str, opts: TagOptions) -> str:
    if opts.replace_underscores and name not in KAOMOJI:
        name = name.replace("_", " ")
    if opts.escape:
        name = _ESCAPE.sub(r"\\\1", name)
    return name


def mcut_threshold(probs: np.ndarray) -> float:
    """Maximum Cut Thresholding: the midpoint of the largest gap between neighbouring sorted probabilities.

    Largeron et al., "MCut: a thresholding strategy for multi-label classification", IDA 2012; as in the
    model author's reference Space.
    """
    if len(probs) < 2:
        return 0.0 if len(probs) == 0 else float(probs[0])
    ordered = np.sort(np.asarray(probs, dtype=np.float64))[::-1]
    gaps = ordered[:-1] - ordered[1:]
    t = int(gaps.argmax())
    return float((ordered[t] + ordered[t + 1]) / 2)


def _passing(probs: np.ndarray, idx: np.ndarray, threshold: float) -> list[tuple[int, float]]:
    p = probs[idx]
    keep = np.flatnonzero(p >= threshold)
    return [(int(idx[k]), float(p[k])) for k in keep]


def _best(probs: np.ndarray, idx: np.ndarray) -> list[tuple[int, float]]:
    if len(idx) == 0:
        return []
    k = int(np.argmax(probs[idx]))
    return [(int(idx[k]), float(probs[idx[k]]))]


def postprocess(
    probs: np.ndarray, labels: Labels, opts: TagOptions, *, mcut: tuple[float, float] | None = None
) -> TagResult:
    """Apply thresholds (or MCut), excludes, ordering, limits and formatting to one probability vector.

    ``mcut`` gives the (general, character) MCut points when they were computed from a fuller vector
    than ``probs`` (the probability cache stores only values above a floor).
    """
    probs = np.asarray(probs).reshape(-1)
    if len(probs) != len(labels):
        raise ValueError(f"got {len(probs)} probabilities for {len(labels)} tags")
    names = labels.names

    rating = sorted(((names[i], float(probs[i])) for i in labels.rating), key=lambda kv: -kv[1])

    g_thr = opts.general_threshold
    if opts.general_mcut:
        g_thr = mcut[0] if mcut else mcut_threshold(probs[labels.general])
    c_thr = opts.character_threshold
    if opts.character_mcut:
        c_thr = max(mcut[1] if mcut else mcut_threshold(probs[labels.character]), CHARACTER_MCUT_FLOOR)

    excluded = {normalize_tag(t) for t in opts.exclude_tags}
    off = set(opts.exclude_categories)

    def keep(found: list[tuple[int, float]], category: str) -> list[tuple[int, float, str]]:
        if category in off:
            return []
        return [(i, p, category) for i, p in found if names[i] and normalize_tag(names[i]) not in excluded]

    chosen = keep(_passing(probs, labels.character, c_thr), "character")
    chosen += keep(_passing(probs, labels.general, g_thr), "general")
    for category in labels.extra:
        idx = labels.groups[category]
        found = (
            _best(probs, idx) if category in labels.single else _passing(probs, idx, category_threshold(category, opts))
        )
        chosen += keep(found, category)
    if opts.sort == "alpha":
        chosen.sort(key=lambda c: (names[c[0]].lower(), names[c[0]]))
    else:
        chosen.sort(key=lambda c: (-c[1], names[c[0]]))
    if opts.max_tags:
        chosen = chosen[: opts.max_tags]

    items: list[str] = []
    seen: set[str] = set()

    def add(text: str, prob: float | None) -> None:
        key = normalize_tag(text)
        if not key or key in seen:
            return
        seen.add(key)
        items.append(f"({text}:{prob:.2f})" if opts.weights and prob is not None else text)

    if opts.include_rating and rating:
        add(format_tag(rating[0][0], opts), rating[0][1])
    for tag in opts.additional_tags:
        add(tag, None)
    for i, p, _ in chosen:
        add(format_tag(names[i], opts), p)

    extra: dict[str, dict[str, float]] = {}
    for i, p, category in chosen:
        if category not in ("general", "character"):
            extra.setdefault(category, {})[names[i]] = p
    return TagResult(
        prompt=", ".join(items),
        rating=dict(rating),
        general={names[i]: p for i, p, category in chosen if category == "general"},
        character={names[i]: p for i, p, category in chosen if category == "character"},
        tags=tuple(items),
        categories=extra,
    )
