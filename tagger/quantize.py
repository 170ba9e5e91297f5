"""The int8 fast path (opt-in): a dynamically quantised copy of a model, and a check of what it costs in tags.

``quantize_model`` writes ``<models_dir>/<name>-int8/`` (``model.onnx`` with int8 MatMul/Gemm weights and
the same ``selected_tags.csv``), a local model that every front end lists and loads like any other; nothing
ever picks it unless the user does. ``validate_quantized`` runs both models over the user's own images and
reports how far their tags agree (mean F1 of the tag sets at the chosen options, largest probability
difference) and how fast each was.

Quantising needs the ``onnx`` package besides onnxruntime (``onnxruntime.quantization`` imports it);
using the quantised model afterwards needs only onnxruntime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tagger.errors import TaggerError
from tagger.families.description import DESCRIPTION_FILE, WD14
from tagger.hub import ModelFiles, resolve_model
from tagger.options import TagOptions
from tagger.paths import name_problem
from tagger.validate import Side, ValidationReport, compare

log = logging.getLogger(__name__)

__all__ = ["INT8_SUFFIX", "QuantizeError", "quantize_model", "validate_quantized"]

INT8_SUFFIX = "-int8"
INFO_FILE = "quantization.json"  # written next to the quantised model: where it came from, how it was made
OP_TYPES = ("MatMul", "Gemm")
# Signed int8 weights: onnxruntime then multiplies uint8 activations by int8 weights (U8S8), which uses the
# VNNI/AMX int8 instructions of current x86 CPUs. Measured on the ViT-B stand-in (2-core AVX-512 VNNI Xeon):
# QInt8 ~2.3x faster than fp32, QUInt8 only ~1.1x. On CPUs without VNNI, U8S8 can saturate and cost some
# accuracy: ``validate_quantized`` is how a user sees it on their own images.
WEIGHT_TYPE = "QInt8"


class QuantizeError(TaggerError):
    """The model could not be quantised (missing ``onnx`` package, unreadable model, existing output...)."""


# -- quantising -----------------------------------------------------------------------------------------


def _quantization_api() -> Any:
    try:
        import onnx  # noqa: F401  (onnxruntime.quantization needs it and fails obscurely without it)
        from onnxruntime import quantization
    except ImportError as e:
        missing = getattr(e, "name", None) or "onnx"
        raise QuantizeError(
            f"quantising a model needs the '{missing}' package, which is not installed: pip install onnx "
            "(only for making the int8 copy; running it needs onnxruntime alone)"
        ) from e
    return quantization


def int8_name(name: str) -> str:
    """The folder name of the int8 copy of model ``name`` (a catalog name, folder name or path)."""
    base = Path(name).name if (os.sep in name or (os.altsep and os.altsep in name)) else name
    return f"{base}{INT8_SUFFIX}"


def quantize_model(
    files_or_name: ModelFiles | str,
    models_dir: str | os.PathLike[str],
    *,
    out_name: str | None = None,
    overwrite: bool = False,
    download: bool = True,
) -> Path:
    """Write a dynamically quantised int8 copy of a model as the local model folder ``models_dir/<out_name>``.

    ``files_or_name`` is a resolved ``ModelFiles`` or a model name (catalog name, local folder name or folder
    path; a catalog model is downloaded first when ``download``). ``out_name`` defaults to ``<name>-int8``.
    MatMul and Gemm weights become int8 (per tensor, dynamic activation quantisation); convolutions and the
    rest stay float32. The tag list is copied unchanged; a model run other than by the WD14 contract gets its
    description written beside it as ``tagger.json``. Returns the new folder.

    Raises ``QuantizeError`` (the ``onnx`` package missing, the folder exists and ``overwrite`` is false, the
    model cannot be quantised) or the errors of ``hub.resolve_model``.
    """
    models_dir = Path(models_dir).expanduser()
    if isinstance(files_or_name, ModelFiles):
        files = files_or_name
    else:
        files = resolve_model(files_or_name, models_dir, download=download, progress=True)
    api = _quantization_api()
    name = out_name or int8_name(files.name)
    problem = name_problem(name)
    if problem:
        raise QuantizeError(f"{name!r} cannot be the quantised model's folder name: {problem}")
    target = models_dir / name
    if target.resolve() == files.model_path.parent.resolve():
        raise QuantizeError(f"{target} is the source model's own folder; choose another name")
    if target.exists() and not overwrite:
        raise QuantizeError(f"{target} already exists; delete it or pass overwrite=True (--force) to replace it")

    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=models_dir))
    try:
        start = time.perf_counter()
        log.info("quantising %s to int8 (MatMul/Gemm weights) in %s", files.model_path, target)
        try:
            api.quantize_dynamic(
                model_input=str(files.model_path),
                model_output=str(staging / "model.onnx"),
                op_types_to_quantize=list(OP_TYPES),
                weight_type=getattr(api.QuantType, WEIGHT_TYPE),
                per_channel=False,
                reduce_range=False,
                extra_options={"MatMulConstBOnly": True},  # weights only: activation x activation stays float
            )
        except MemoryError as e:
            raise QuantizeError(f"not enough memory to quantise {files.model_path}") from e
        except Exception as e:  # onnx / onnxruntime raise many types for a model they cannot handle
            raise QuantizeError(f"{files.name}: could not be quantised ({type(e).__name__}: {e})") from e
        desc = files.description or WD14
        if desc == WD14:
            shutil.copyfile(files.tags_path, staging / "selected_tags.csv")
        else:  # the copy is a local folder: it carries the description its source was run by
            shutil.copyfile(files.tags_path, staging / files.tags_path.name)
            own = desc.with_files(model_file="model.onnx", labels_file=files.tags_path.name).to_dict()
            (staging / DESCRIPTION_FILE).write_text(json.dumps(own, indent=2) + "\n", encoding="utf-8")
        info = {
            "source_model": files.model_id,
            "source_file": files.model_path.name,
            "method": "onnxruntime.quantization.quantize_dynamic",
            "op_types": list(OP_TYPES),
            "weight_type": WEIGHT_TYPE,
            "onnxruntime": _ort_version(),
            "seconds": round(time.perf_counter() - start, 1),
        }
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if target.exists():  # overwrite: the old copy goes only once the new one is complete
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _ort_version() -> str:
    try:
        import onnxruntime

        return str(onnxruntime.__version__)
    except ImportError:  # pragma: no cover - checked before
        return "?"


# -- validating -------------------------------------------------------------------------------------------


def validate_quantized(
    tagger: Any,
    fp32_name: str,
    int8_name: str,
    folder: str | os.PathLike[str],
    options: TagOptions | None = None,
    *,
    recursive: bool = False,
    limit: int | None = None,
    chunk: int = 32,
) -> ValidationReport:
    """Tag the images of ``folder`` with the model and its int8 copy and compare (``tagger.validate.compare``)."""
    fp32_model, int8_model = tagger.load(fp32_name), tagger.load(int8_name)
    if list(fp32_model.labels.names) != list(int8_model.labels.names):
        raise TaggerError(f"{int8_name} and {fp32_name} have different tag lists: not a quantised copy")
    return compare(Side(tagger, fp32_name), Side(tagger, int8_name), folder, options, recursive=recursive,
                   limit=limit, chunk=chunk)  # fmt: skip
