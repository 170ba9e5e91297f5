"""One typed options model, shared by the command line, the HTTP API and the UI so they cannot drift.

Each field carries its description and range in ``metadata``; the API builds its request model from
these fields, the UI its controls and the command line its flags, so a new option appears everywhere at once.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from tagger.errors import OptionsError

SortOrder = Literal["confidence", "alpha"]
RatingPosition = Literal["first", "last"]


def _opt(default: Any, description: str, **meta: Any) -> Any:
    return field(default=default, metadata={"description": description, **meta})


@dataclass(frozen=True)
class TagOptions:
    """How probabilities become tags and a prompt. Defaults follow the WebUI's own interrogators."""

    general_threshold: float = _opt(0.35, "Minimum probability of a general tag (0..1).", ge=0.0, le=1.0)
    character_threshold: float = _opt(0.85, "Minimum probability of a character tag (0..1).", ge=0.0, le=1.0)
    general_mcut: bool = _opt(False, "Pick the general threshold by MCut (largest gap) instead.")
    character_mcut: bool = _opt(False, "Pick the character threshold by MCut (floored at 0.15).")
    additional_tags: tuple[str, ...] = _opt((), "Tags put at the front of every prompt.")
    exclude_tags: tuple[str, ...] = _opt((), "Tags never output (case, underscore and space insensitive).")
    sort: SortOrder = _opt("confidence", "Order of tags: by confidence (highest first) or alphabetical.")
    max_tags: int = _opt(0, "Most model tags in the prompt; 0 means no limit.", ge=0, le=100000)
    replace_underscores: bool = _opt(True, "Write long_hair as 'long hair' (kaomoji such as ^_^ are kept).")
    escape: bool = _opt(
        True,
        "Escape \\ ( ) [ ] in the prompt with a backslash so the WebUI does not read them as emphasis (caption "
        "files are written without escapes unless the batch asks for them).",
    )
    weights: bool = _opt(False, "Write each tag with its probability, as (tag:0.95).")
    include_rating: bool = _opt(False, "Add the top rating (general, sensitive, ...) to the prompt, first or last.")
    # Categories beyond general and character (copyright, artist, meta, year, quality, ...: issue 10).
    category_thresholds: tuple[tuple[str, float], ...] = _opt(
        (),
        "Minimum probability per category beyond general and character, as {category: 0..1} (copyright, "
        "artist, meta, year, quality...). A category left out uses the model's own default, else the "
        "character threshold (copyright, artist) or the general threshold (the others).",
        ge=0.0,
        le=1.0,
    )
    exclude_categories: tuple[str, ...] = _opt(
        (), "Categories whose tags are never output (e.g. artist, meta); general and character work too."
    )

    # -- training captions (issue #13): what kohya-ss/sd-scripts' finetune/tag_images_by_wd14_tagger.py offers
    # (read at commit 48d368f), with its semantics; postprocess.py cites each one and says where it differs.
    rating_position: RatingPosition = _opt("first", "Where the top rating goes when it is added: first or last.")
    character_first: bool = _opt(False, "Character tags before the general tags, whatever the sort order.")
    character_expand: bool = _opt(
        False,
        "Write a character tag name_(series) as two tags, name and series (name_(costume)_(series): "
        "name_(costume) and series).",
    )
    always_first: tuple[str, ...] = _opt(
        (), "Tags put first, in this order, when the model finds them (additional tags go in every prompt)."
    )
    separator: str = _opt(", ", "Text between tags, e.g. ', ' or ','.", max_length=8)
    tag_replacement: str = _opt(
        "",
        "Replace tags: source,target;source2,target2 (\\, and \\; for a comma or semicolon inside a tag; an "
        "empty target removes the tag).",
        max_length=10000,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "category_thresholds", parse_category_thresholds(self.category_thresholds))
        cats = self.exclude_categories
        if isinstance(cats, (list, tuple)) and all(isinstance(c, str) for c in cats):  # a set: sorted, once each
            object.__setattr__(self, "exclude_categories", tuple(sorted({c.strip().lower() for c in cats})))
        validate(self)

    def category_threshold(self, category: str) -> float | None:
        """The threshold given for ``category``, or None."""
        return dict(self.category_thresholds).get(category)


def parse_tag_list(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"a, b,  c"`` or ``["a", "b"]`` -> ``("a", "b", "c")``: trimmed, empty items dropped."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise OptionsError("tags", f"expected text, got {type(item).__name__}")
        item = item.strip()
        if item:
            out.append(item)
    return tuple(out)


def parse_category_thresholds(value: Any) -> tuple[tuple[str, float], ...]:
    """``{"Copyright": 0.5}``, ``[("copyright", 0.5)]`` or ``"copyright=0.5, artist=0.4"`` -> the sorted
    ``(("copyright", 0.5),)`` TagOptions holds (names lower-cased). Values are checked by ``validate``."""
    if value is None:
        return ()
    if isinstance(value, str):
        pairs = []
        for item in value.split(","):
            if item.strip():
                name, eq, number = item.partition("=")
                if not eq:
                    raise OptionsError("category_thresholds", f"{item.strip()!r}: expected category=number")
                try:
                    pairs.append((name, float(number)))
                except ValueError:
                    raise OptionsError(
                        "category_thresholds", f"{item.strip()!r}: {number.strip()!r} is not a number"
                    ) from None
        value = pairs
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = [(k, v) for k, v in items]
    except (TypeError, ValueError):
        raise OptionsError("category_thresholds", f"expected {{category: number}}, got {value!r}") from None
    out: dict[str, Any] = {}
    for name, number in pairs:
        if not isinstance(name, str) or not name.strip():
            raise OptionsError("category_thresholds", f"expected category names, got {name!r}")
        out[name.strip().lower()] = number
    return tuple(sorted(out.items()))


def with_model_defaults(base: TagOptions, thresholds: Mapping[str, float]) -> TagOptions:
    """``base`` with a model's own default thresholds: its general and character ones replace base's, the
    others are added where ``base`` gives none for that category."""
    if not thresholds:
        return base
    values: dict[str, Any] = {}
    if "general" in thresholds:
        values["general_threshold"] = float(thresholds["general"])
    if "character" in thresholds:
        values["character_threshold"] = float(thresholds["character"])
    extra = {k: float(v) for k, v in thresholds.items() if k not in ("general", "character", "rating")}
    if extra:
        values["category_thresholds"] = {**extra, **dict(base.category_thresholds)}
    return replace(base, **values)


OPTION_FIELDS = {f.name: f for f in fields(TagOptions)}
# Fields holding a list of names (tags or categories); category_thresholds is a mapping, not a list.
TAG_LIST_FIELDS = tuple(
    name for name, f in OPTION_FIELDS.items() if isinstance(f.default, tuple) and name != "category_thresholds"
)


@functools.cache
def literal_choices(name: str) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` field (``sort``: confidence, alpha), None for other fields."""
    hint = typing.get_type_hints(TagOptions).get(name)
    return tuple(typing.get_args(hint)) if typing.get_origin(hint) is Literal else None


# kohya's own stand-ins for escaped separators, after which it splits on ";" then ","
# (finetune/tag_images_by_wd14_tagger.py, process_tag_replacement); any text absent from the input serves.
_ESCAPED_COMMA, _ESCAPED_SEMICOLON = "\x00c", "\x00s"


@functools.lru_cache(maxsize=64)
def parse_tag_replacement(text: str) -> tuple[tuple[str, str], ...]:
    """kohya's ``--tag_replacement`` syntax: ``source,target;source2,target2``, ``\\,`` and ``\\;`` standing for a
    comma or semicolon inside a tag. Items are trimmed and empty items (a trailing ``;``) skipped, where kohya
    keeps the spaces and refuses an empty item; an empty target removes the tag. OptionsError names the item.
    """
    escaped = text.replace("\\,", _ESCAPED_COMMA).replace("\\;", _ESCAPED_SEMICOLON)
    pairs = []
    for item in escaped.split(";"):
        if not item.strip():
            continue
        parts = [p.replace(_ESCAPED_COMMA, ",").replace(_ESCAPED_SEMICOLON, ";").strip() for p in item.split(",")]
        shown = item.replace(_ESCAPED_COMMA, "\\,").replace(_ESCAPED_SEMICOLON, "\\;").strip()
        if len(parts) != 2:
            raise OptionsError(
                "tag_replacement",
                f"{shown!r} is not source,target (write a comma inside a tag as \\, and a semicolon as \\;)",
            )
        if not parts[0]:
            raise OptionsError("tag_replacement", f"{shown!r} has no source tag before the comma")
        pairs.append((parts[0], parts[1]))
    return tuple(pairs)


def validate(opts: TagOptions) -> None:
    """Raise OptionsError naming the first field whose value is of the wrong kind or out of range."""
    for name, f in OPTION_FIELDS.items():
        value, default, meta = getattr(opts, name), f.default, f.metadata
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise OptionsError(name, f"expected true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise OptionsError(name, f"expected a number, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise OptionsError(name, f"expected a whole number, got {value!r}")
            if "ge" in meta and value < meta["ge"]:
                raise OptionsError(name, f"{value} is below the minimum {meta['ge']}")
            if "le" in meta and value > meta["le"]:
                raise OptionsError(name, f"{value} is above the maximum {meta['le']}")
        elif name == "category_thresholds":
            for category, number in value:
                if isinstance(number, bool) or not isinstance(number, (int, float)) or number != number:
                    raise OptionsError(name, f"{category}: expected a number, got {number!r}")
                if not meta["ge"] <= number <= meta["le"]:
                    raise OptionsError(name, f"{category}: {number} is outside {meta['ge']}..{meta['le']}")
        elif isinstance(default, tuple) and (
            not isinstance(value, tuple) or not all(isinstance(v, str) for v in value)
        ):
            raise OptionsError(name, f"expected a list of tags, got {value!r}")
        elif isinstance(default, str):
            choices = literal_choices(name)
            if choices and value not in choices:
                raise OptionsError(name, f"expected {' or '.join(repr(c) for c in choices)}, got {value!r}")
            if not isinstance(value, str):
                raise OptionsError(name, f"expected text, got {value!r}")
            if "max_length" in meta and len(value) > meta["max_length"]:
                raise OptionsError(name, f"longer than {meta['max_length']} characters")
    if not opts.separator.strip():
        raise OptionsError("separator", f"{opts.separator!r} holds no visible character; use e.g. ', ' or ','")
    parse_tag_replacement(opts.tag_replacement)


def options_from_mapping(data: Mapping[str, Any], *, base: TagOptions | None = None) -> TagOptions:
    """Build options from a dict (API body, saved preset), naming the field of any bad value.

    Unknown keys are refused; tag lists may be a comma-separated string or a list of strings.
    """
    unknown = set(data) - set(OPTION_FIELDS)
    if unknown:
        raise OptionsError(sorted(unknown)[0], f"unknown option; known options: {', '.join(OPTION_FIELDS)}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key in TAG_LIST_FIELDS:
            try:
                value = parse_tag_list(value)
            except OptionsError as e:
                raise OptionsError(key, e.problem) from None
        elif key == "max_tags" and isinstance(value, float) and value.is_integer():
            value = int(value)
        values[key] = value
    return replace(base or TagOptions(), **values)


def options_to_dict(opts: TagOptions) -> dict[str, Any]:
    """JSON-friendly dict (tag lists as lists)."""
    d = asdict(opts)
    for key in TAG_LIST_FIELDS:
        d[key] = list(d[key])
    d["category_thresholds"] = dict(opts.category_thresholds)
    return d
