"""An image's embedded prompt against what the tagger sees: four groups, and the prompts made from them.

A pure function over the model's probabilities, its labels and the tag options (no model, no I/O), so the
tab, the command line, the API and batch captions all get the same answer. The prompt's items are compared
by ``normalize_tag`` (case, underscores or spaces, backslash escapes), the way excludes are.

- **confirmed**: in the model's tags, at or above the threshold the options set (with its probability);
- **weak**: in the model's tags, below it: the tagger does not see it (with its probability);
- **not judgeable**: not a tag of this model: extra networks (``<lora:...>``), embeddings, quality and score
  tags (``masterpiece``, Pony's ``score_9``), ratings, artist names, free text;
- **added**: the tagger's tags that the prompt lacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from tagger.embedded import GenerationData
from tagger.labels import Labels
from tagger.options import TagOptions
from tagger.postprocess import format_tag, normalize_tag, postprocess, thresholds
from tagger.prompt import EMBEDDING, NETWORK, TAG, Prompt, Token, parse

# Why an item cannot be judged; the key is what the JSON answers carry.
REASONS = {
    "network": "LoRA or other extra network",
    "embedding": "embedding reference",
    "quality": "quality or score tag",
    "rating": "rating tag",
    "artist": "artist name",
    "unknown": "not among this model's tags",
}
# Quality and aesthetic words of the common base models' prompting guides (NovelAI, Animagine, Illustrious,
# Pony); compared after normalize_tag. Only items the model does not know get this reason.
QUALITY = frozenset(
    {
        "masterpiece",
        "best quality",
        "high quality",
        "good quality",
        "great quality",
        "amazing quality",
        "normal quality",
        "medium quality",
        "low quality",
        "bad quality",
        "worst quality",
        "very aesthetic",
        "aesthetic",
        "displeasing",
        "very displeasing",
        "highres",
        "absurdres",
        "lowres",
        "newest",
        "ultra detailed",
        "ultra-detailed",
        "extremely detailed",
        "highly detailed",
        "detailed",
        "8k",
        "4k",
        "hdr",
        "uhd",
    }
)
_SCORE = re.compile(r"^(score \d+( up)?|source (anime|furry|pony|cartoon|real|manga)|year \d{4})$")
_RATING = re.compile(r"^(rating ?:? ?(safe|questionable|explicit|general|sensitive)|nsfw|sfw)$")
_ARTIST = re.compile(r"^(artist ?:|by )")
_ESCAPE = re.compile(r"([\\()\[\]])")


@dataclass(frozen=True)
class Judged:
    """One item of a group."""

    text: str  # as the prompt has it (escapes and weights removed), or the tag as the tagged prompt shows it
    key: str
    tag: str | None = None  # the model's tag (its csv name) when it has one
    probability: float | None = None
    reason: str = ""  # for items that cannot be judged: a key of REASONS

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"text": self.text}
        if self.tag is not None:
            d["tag"] = self.tag
        if self.probability is not None:
            d["probability"] = self.probability
        if self.reason:
            d["reason"] = self.reason
        return d


@lru_cache(maxsize=8)
def _label_index(names: tuple[str, ...]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(normalize_tag(name), i)
    return index


def _reason(key: str) -> str:
    if key in QUALITY or _SCORE.match(key):
        return "quality"
    if _RATING.match(key):
        return "rating"
    if _ARTIST.match(key):
        return "artist"
    return "unknown"


@dataclass(frozen=True)
class Comparison:
    """The four groups of one embedded prompt under one set of options, and the prompts made from them."""

    prompt: Prompt
    options: TagOptions
    confirmed: tuple[Judged, ...]
    weak: tuple[Judged, ...]
    not_judgeable: tuple[Judged, ...]
    added: tuple[Judged, ...]
    thresholds: dict[str, float]  # by category, as ``postprocess.thresholds`` set them
    own: tuple[tuple[str, str], ...]  # the tagged prompt's items the embedded prompt lacks: (item, key)
    excluded: frozenset[str] = frozenset()  # keys the options exclude: their tags and their categories' tags

    def _dropped(self, keep_networks: bool) -> Any:
        contradicted = {j.key for j in self.weak} | self.excluded

        def drop(token: Token) -> bool:
            if token.kind in (NETWORK, EMBEDDING):
                return not keep_networks
            # A scheduled or alternating item stays: without it the schedule would mean something else.
            return token.kind == TAG and not token.fixed and token.key in contradicted

        return drop

    def merged(self, keep_networks: bool = True) -> str:
        """The embedded prompt without what the tagger contradicts (its weak items, and the options' excludes),
        plus the tagged prompt's items it lacks; its syntax (weights, BREAK, LoRAs) kept as written."""
        body = self.prompt.render(self._dropped(keep_networks)).rstrip()
        extra = ", ".join(item for item, _ in self.own)
        if not body or not extra:
            return body or extra
        return body + (" " if body.endswith(",") else ", ") + extra

    def caption_tags(self) -> list[str]:
        """A training caption from the merge: the embedded tags the tagger confirms and the words it cannot
        judge that may be trigger words (not extra networks, embeddings, quality/score tags or ratings),
        written plainly (no weights or brackets), then the tagger's own tags."""
        opts = self.options
        confirmed = {j.key: j.tag for j in self.confirmed}
        kept = {j.key for j in self.not_judgeable if j.reason in ("unknown", "artist")}
        excluded = self.excluded
        out: list[str] = []
        seen: set[str] = set()
        for token in self.prompt.tags():
            key = token.key
            if key in seen or key in excluded or token.kind != TAG:
                continue
            tag = confirmed.get(key)
            if tag is not None:
                text = format_tag(tag, opts)
            elif key in kept:
                text = _ESCAPE.sub(r"\\\1", token.plain) if opts.escape else token.plain
            else:
                continue
            seen.add(key)
            out.append(text)
        return out + [item for item, key in self.own if key not in seen]

    def to_dict(self) -> dict[str, Any]:
        return {
            "confirmed": [j.to_dict() for j in self.confirmed],
            "weak": [j.to_dict() for j in self.weak],
            "not_judgeable": [j.to_dict() for j in self.not_judgeable],
            "added": [j.to_dict() for j in self.added],
            "thresholds": dict(self.thresholds),
            "merged_prompt": self.merged(keep_networks=True),
            "merged_prompt_without_networks": self.merged(keep_networks=False),
        }


def compare(
    prompt: str | Prompt,
    probs: np.ndarray,
    labels: Labels,
    options: TagOptions,
    *,
    mcut: tuple[float, float] | None = None,
) -> Comparison:
    """Compare an embedded prompt with one image's probabilities under ``options`` (see the module doc).

    ``mcut``: the MCut points when ``probs`` is a cached, floored vector (as ``postprocess`` takes them).
    """
    parsed = prompt if isinstance(prompt, Prompt) else parse(prompt)
    probs = np.asarray(probs).reshape(-1)
    thr = thresholds(probs, labels, options, mcut=mcut)
    excluded = {normalize_tag(t) for t in options.exclude_tags}
    index = _label_index(labels.names)
    confirmed, weak, unjudged = [], [], []
    seen: set[str] = set()
    for token in parsed.tags():
        key = token.key
        if not key or key in seen:
            continue
        seen.add(key)
        if token.kind in (NETWORK, EMBEDDING):
            unjudged.append(Judged(token.plain, key, reason=token.kind))
            continue
        i = index.get(key)
        if i is None:
            unjudged.append(Judged(token.plain, key, reason=_reason(key)))
            continue
        category = labels.category_of(i)
        if category == "rating":
            unjudged.append(Judged(token.plain, key, labels.names[i], float(probs[i]), reason="rating"))
            continue
        if category in options.exclude_categories:
            excluded.add(key)
        p = float(probs[i])
        (confirmed if p >= thr[category] else weak).append(Judged(token.plain, key, labels.names[i], p))

    result = postprocess(probs, labels, options, mcut=mcut)
    own = tuple((item, key) for item, key in zip(result.tags, result.keys, strict=True) if key not in seen)
    shown = replace(options, escape=False)
    extra = [kv for tags in result.categories.values() for kv in tags.items()]
    tagged = sorted([*result.character.items(), *result.general.items(), *extra], key=lambda kv: -kv[1])
    added = tuple(
        Judged(format_tag(name, shown), normalize_tag(name), name, p)
        for name, p in tagged
        if normalize_tag(name) not in seen
    )
    return Comparison(
        parsed, options, tuple(confirmed), tuple(weak), tuple(unjudged), added, thr, own, frozenset(excluded)
    )


def report(
    data: GenerationData | None,
    probs: np.ndarray,
    labels: Labels,
    options: TagOptions,
    *,
    mcut: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """``{"embedded": ..., "comparison": ...}`` for the JSON answers (the comparison is None when the data
    holds no prompt); ``{}`` for an image without generation data, so its answer stays as it was."""
    if data is None:
        return {}
    comparison = compare(data.prompt, probs, labels, options, mcut=mcut) if data.prompt.strip() else None
    return {"embedded": data.to_dict(), "comparison": comparison.to_dict() if comparison else None}
