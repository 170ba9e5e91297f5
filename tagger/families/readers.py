"""Readers for the files the model repositories publish besides the weights.

- tag lists: SmilingWolf's ``selected_tags.csv`` (and csv files like it: deepghs' repackaged models,
  Z3D's ``tags-selected.csv``); cl_tagger's ``tag_mapping.json``; Camie v2's ``*-metadata.json``; a plain
  list of names (ML-Danbooru's ``classes.json``);
- default thresholds: deepghs' ``threshold.json`` (Camie, per category and mode) and ``thresholds.csv``
  (PixAI, per category);
- deepghs' ``preprocess.json``: ``{"stages": [...]}``.

Every problem names the file and what is wrong with it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tagger.errors import ModelFormatError
from tagger.families.description import BOORU_CATEGORIES, LabelsSpec
from tagger.labels import Labels, read_labels

# A category named in a JSON tag list gets Danbooru's number when it has one, else one of these.
_NAMED_CODES = {name: code for code, name in BOORU_CATEGORIES.items()}
_FIRST_FREE_CODE = 100
THRESHOLD_MODE = "balanced"  # the threshold.json mode imgutils picks by default (Camie)


def load_labels(spec: LabelsSpec, path: Path, *, single: tuple[str, ...] = ()) -> Labels:
    """The tag list at ``path``, read as ``spec.format`` says."""
    if spec.format == "csv":
        return read_labels(path, spec.categories, single=single)
    data = _json(path)
    if spec.format == "tag-mapping":
        pairs = _tag_mapping(data, path)
    elif spec.format == "camie-metadata":
        pairs = _camie_metadata(data, path)
    elif spec.format == "name-list":
        pairs = _name_list(data, path)
    else:  # pragma: no cover - the description's reader refuses other formats
        raise ModelFormatError(f"{path}: unknown tag list format {spec.format!r}")
    codes: dict[str, int] = {}
    rows = []
    for name, category in pairs:
        if category not in codes:
            codes[category] = _NAMED_CODES.get(category, _FIRST_FREE_CODE + len(codes))
        rows.append((name, codes[category]))
    if not rows:
        raise ModelFormatError(f"{path}: the tag list holds no tags")
    return Labels.from_rows(rows, {code: name for name, code in codes.items()}, single=single)


def _json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{path}: not a UTF-8 text file ({e})") from e
    except ValueError as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from e


def _in_order(index_to_name: Mapping[Any, Any], path: Path, what: str) -> list[tuple[int, Any]]:
    """``{"0": x, "1": y, ...}`` as ``[(0, x), (1, y), ...]``, refusing gaps and non-numbers."""
    items = []
    for key, value in index_to_name.items():
        try:
            items.append((int(key), value))
        except (TypeError, ValueError):
            raise ModelFormatError(f"{path}: {what} key {key!r} is not an output index") from None
    items.sort(key=lambda kv: kv[0])
    for expected, (index, _) in enumerate(items):
        if index != expected:
            raise ModelFormatError(f"{path}: {what} has no entry for output {expected} (next is {index})")
    return items


def _category(value: Any) -> str:
    return str(value).strip().lower() if value is not None and str(value).strip() else "general"


def _tag_mapping(data: Any, path: Path) -> list[tuple[str, str]]:
    """cl_tagger: ``{"0": {"tag": ..., "category": "General"}, ...}`` (or ``idx_to_tag``/``tag_to_category``)."""
    if isinstance(data, Mapping) and "idx_to_tag" in data:
        return _idx_to_tag(data, path)
    if not isinstance(data, Mapping) or not data:
        raise ModelFormatError(f"{path}: expected an object of output index -> {{tag, category}}")
    out = []
    for index, item in _in_order(data, path, "the tag mapping"):
        if not isinstance(item, Mapping) or not isinstance(item.get("tag"), str):
            raise ModelFormatError(f'{path}: entry {index} has no \'tag\' (expected {{"tag": ..., "category": ...}})')
        out.append((item["tag"], _category(item.get("category"))))
    return out


def _idx_to_tag(data: Mapping[str, Any], path: Path) -> list[tuple[str, str]]:
    idx_to_tag, tag_to_category = data.get("idx_to_tag"), data.get("tag_to_category") or {}
    if not isinstance(idx_to_tag, Mapping) or not isinstance(tag_to_category, Mapping):
        raise ModelFormatError(f"{path}: idx_to_tag and tag_to_category must be objects")
    out = []
    for index, tag in _in_order(idx_to_tag, path, "idx_to_tag"):
        if not isinstance(tag, str):
            raise ModelFormatError(f"{path}: idx_to_tag entry {index} is not a tag name")
        out.append((tag, _category(tag_to_category.get(tag))))
    return out


def _camie_metadata(data: Any, path: Path) -> list[tuple[str, str]]:
    """Camie v2: ``{"dataset_info": {"tag_mapping": {"idx_to_tag": ..., "tag_to_category": ...}}}``."""
    if isinstance(data, Mapping):
        mapping = (data.get("dataset_info") or {}).get("tag_mapping") if "dataset_info" in data else data
        if isinstance(mapping, Mapping) and "idx_to_tag" in mapping:
            return _idx_to_tag(mapping, path)
    raise ModelFormatError(f"{path}: no dataset_info.tag_mapping.idx_to_tag: not a Camie metadata file")


def _name_list(data: Any, path: Path) -> list[tuple[str, str]]:
    """ML-Danbooru: a list of tag names in output order, or ``{"0": name, ...}``; every tag is general."""
    if isinstance(data, list):
        items = list(enumerate(data))
    elif isinstance(data, Mapping):
        items = _in_order(data, path, "the name list")
    else:
        raise ModelFormatError(f"{path}: expected a list of tag names")
    bad = next((i for i, name in items if not isinstance(name, str)), None)
    if bad is not None:
        raise ModelFormatError(f"{path}: entry {bad} is not a tag name")
    return [(name, "general") for _, name in items]


# -- default thresholds ------------------------------------------------------------------------------------


def read_threshold_json(path: Path, mode: str = THRESHOLD_MODE) -> dict[str, float]:
    """deepghs' ``threshold.json``: ``{category: {mode: {"threshold": x}}}`` -> ``{category: x}`` for ``mode``."""
    data = _json(path)
    if not isinstance(data, Mapping):
        raise ModelFormatError(f"{path}: expected an object of category -> mode -> threshold")
    out = {}
    for category, modes in data.items():
        entry = modes.get(mode) if isinstance(modes, Mapping) else None
        value = entry.get("threshold") if isinstance(entry, Mapping) else entry
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
            out[_category(category)] = float(value)
    return out


def read_thresholds_csv(path: Path, names: Mapping[int, str] | None = None) -> dict[str, float]:
    """deepghs' ``thresholds.csv`` (PixAI): columns ``category``, ``name``, ``threshold`` -> ``{name: x}``."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ModelFormatError(f"{path}: cannot be read as a csv file ({e})") from e
    out: dict[str, float] = {}
    for line_no, row in enumerate(rows, start=2):
        try:
            value = float(row["threshold"])
            name = (row.get("name") or "").strip() or (names or BOORU_CATEGORIES)[int(row["category"])]
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(f"{path}, line {line_no}: expected columns category, name, threshold") from None
        if 0 <= value <= 1:
            out.setdefault(_category(name), value)
    return out


def read_preprocess_json(path: Path) -> tuple[dict[str, Any], ...]:
    """deepghs' ``preprocess.json``: the list under ``stages``."""
    data = _json(path)
    stages = data.get("stages") if isinstance(data, Mapping) else None
    if not isinstance(stages, list) or not all(isinstance(s, Mapping) and "type" in s for s in stages):
        raise ModelFormatError(f'{path}: expected {{"stages": [{{"type": ...}}, ...]}}')
    return tuple(dict(s) for s in stages)
