"""The tag list of a model (``selected_tags.csv``), split by category, never by position."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.errors import ModelFormatError

RATING, GENERAL, CHARACTER = 9, 0, 4


@dataclass(frozen=True)
class Labels:
    names: tuple[str, ...]
    categories: np.ndarray  # int array, one per output row
    rating: np.ndarray  # indices into the output vector
    general: np.ndarray
    character: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_rows(cls, rows: list[tuple[str, int]]) -> Labels:
        names = tuple(name for name, _ in rows)
        cats = np.asarray([cat for _, cat in rows], dtype=np.int16)
        return cls(
            names=names,
            categories=cats,
            rating=np.flatnonzero(cats == RATING),
            general=np.flatnonzero(cats == GENERAL),
            character=np.flatnonzero(cats == CHARACTER),
        )


def read_labels(path: Path) -> Labels:
    """Parse a WD14 tags csv (columns ``tag_id,name,category,count``) with a real CSV parser."""
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
                    rows.append((row["name"], int(row["category"])))
                except (TypeError, ValueError) as e:
                    raise ModelFormatError(f"{path}, line {line_no}: bad category {row.get('category')!r}") from e
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{path}: not a UTF-8 csv file ({e})") from e
    if not rows:
        raise ModelFormatError(f"{path}: the tags file holds no tags")
    labels = Labels.from_rows(rows)
    if len(labels.rating) == 0 and len(labels.general) == 0:
        raise ModelFormatError(f"{path}: no rating (9) or general (0) rows: not a WD14 tags file")
    return labels
