"""Probabilities -> tags and a prompt. Pure functions: no model, no I/O, so every option is cheap to test
and re-thresholding a cached prediction costs microseconds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from tagger.catalog import KAOMOJI
from tagger.labels import Labels
from tagger.options import TagOptions, parse_tag_replacement

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
    plain: tuple[str, ...] = field(default=())  # the same items without escapes or weights, as the bars show tags
    keys: tuple[str, ...] = field(default=())  # each item's normalize_tag key (what excludes and merges compare)

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
        name = escape_tag(name)
    return name


def escape_tag(text: str) -> str:
    """``\\ ( ) [ ]`` backslash-escaped, so the WebUI's prompt parser reads them as text, not emphasis."""
    return _ESCAPE.sub(r"\\\1", text)


# -- training captions (issue #13) ------------------------------------------------------------------------
# kohya-ss/sd-scripts, finetune/tag_images_by_wd14_tagger.py at commit 48d368f: each function below names the
# part of that script it follows and where it differs.


def expand_character(name: str) -> list[str]:
    """``name_(series)`` -> ``[name, series]``; ``name_(costume)_(series)`` -> ``[name_(costume), series]``.

    kohya's ``expand_character_tags``: a tag ending in ``)`` is split at its last ``(``, one ``_`` before it
    dropped, the ``)`` removed from the series. A tag without ``(`` is left whole (kohya would make
    ``abc)`` into ``, abc``). kohya joins the two with the separator into one string; here they are two tags.
    """
    if not name.endswith(")") or "(" not in name:
        return [name]
    head, _, series = name.rpartition("(")
    head = head[:-1] if head.endswith("_") else head
    return [part for part in (head, series.replace(")", "")) if part]


def _replacements(opts: TagOptions) -> dict[str, str]:
    """kohya's ``--tag_replacement``, by ``normalize_tag`` of the source (kohya compares exact text after its
    underscore removal: here ``long_hair``, ``long hair`` and ``Long Hair`` all match the tag)."""
    return {normalize_tag(src): dst for src, dst in parse_tag_replacement(opts.tag_replacement)}


def _spell(name: str, is_char: bool, opts: TagOptions, repl: dict[str, str]) -> list[str]:
    """The unescaped caption items a model tag becomes: replaced as a whole, else expanded (characters), each
    part spelled with or without underscores and replaced. kohya's order: expand, remove underscores, replace."""
    whole = repl.get(normalize_tag(name)) if repl else None
    if whole is not None:
        return [whole] if whole else []
    parts = expand_character(name) if is_char and opts.character_expand else [name]
    out = []
    for part in parts:
        if opts.replace_underscores and part not in KAOMOJI:
            part = part.replace("_", " ")
        if repl:
            part = repl.get(normalize_tag(part), part)
        if part:
            out.append(part)
    return out


def _caption_order(chosen: list[_Chosen], opts: TagOptions) -> list[_Chosen]:
    """The always-first tags the model found (in the order given), then characters (``character_first``),
    then the rest, each group in the sort order.

    kohya inserts each character tag at position 0 as it walks the csv (``--character_tags_first``) and
    moves each ``--always_first_tags`` tag found to position 0 in turn, which leaves the last one given first;
    here the order given is kept. kohya's always-first tags also go before the rating; here the rating and
    the additional tags stay in front (``postprocess``).
    """
    firsts = [normalize_tag(t) for t in opts.always_first]
    rank = {key: n for n, key in reversed(list(enumerate(firsts)))}

    def first_rank(c: _Chosen) -> int | None:
        keys = [c.key, *(normalize_tag(t) for t in c.items)]
        found = [rank[k] for k in keys if k in rank]
        return min(found) if found else None

    ranked = [(first_rank(c), c) for c in chosen]
    front = sorted(((r, n, c) for n, (r, c) in enumerate(ranked) if r is not None), key=lambda t: t[:2])
    rest = [c for r, c in ranked if r is None]
    if opts.character_first:
        rest = [c for c in rest if c.is_char] + [c for c in rest if not c.is_char]
    return [c for _, _, c in front] + rest


class _Chosen(NamedTuple):
    """A model tag that passed: its index, probability, category, comparison key and caption items."""

    index: int
    prob: float
    category: str
    key: str
    items: tuple[str, ...]

    @property
    def is_char(self) -> bool:
        """Only the character category is expanded and put first (``character_first``), as kohya does: its
        copyright, artist, meta and model tags go with the general ones."""
        return self.category == "character"


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


def thresholds(
    probs: np.ndarray, labels: Labels, opts: TagOptions, *, mcut: tuple[float, float] | None = None
) -> dict[str, float]:
    """The threshold ``opts`` set for each category of ``labels`` but rating: general and character as given or
    their MCut points, the others as given or by ``category_threshold``; a category of which only the best label
    counts (``labels.single``) gets that label's probability, so exactly it passes."""
    g_thr = opts.general_threshold
    if opts.general_mcut:
        g_thr = mcut[0] if mcut else mcut_threshold(probs[labels.general])
    c_thr = opts.character_threshold
    if opts.character_mcut:
        c_thr = max(mcut[1] if mcut else mcut_threshold(probs[labels.character]), CHARACTER_MCUT_FLOOR)
    out = {"general": g_thr, "character": c_thr}
    for category in labels.extra:
        idx = labels.groups[category]
        if category not in labels.single:
            out[category] = category_threshold(category, opts)
        elif len(idx):
            out[category] = float(probs[idx].max())
    return out


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

    thr = thresholds(probs, labels, opts, mcut=mcut)
    excluded = {normalize_tag(t) for t in opts.exclude_tags}
    off = set(opts.exclude_categories)
    repl = _replacements(opts)

    def chosen_of(category: str) -> list[_Chosen]:
        if category in off:
            return []
        idx = getattr(labels, category) if category in ("general", "character") else labels.groups[category]
        found = _best(probs, idx) if category in labels.single else _passing(probs, idx, thr[category])
        is_char = category == "character"
        out = []
        for i, p in found:
            key = normalize_tag(names[i])
            if key in excluded:
                continue
            items = tuple(_spell(names[i], is_char, opts, repl))
            if excluded and (repl or (is_char and opts.character_expand)):
                # an exclude matches the model's tag, its replacement or one part of its expansion
                items = tuple(t for t in items if normalize_tag(t) not in excluded)
            if items:
                out.append(_Chosen(i, p, category, key, items))
        return out

    chosen = [c for category in ("character", "general", *labels.extra) for c in chosen_of(category)]
    if opts.sort == "alpha":
        chosen.sort(key=lambda c: (names[c.index].lower(), names[c.index]))
    else:
        chosen.sort(key=lambda c: (-c.prob, names[c.index]))
    if opts.always_first or opts.character_first:
        chosen = _caption_order(chosen, opts)
    if opts.max_tags:
        chosen = chosen[: opts.max_tags]

    items: list[str] = []
    plain: list[str] = []
    seen: dict[str, None] = {}  # the items' keys, in order

    def add(text: str, prob: float | None, *, typed: bool = False) -> None:
        """One item: a model tag's spelling (escaped when asked), or a tag the user ``typed`` (as typed)."""
        key = normalize_tag(text)
        if not key or key in seen:
            return
        seen[key] = None
        shown = text if typed or not opts.escape else escape_tag(text)
        items.append(f"({shown}:{prob:.2f})" if opts.weights and prob is not None else shown)
        plain.append(_UNESCAPE.sub(r"\1", text) if typed else text)

    # The rating: kohya's --use_rating_tags (first) / --use_rating_tags_as_last_tag (last), its argmax (the
    # first of equals, as here), spelled and replaced like every tag and left out when excluded.
    top = None
    if opts.include_rating and rating and normalize_tag(rating[0][0]) not in excluded:
        spelled = [t for t in _spell(rating[0][0], False, opts, repl) if normalize_tag(t) not in excluded]
        top = (spelled, rating[0][1])
    if top and opts.rating_position == "first":
        for text in top[0]:
            add(text, top[1])
    for tag in opts.additional_tags:
        add(tag, None, typed=True)  # the user's own tags go in as typed
    for c in chosen:
        for text in c.items:
            add(text, c.prob)
    if top and opts.rating_position == "last":
        for text in top[0]:
            add(text, top[1])

    extra: dict[str, dict[str, float]] = {}
    for c in chosen:
        if c.category not in ("general", "character"):
            extra.setdefault(c.category, {})[names[c.index]] = c.prob
    return TagResult(
        prompt=opts.separator.join(items),
        rating=dict(rating),
        general={names[c.index]: c.prob for c in chosen if c.category == "general"},
        character={names[c.index]: c.prob for c in chosen if c.is_char},
        tags=tuple(items),
        categories=extra,
        plain=tuple(plain),
        keys=tuple(seen),
    )
