"""What a tagger model is besides its weights: how to feed it and how to read its answer, as data.

A ``ModelDescription`` says everything the code used to assume about WD14: the input tensor (layout, size,
channel order, value scale, mean/std), how an image is fitted to it (padded to a square, letterboxed,
stretched, or a list of torchvision-like stages), which output is the prediction and whether it needs a
sigmoid, an optional embedding output, where the tag names are and what their category numbers mean, and
the model's own default thresholds. WD14 is one such description (``WD14``); the catalog holds one per
family, and a local folder can carry its own as ``tagger.json`` (``from_dict`` reads it; README shows one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tagger.errors import ModelFormatError

DESCRIPTION_FILE = "tagger.json"

LAYOUTS = ("NHWC", "NCHW")
CHANNELS = ("RGB", "BGR")
FITS = ("pad", "letterbox", "stretch", "stages")
ACTIVATIONS = ("none", "sigmoid")
RESIZE_FILTERS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
LABEL_FORMATS = ("csv", "tag-mapping", "camie-metadata", "name-list")

# Category numbers as Danbooru (and SmilingWolf's csv files) use them; a description may map others.
BOORU_CATEGORIES: dict[int, str] = {
    0: "general",
    1: "artist",
    3: "copyright",
    4: "character",
    5: "meta",
    9: "rating",
    10: "year",
}
# e621's numbering (Z3D-E621-Convnext's tags-selected.csv): 5 is species there, not meta.
E621_CATEGORIES: dict[int, str] = {
    0: "general",
    1: "artist",
    3: "copyright",
    4: "character",
    5: "species",
    6: "invalid",
    7: "meta",
    8: "lore",
}
# Category names every front end knows by name (rating, general and character are the fixed ones).
CORE_CATEGORIES = ("rating", "general", "character")


@dataclass(frozen=True)
class InputSpec:
    """The input tensor. Pixel values 0..255 are multiplied by ``scale``, then ``(x - mean) / std``."""

    layout: str = "NHWC"
    size: int | None = None  # the square side; None: read it from the model's input shape
    channels: str = "BGR"
    scale: float = 1.0  # 1: values 0..255; 1/255: values 0..1 (torchvision's to_tensor)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class FitSpec:
    """How an image (RGB, transparency already flattened onto white) becomes a ``size`` x ``size`` square.

    - ``pad``: pad to a square of the longer side with ``pad_color`` (image centred), resize to the size;
    - ``letterbox``: resize so that the longer side is the size (the other side truncated to an integer),
      paste centred on a square of ``pad_color``;
    - ``stretch``: resize to the size, aspect ratio not kept;
    - ``stages``: run ``stages`` (a deepghs ``preprocess.json`` list); they make the whole tensor.
    """

    mode: str = "pad"
    pad_color: tuple[int, int, int] = (255, 255, 255)
    resize: str = "bicubic"
    stages: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class OutputSpec:
    # The prediction output: its name, or its position (0 first); None: "prediction" or "output" if the model
    # has one (deepghs' exports), else the first.
    prediction: str | int | None = None
    activation: str = "none"  # "sigmoid" when the output holds logits
    embedding: str | None = None  # output name of an image embedding, when the model has one


@dataclass(frozen=True)
class LabelsSpec:
    file: str = "selected_tags.csv"
    format: str = "csv"
    categories: Mapping[int, str] = field(default_factory=lambda: dict(BOORU_CATEGORIES))


@dataclass(frozen=True)
class ModelDescription:
    family: str
    input: InputSpec = InputSpec()
    fit: FitSpec = FitSpec()
    output: OutputSpec = OutputSpec()
    labels: LabelsSpec = LabelsSpec()
    model_file: str = "model.onnx"
    # The model's own default threshold per category name (general, character, copyright, ...).
    thresholds: Mapping[str, float] = field(default_factory=dict)
    # Categories of which only the most probable label counts (as with ratings), e.g. cl_tagger's quality.
    single: tuple[str, ...] = ()

    @property
    def is_wd14_contract(self) -> bool:
        """True for SmilingWolf's contract, which the fast WD14 preprocessing (``images.prepare``) serves."""
        return (
            self.input.layout == "NHWC"
            and self.input.channels == "BGR"
            and self.input.scale == 1.0
            and tuple(self.input.mean) == (0.0, 0.0, 0.0)
            and tuple(self.input.std) == (1.0, 1.0, 1.0)
            and self.fit.mode == "pad"
            and tuple(self.fit.pad_color) == (255, 255, 255)
            and self.fit.resize == "bicubic"
        )

    def with_files(self, *, model_file: str | None = None, labels_file: str | None = None) -> ModelDescription:
        labels = replace(self.labels, file=labels_file) if labels_file else self.labels
        return replace(self, model_file=model_file or self.model_file, labels=labels)

    def to_dict(self) -> dict[str, Any]:
        """The ``tagger.json`` form (``from_dict`` reads it back)."""
        out: dict[str, Any] = {
            "family": self.family,
            "model": self.model_file,
            "labels": {
                "file": self.labels.file,
                "format": self.labels.format,
                "categories": {str(k): v for k, v in sorted(self.labels.categories.items())},
            },
            "input": {
                "layout": self.input.layout,
                "size": self.input.size,
                "channels": self.input.channels,
                "scale": self.input.scale,
                "mean": list(self.input.mean),
                "std": list(self.input.std),
            },
            "fit": {"mode": self.fit.mode, "pad_color": list(self.fit.pad_color), "resize": self.fit.resize},
            "output": {
                "prediction": self.output.prediction,
                "activation": self.output.activation,
                "embedding": self.output.embedding,
            },
            "thresholds": dict(self.thresholds),
            "single": list(self.single),
        }
        if self.fit.stages:
            out["fit"]["stages"] = [dict(s) for s in self.fit.stages]
        return out


WD14 = ModelDescription(family="wd14")  # SmilingWolf's csv files hold 9 rating, 0 general, 4 character


# -- reading tagger.json ---------------------------------------------------------------------------------


class _Reader:
    """Typed access to one JSON object, naming ``where`` (file and key) in every complaint."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise ModelFormatError(f"{where}: expected an object, got {type(data).__name__}")
        self.data, self.where = data, where

    def _bad(self, key: str, want: str, value: Any) -> ModelFormatError:
        return ModelFormatError(f"{self.where}.{key}: expected {want}, got {value!r}")

    def get(self, key: str, default: Any) -> Any:
        value = self.data.get(key, default)
        return default if value is None else value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(key, default)
        if not isinstance(value, str):
            raise self._bad(key, f"one of {', '.join(choices)}", value)
        norm = value.strip()
        match = next((c for c in choices if c.lower() == norm.lower()), None)
        if match is None:
            raise self._bad(key, f"one of {', '.join(choices)}", value)
        return match

    def number(self, key: str, default: float, *, positive: bool = False) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._bad(key, "a number", value)
        if positive and value <= 0:
            raise self._bad(key, "a number above 0", value)
        return float(value)

    def triple(self, key: str, default: tuple[float, float, float], *, nonzero: bool = False) -> tuple[float, ...]:
        value = self.get(key, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value] * 3
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value)
            or (nonzero and any(v == 0 for v in value))
        ):
            raise self._bad(key, "three numbers (one per channel, R G B)" + (", none 0" if nonzero else ""), value)
        return tuple(float(v) for v in value)

    def text(self, key: str, default: str | None) -> str | None:
        value = self.data.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self._bad(key, "a name", value)
        return value.strip() if isinstance(value, str) else None

    def sub(self, key: str) -> _Reader:
        return _Reader(self.data.get(key) or {}, f"{self.where}.{key}")


def _output_ref(out: _Reader, default: str | int | None) -> str | int | None:
    value = out.data.get("prediction", default)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ModelFormatError(f"{out.where}.prediction: an output position is 0 or more, got {value}")
        return value
    return out.text("prediction", default if not isinstance(default, int) else None)


def from_dict(data: Any, where: str = DESCRIPTION_FILE, *, base: ModelDescription = WD14) -> ModelDescription:
    """A description from its ``tagger.json`` form; fields left out keep ``base``'s (WD14's) values.

    Raises ModelFormatError naming the file and key of a bad value.
    """
    top = _Reader(data, where)
    unknown = set(top.data) - {"family", "model", "labels", "input", "fit", "output", "thresholds", "single", "note"}
    if unknown:
        raise ModelFormatError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; known keys: family, model, labels, input, fit, output, "
            "thresholds, single, note"
        )
    inp, fit, out, lab = top.sub("input"), top.sub("fit"), top.sub("output"), top.sub("labels")
    size = inp.get("size", base.input.size)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ModelFormatError(f"{where}.input.size: expected a whole number of pixels, got {size!r}")
    color = fit.triple("pad_color", base.fit.pad_color)
    if any(not float(c).is_integer() or not 0 <= c <= 255 for c in color):
        raise ModelFormatError(f"{where}.fit.pad_color: expected three whole numbers 0..255, got {color!r}")
    stages = fit.get("stages", list(base.fit.stages))
    if not isinstance(stages, list) or not all(isinstance(s, Mapping) and "type" in s for s in stages):
        raise ModelFormatError(f"{where}.fit.stages: expected a list of stages, each an object with a 'type'")
    mode = fit.choice("mode", "stages" if stages and "mode" not in fit.data else base.fit.mode, FITS)
    if mode == "stages" and not stages:
        raise ModelFormatError(f"{where}.fit: mode 'stages' needs a list of stages in fit.stages")
    categories = lab.get("categories", None)
    if categories is None:
        cats = dict(base.labels.categories)
    else:
        if not isinstance(categories, Mapping):
            raise ModelFormatError(f"{where}.labels.categories: expected an object of number -> name")
        cats = {}
        for k, v in categories.items():
            try:
                code = int(k)
            except (TypeError, ValueError):
                raise ModelFormatError(f"{where}.labels.categories: {k!r} is not a category number") from None
            if not isinstance(v, str) or not v.strip():
                raise ModelFormatError(f"{where}.labels.categories.{k}: expected a category name, got {v!r}")
            cats[code] = v.strip().lower()
    thresholds = top.get("thresholds", dict(base.thresholds))
    if not isinstance(thresholds, Mapping) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in thresholds.values()
    ):
        raise ModelFormatError(f"{where}.thresholds: expected an object of category name -> number 0..1")
    single = top.get("single", list(base.single))
    if not isinstance(single, list) or not all(isinstance(s, str) for s in single):
        raise ModelFormatError(f"{where}.single: expected a list of category names")
    return ModelDescription(
        family=str(top.get("family", "custom")),
        input=InputSpec(
            layout=inp.choice("layout", base.input.layout, LAYOUTS),
            size=size,
            channels=inp.choice("channels", base.input.channels, CHANNELS),
            scale=inp.number("scale", base.input.scale, positive=True),
            mean=inp.triple("mean", base.input.mean),  # type: ignore[arg-type]
            std=inp.triple("std", base.input.std, nonzero=True),  # type: ignore[arg-type]
        ),
        fit=FitSpec(
            mode=mode,
            pad_color=tuple(int(c) for c in color),  # type: ignore[arg-type]
            resize=fit.choice("resize", base.fit.resize, RESIZE_FILTERS),
            stages=tuple(dict(s) for s in stages),
        ),
        output=OutputSpec(
            prediction=_output_ref(out, base.output.prediction),
            activation=out.choice("activation", base.output.activation, ACTIVATIONS),
            embedding=out.text("embedding", base.output.embedding),
        ),
        labels=LabelsSpec(
            file=lab.text("file", base.labels.file) or base.labels.file,
            format=lab.choice("format", base.labels.format, LABEL_FORMATS),
            categories=cats,
        ),
        model_file=top.text("model", base.model_file) or base.model_file,
        thresholds={str(k).strip().lower(): float(v) for k, v in thresholds.items()},
        single=tuple(s.strip().lower() for s in single),
    )
