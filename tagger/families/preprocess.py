"""From a loaded image (RGB, transparency flattened onto white, EXIF applied: ``images.load_image``) to the
tensor a model described by a ``ModelDescription`` takes, one image at a time (no batch axis).

The WD14 contract keeps its fast path (``images.prepare``: resize the image band, then pad; the reference
tensor within rounding). Every other description is followed literally: the fit (pad, letterbox, stretch),
then the value scale, mean/std (per channel R, G, B), channel order and layout; or deepghs' torchvision-like
stages, interpreted as ``imgutils.preprocess.pillow`` does (types resize, center_crop, to_tensor,
maybe_to_tensor, normalize, rescale, convert_rgb).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from tagger import images
from tagger.errors import ModelFormatError
from tagger.families.description import FitSpec, InputSpec, ModelDescription

Preparer = Callable[[Image.Image], np.ndarray]

FILTERS: dict[str, int] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# torchvision's / PIL's integer interpolation codes, as imgutils accepts them in preprocess.json.
_INT_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def make_preparer(desc: ModelDescription, size: int) -> Preparer:
    """The function that turns one loaded image into the model's input tensor of side ``size``."""
    if desc.fit.mode == "stages":
        run = compile_stages(desc.fit.stages, "preprocess stages")
        return lambda img: _stages_tensor(run(img), desc.input, size)
    if desc.is_wd14_contract:
        return lambda img: images.prepare(img, size)
    fit = desc.fit
    return lambda img: to_tensor(fit_image(img, size, fit), desc.input)


def fit_image(img: Image.Image, size: int, fit: FitSpec) -> Image.Image:
    """``img`` (RGB) fitted to a ``size`` x ``size`` square as ``fit`` says (see ``FitSpec``)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    width, height = img.size
    resample = FILTERS[fit.resize]
    color = tuple(int(c) for c in fit.pad_color)
    if fit.mode == "pad":
        side = max(width, height)
        if width != height:
            square = Image.new("RGB", (side, side), color)
            square.paste(img, ((side - width) // 2, (side - height) // 2))
            img = square
        return img if side == size else img.resize((size, size), resample)
    if fit.mode == "letterbox":
        aspect = width / height
        if aspect > 1:
            new_w, new_h = size, int(size / aspect)
        else:
            new_w, new_h = int(size * aspect), size
        new_w, new_h = max(1, new_w), max(1, new_h)
        canvas = Image.new("RGB", (size, size), color)
        canvas.paste(img.resize((new_w, new_h), resample), ((size - new_w) // 2, (size - new_h) // 2))
        return canvas
    if fit.mode == "stretch":
        return img if img.size == (size, size) else img.resize((size, size), resample)
    raise ModelFormatError(f"unknown fit mode {fit.mode!r}")  # pragma: no cover - refused when read


def to_tensor(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """A fitted RGB image as the input tensor: scaled, normalised, channels ordered, laid out."""
    arr = np.asarray(img, dtype=np.float32)
    if spec.scale != 1.0:
        arr = arr * np.float32(spec.scale)
    if tuple(spec.mean) != (0.0, 0.0, 0.0) or tuple(spec.std) != (1.0, 1.0, 1.0):
        arr = (arr - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    if spec.channels == "BGR":
        arr = arr[:, :, ::-1]
    if spec.layout == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _stages_tensor(out: Any, spec: InputSpec, size: int) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.ndim != 3:
        raise ModelFormatError("the preprocess stages did not make a tensor: they need a to_tensor stage")
    if out.shape != (3, size, size):
        raise ModelFormatError(
            f"the preprocess stages made a {'x'.join(map(str, out.shape))} tensor; the model takes 3x{size}x{size}"
        )
    if spec.channels == "BGR":
        out = out[::-1]
    if spec.layout == "NHWC":
        out = out.transpose(1, 2, 0)
    return np.ascontiguousarray(out, dtype=np.float32)


# -- deepghs' preprocess.json stages ---------------------------------------------------------------------


def _resample(value: Any, where: str) -> int:
    name = _INT_FILTERS.get(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(name, str) or name.lower() not in FILTERS:
        raise ModelFormatError(f"{where}: interpolation {value!r} is not one of {', '.join(FILTERS)}")
    return FILTERS[name.lower()]


def _sizes(value: Any, where: str) -> int | tuple[int, int]:
    """An int, or ``[h, w]`` (a one-item list is an int), as torchvision takes sizes."""
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ModelFormatError(f"{where}: size {value!r} is not a number of pixels or [height, width]")


def _stage_resize(p: Mapping[str, Any], where: str) -> Callable[[Any], Any]:
    size = _sizes(p.get("size"), where)
    resample = _resample(p.get("interpolation", "bilinear"), where)
    max_size = p.get("max_size")
    antialias = bool(p.get("antialias", True))
    if max_size is not None and not isinstance(size, int):
        raise ModelFormatError(f"{where}: max_size works only with a single size")

    def resize(img: Image.Image) -> Image.Image:
        w, h = img.size
        if isinstance(size, int):  # the shorter side becomes size (torchvision's rule)
            ow, oh = (size, int(size * h / w)) if w < h else (int(size * w / h), size)
            if max_size is not None and max(ow, oh) > max_size:
                ow, oh = (int(max_size * ow / oh), max_size) if oh > ow else (max_size, int(max_size * oh / ow))
        else:
            oh, ow = size
        if (ow, oh) == (w, h):
            return img
        if resample in (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC):
            return img.resize((ow, oh), resample, reducing_gap=None if antialias else 1.0)
        return img.resize((ow, oh), resample)

    return resize


def _stage_center_crop(p: Mapping[str, Any], where: str) -> Callable[[Any], Any]:
    size = _sizes(p.get("size"), where)
    ch, cw = (size, size) if isinstance(size, int) else size

    def crop(img: Image.Image) -> Image.Image:
        w, h = img.size
        if w < cw or h < ch:  # imgutils pads with black before cropping
            pad_w, pad_h = max(cw - w, 0), max(ch - h, 0)
            bigger = Image.new(img.mode, (w + pad_w, h + pad_h), (0, 0, 0))
            bigger.paste(img, (pad_w // 2, pad_h // 2))
            img, (w, h) = bigger, bigger.size
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch))

    return crop


def _pil_to_tensor(img: Any) -> np.ndarray:
    if isinstance(img, np.ndarray):
        return img
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)


def _stage_normalize(p: Mapping[str, Any], where: str) -> Callable[[Any], Any]:
    def vector(key: str) -> np.ndarray:
        value = p.get(key)
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ModelFormatError(f"{where}: {key} {value!r} is not a number or a list of numbers")
        return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)

    mean, std = vector("mean"), vector("std")
    if not np.all(std != 0):
        raise ModelFormatError(f"{where}: std must not be 0")

    def normalize(arr: Any) -> np.ndarray:
        if not isinstance(arr, np.ndarray):
            raise ModelFormatError(f"{where}: normalize needs a tensor: put a to_tensor stage before it")
        return (arr - mean) / std

    return normalize


def _stage_rescale(p: Mapping[str, Any], where: str) -> Callable[[Any], Any]:
    factor = p.get("rescale_factor", 1 / 255)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)):
        raise ModelFormatError(f"{where}: rescale_factor {factor!r} is not a number")
    f32 = np.float32(factor)
    return lambda arr: np.asarray(arr, dtype=np.float32) * f32


def _stage_convert_rgb(p: Mapping[str, Any], where: str) -> Callable[[Any], Any]:
    # The image is RGB already, its transparency flattened onto white when it was loaded.
    return lambda img: img


_STAGES: dict[str, Callable[[Mapping[str, Any], str], Callable[[Any], Any]]] = {
    "resize": _stage_resize,
    "center_crop": _stage_center_crop,
    "to_tensor": lambda p, where: _pil_to_tensor,
    "maybe_to_tensor": lambda p, where: _pil_to_tensor,
    "normalize": _stage_normalize,
    "rescale": _stage_rescale,
    "convert_rgb": _stage_convert_rgb,
}


def compile_stages(stages: Any, where: str) -> Callable[[Image.Image], Any]:
    """The stages as one function; ModelFormatError names a stage of an unknown type or with a bad value."""
    steps = []
    for i, stage in enumerate(stages):
        here = f"{where}[{i}]"
        kind = stage.get("type") if isinstance(stage, Mapping) else None
        if kind not in _STAGES:
            raise ModelFormatError(
                f"{here}: stage type {kind!r} is not known here (known: {', '.join(_STAGES)}); "
                "describe the model with a tagger.json instead (see README)"
            )
        steps.append(_STAGES[kind](stage, here))

    def run(img: Image.Image) -> Any:
        x: Any = img
        for step in steps:
            x = step(x)
        return x

    return run
