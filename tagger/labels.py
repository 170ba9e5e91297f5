"""The tag list of a model, split by category, never by position.

Rows carry a category number; a model's description names the numbers (``families.description``:
SmilingWolf's csv files use Danbooru's 9 rating, 0 general, 4 character; newer taggers add 1 artist,
3 copyright, 5 meta, 10 year and more). ``rating``, ``general`` and ``character`` are the categories every
front end knows; the others are in ``groups`` by name and listed by ``extra``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagger.errors import ModelFormatError
from tagger.families.description import BOORU_CATEGORIES, CORE_CATEGORIES

RATING, GENERAL, CHARACTER = 9, 0, 4
# The order extra categories are listed in (prompt ties, the page's controls); others follow by number.
EXTRA_ORDER = ("copyright", "artist", "species", "meta", "lore", "year", "quality", "model")
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Labels:
    names: tuple[str, ...]
    categories: np.ndarray  # int array, one per output row
    rating: np.ndarray  # indices into the output vector
    general: np.ndarray
    character: np.ndarray
    groups: Mapping[str, np.ndarray] = field(default_factory=dict)  # every category by name
    single: tuple[str, ...] = ()  # categories of which only the most probable label counts (besides rating)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def extra(self) -> tuple[str, ...]:
        """The categories besides rating, general and character, in a stable order."""
        return tuple(name for name in self.groups if name not in CORE_CATEGORIES)

    def category_of(self, index: int) -> str:
        """The name of the category of label ``index`` (rating, general, character, copyright, ...)."""
        for name, idx in self.groups.items():
            k = int(np.searchsorted(idx, index))
            if k < len(idx) and idx[k] == index:
                return name
        raise IndexError(f"label {index} of {len(self)}")

    @classmethod
    def from_rows(
        cls,
        rows: list[tuple[str, int]],
        category_names: Mapping[int, str] | None = None,
        *,
        single: tuple[str, ...] = (),
    ) -> Labels:
        """Labels from ``(name, category number)`` rows; ``category_names`` names the numbers (Danbooru's by
        default; a number without a name becomes ``category_N``)."""
        names = tuple(name for name, _ in rows)
        cats = np.asarray([cat for _, cat in rows], dtype=np.int16)
        mapping = BOORU_CATEGORIES if category_names is None else category_names
        by_name: dict[str, list[int]] = {}
        for code in sorted({int(c) for c in cats}):
            by_name.setdefault(mapping.get(code, f"category_{code}"), []).append(code)
        order = [*CORE_CATEGORIES, *EXTRA_ORDER]
        ranked = sorted(by_name, key=lambda n: (order.index(n) if n in order else len(order), min(by_name[n])))
        groups = {name: np.flatnonzero(np.isin(cats, by_name[name])) for name in ranked}
        return cls(
            names=names,
            categories=cats,
            rating=groups.get("rating", _EMPTY),
            general=groups.get("general", _EMPTY),
            character=groups.get("character", _EMPTY),
            groups=groups,
            single=tuple(s for s in single if s in groups and s != "rating"),
        )


def read_labels(path: Path, category_names: Mapping[int, str] | None = None, *, single: tuple[str, ...] = ()) -> Labels:
    """Parse a tags csv (columns ``name`` and ``category``; SmilingWolf's ``tag_id,name,category,count``) with a
    real CSV parser."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or ())
            if not {"name", "category"} <= fields:
                raise ModelFormatError(
                    f"{path}: not a WD14 tags file (columns {sorted(fields)}; expected tag_id,name,category,count)"
                )
            rows = []
            for line_no, row in enumerate(reader, start=2):
                try:
                    rows.append((row["name"] or "", int(row["category"])))
                except (TypeError, ValueError) as e:
                    raise ModelFormatError(f"{path}, line {line_no}: bad category {row.get('category')!r}") from e
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{path}: not a UTF-8 csv file ({e})") from e
    if not rows:
        raise ModelFormatError(f"{path}: the tags file holds no tags")
    labels = Labels.from_rows(rows, category_names, single=single)
    if len(labels.rating) == 0 and len(labels.general) == 0:
        raise ModelFormatError(f"{path}: no rating (9) or general (0) rows: not a WD14 tags file")
    return labels
