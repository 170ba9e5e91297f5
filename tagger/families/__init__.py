"""Model families as data: a model is its files plus a ``ModelDescription`` (``description.py``).

``find_model`` tells what a folder holds, from the files the model repositories publish:

1. ``tagger.json``: the folder's own description (any ONNX tagger; README shows the format);
2. ``preprocess.json`` + ``selected_tags.csv``: deepghs' repackaged layout (the stages, ``threshold.json`` or
   ``thresholds.csv`` for default thresholds, the extra categories of the csv);
3. ``selected_tags.csv``: SmilingWolf's WD14 contract; ``tags-selected.csv``: Z3D-E621 (WD14's contract,
   e621's category numbers);
4. ``tag_mapping.json`` (or ``*_tag_mapping.json``): cl_tagger;
5. ``*-metadata.json`` with ``dataset_info``: Camie tagger v2;
6. ``classes.json`` / ``class.json``: ML-Danbooru;
7. a folder's only ``.csv`` file: WD14, as before.

The model file is ``model.onnx``, else the description's, else the folder's only ``.onnx`` file. Catalog
models are described by their catalog entry instead (``catalog.py``), whatever else lies in their folder.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from tagger.errors import ModelFormatError
from tagger.families.description import DESCRIPTION_FILE, WD14, ModelDescription, from_dict
from tagger.families.known import CAMIE_V2, CL_TAGGER, DEEPGHS, MLDANBOORU, Z3D

log = logging.getLogger(__name__)

PREPROCESS_FILE = "preprocess.json"
THRESHOLD_JSON = "threshold.json"
THRESHOLDS_CSV = "thresholds.csv"
# What a folder's tag list may be called, in the order they are looked for (after tagger.json).
LABEL_FILE_HINT = (
    "selected_tags.csv, tags-selected.csv, tag_mapping.json, *-metadata.json, classes.json or a tagger.json"
)


def usable(path: Path) -> bool:
    """A regular, non-empty file (a 0-byte file is a failed copy or download, not a model)."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _only(folder: Path, pattern: str, suffix: str) -> Path | None:
    found = sorted(p for p in folder.glob(pattern) if p.suffix.lower() == suffix and usable(p))
    if len(found) > 1:
        log.warning(
            "%s holds several %s files (%s): cannot tell which to use",
            folder,
            pattern,
            ", ".join(p.name for p in found),
        )
    return found[0] if len(found) == 1 else None


def pick_onnx(folder: Path, preferred: str = "model.onnx") -> Path | None:
    """``folder/preferred``, else ``model.onnx``, else the folder's only usable ``.onnx`` file."""
    for name in dict.fromkeys((preferred, "model.onnx")):
        if usable(folder / name):
            return folder / name
    return _only(folder, "*.onnx", ".onnx")


def _camie_metadata(folder: Path) -> Path | None:
    for path in sorted(folder.glob("*-metadata.json")):
        if usable(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    head = fh.read(4096)
            except (OSError, UnicodeDecodeError):
                continue
            if '"dataset_info"' in head:
                return path
    return None


def describe_folder(folder: Path) -> tuple[Path, ModelDescription] | None:
    """The tag list of ``folder`` and how to read it, from the files there (see the module docstring);
    None when the folder holds no tag list this project knows. A broken ``tagger.json`` raises
    ModelFormatError naming the file and key."""
    own = folder / DESCRIPTION_FILE
    if usable(own):
        try:
            data = json.loads(own.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ModelFormatError(f"{own}: not a readable JSON file ({e})") from e
        desc = from_dict(data, str(own))
        labels = folder / desc.labels.file
        if not usable(labels):
            raise ModelFormatError(f"{own}: its tag list {desc.labels.file} is not in {folder}")
        return labels, desc
    csv = folder / "selected_tags.csv"
    if usable(csv) and usable(folder / PREPROCESS_FILE):
        return csv, _deepghs(folder)
    if usable(csv):
        return csv, WD14
    if usable(folder / "tags-selected.csv"):
        return folder / "tags-selected.csv", Z3D
    mapping = folder / "tag_mapping.json"
    mapping = mapping if usable(mapping) else _only(folder, "*tag_mapping.json", ".json")
    if mapping is not None:
        return mapping, replace(CL_TAGGER, labels=replace(CL_TAGGER.labels, file=mapping.name))
    metadata = _camie_metadata(folder)
    if metadata is not None:
        return metadata, replace(CAMIE_V2, labels=replace(CAMIE_V2.labels, file=metadata.name))
    for name in ("classes.json", "class.json"):
        if usable(folder / name):
            return folder / name, replace(MLDANBOORU, labels=replace(MLDANBOORU.labels, file=name))
    only_csv = _only(folder, "*.csv", ".csv")
    if only_csv is not None and only_csv.name != THRESHOLDS_CSV:
        return only_csv, WD14
    return None


def _deepghs(folder: Path) -> ModelDescription:
    from tagger.families.readers import read_preprocess_json, read_threshold_json, read_thresholds_csv

    stages = read_preprocess_json(folder / PREPROCESS_FILE)
    thresholds: dict[str, float] = {}
    if usable(folder / THRESHOLD_JSON):
        thresholds = read_threshold_json(folder / THRESHOLD_JSON)
    elif usable(folder / THRESHOLDS_CSV):
        thresholds = read_thresholds_csv(folder / THRESHOLDS_CSV)
    return replace(DEEPGHS, fit=replace(DEEPGHS.fit, stages=stages), thresholds=thresholds)


def find_model(folder: Path, description: ModelDescription | None = None) -> tuple[Path, Path, ModelDescription] | None:
    """``(model file, tag list, description)`` of ``folder``, or None when it holds no model.

    ``description`` (a catalog model's) says which files to look for; without it the folder's files say
    what it is (``describe_folder``).
    """
    folder = Path(folder)
    try:
        if not folder.is_dir():
            return None
    except OSError:
        return None
    if description is not None:
        labels = folder / description.labels.file
        onnx = pick_onnx(folder, description.model_file)
        if onnx is None or not usable(labels):
            return None
        return onnx, labels, description.with_files(model_file=onnx.name)
    found = describe_folder(folder)
    if found is None:
        return None
    labels, desc = found
    onnx = pick_onnx(folder, desc.model_file)
    if onnx is None:
        return None
    return onnx, labels, desc.with_files(model_file=onnx.name, labels_file=labels.name)


__all__ = ["DESCRIPTION_FILE", "WD14", "ModelDescription", "describe_folder", "find_model", "from_dict"]
