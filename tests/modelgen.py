"""Builds a small real ONNX model with the WD14 contract, for tests (no download, no torch).

Input ``[N, S, S, 3]`` float32 BGR 0..255, output ``[N, T]`` sigmoid probabilities. The graph takes the
mean of each colour channel and maps it linearly to logits, so which tags appear depends on the image:
a red image gets ``red_theme``, a green one ``hatsune_miku`` (a character) and so on. Some tags have a fixed
probability so that thresholds can be tested to the decimal.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATING, GENERAL, CHARACTER = 9, 0, 4
ARTIST, COPYRIGHT, META = 1, 3, 5


@dataclass(frozen=True)
class Row:
    name: str
    category: int
    weights: tuple[float, float, float]  # on mean B, G, R in 0..1
    bias: float


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


# Channel order in the graph is B, G, R (the model sees BGR).
ROWS: tuple[Row, ...] = (
    Row("general", RATING, (2.0, 2.0, 2.0), -2.0),
    Row("sensitive", RATING, (-2.0, -2.0, -2.0), 1.0),
    Row("questionable", RATING, (0, 0, 0), _logit(0.05)),
    Row("explicit", RATING, (0, 0, 0), _logit(0.01)),
    Row("red_theme", GENERAL, (-10.0, -10.0, 20.0), -6.0),
    Row("hatsune_miku", CHARACTER, (-10.0, 20.0, -10.0), -6.0),  # a character in the middle, not at the end
    Row("blue_theme", GENERAL, (20.0, -10.0, -10.0), -6.0),
    Row("white_background", GENERAL, (10.0, 10.0, 10.0), -27.0),  # mean > 0.9
    Row("dark", GENERAL, (-10.0, -10.0, -10.0), 7.0),  # mean < ~0.23
    Row("solo", GENERAL, (0, 0, 0), _logit(0.9)),
    Row("long_hair", GENERAL, (0, 0, 0), _logit(0.5)),
    Row("pokemon_(creature)", GENERAL, (0, 0, 0), _logit(0.6)),
    Row("^_^", GENERAL, (0, 0, 0), _logit(0.7)),
    Row('tag "quoted", comma\'s', GENERAL, (0, 0, 0), _logit(0.4)),
    Row("low_probability", GENERAL, (0, 0, 0), _logit(0.1)),
    Row("kirisame_marisa", CHARACTER, (0, 0, 0), _logit(0.88)),
    Row("hakurei_reimu", CHARACTER, (0, 0, 0), _logit(0.3)),
    Row("smile", GENERAL, (0, 0, 0), _logit(0.36)),
    Row("shiroko_(blue_archive)", CHARACTER, (0, 0, 0), _logit(0.15)),  # name_(series), under every default
)
NAMES = tuple(r.name for r in ROWS)
# A model with Danbooru's other categories as well (deepghs' csv files carry them): copyright at 0.5 (below the
# character threshold that copyright falls back to), an artist at 0.3, a meta tag at 0.7 (above the general one).
CATEGORY_ROWS: tuple[Row, ...] = (
    *ROWS,
    Row("vocaloid", COPYRIGHT, (0, 0, 0), _logit(0.5)),
    Row("some_artist", ARTIST, (0, 0, 0), _logit(0.3)),
    Row("highres", META, (0, 0, 0), _logit(0.7)),
)


def write_csv(path: Path, rows: tuple[Row, ...] = ROWS) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, r in enumerate(rows):
            w.writerow([1000 + i, r.name, r.category, 100 - i])


def build_model(path: Path, *, size: int = 32, fixed_batch: bool = False, rows: tuple[Row, ...] = ROWS,
                opset: int = 17, ir_version: int = 8, heavy_mb: int = 0) -> None:  # fmt: skip
    """``heavy_mb`` adds that many MB of weights the probabilities do not depend on (to the 6th decimal): a
    model as large as a real one, for memory tests."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([r.weights for r in rows], dtype=np.float32).T / 255.0  # [3, T], input is 0..255
    b = np.array([r.bias for r in rows], dtype=np.float32)
    batch: int | str = 1 if fixed_batch else "batch"
    inp = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, size, size, 3])
    out = helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, len(rows)])
    nodes = [
        helper.make_node("ReduceMean", ["input_1"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["mean", "W"], ["logits0"]),
        helper.make_node("Add", ["logits0", "B"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    initializer = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    if heavy_mb:  # mean -> [N, K] -> [N, 3] with tiny weights, added to the mean
        k = heavy_mb * 1024 * 1024 // (2 * 3 * 4)
        rng = np.random.default_rng(0)
        h1 = rng.standard_normal((3, k), dtype=np.float32)
        h2 = rng.standard_normal((k, 3), dtype=np.float32) * np.float32(1e-12)
        initializer += [numpy_helper.from_array(h1, "H1"), numpy_helper.from_array(h2, "H2")]
        nodes[1:1] = [
            helper.make_node("MatMul", ["mean", "H1"], ["wide"]),
            helper.make_node("MatMul", ["wide", "H2"], ["narrow"]),
            helper.make_node("Add", ["mean0", "narrow"], ["mean"]),
        ]
        nodes[0] = helper.make_node("ReduceMean", ["input_1"], ["mean0"], axes=[1, 2], keepdims=0)
        nodes[1] = helper.make_node("MatMul", ["mean0", "H1"], ["wide"])
    graph = helper.make_graph(nodes, "wd14_test", [inp], [out], initializer=initializer)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tagger-tests")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_model_dir(folder: Path, **kwargs: object) -> Path:
    """A model folder (``model.onnx`` + ``selected_tags.csv``) ready for the engine; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = kwargs.get("rows", ROWS)
    build_model(folder / "model.onnx", **kwargs)  # type: ignore[arg-type]
    write_csv(folder / "selected_tags.csv", rows)  # type: ignore[arg-type]
    return folder


def expected_probs(bgr_mean01: tuple[float, float, float], rows: tuple[Row, ...] = ROWS) -> np.ndarray:
    """What the model outputs for an image whose mean B, G, R (0..1) is given: the test oracle."""
    m = np.asarray(bgr_mean01, dtype=np.float64)
    logits = np.array([np.dot(r.weights, m) + r.bias for r in rows])
    return 1 / (1 + np.exp(-logits))


def build_family_model(
    path: Path,
    rows: tuple[Row, ...],
    *,
    layout: str = "NCHW",
    size: int | None = 448,
    input_name: str = "input",
    outputs: tuple[tuple[str, str], ...] = (("output", "probs"),),
    embedding_dim: int = 4,
) -> None:
    """A stand-in with another family's contract: one image input ``[N, 3, S, S]`` (NCHW) or ``[N, S, S, 3]``
    (NHWC), ``size`` None for symbolic height and width (ML-Danbooru's exports), and ``outputs`` in order, each
    ``(name, kind)``: ``probs`` (sigmoid of the logits), ``logits``, ``embedding`` ([N, embedding_dim]) or
    ``other`` (half the logits: a second prediction the model also gives, as Camie's initial one).

    The logits are ``channel_means @ W + B`` over the tensor as fed (channels in the order fed, values as
    normalised), so ``family_expected`` computes the answer from a reference tensor."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    spatial: list[int | str] = [size, size] if size else ["height", "width"]
    shape = ["batch", 3, *spatial] if layout == "NCHW" else ["batch", *spatial, 3]
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)
    w = np.array([r.weights for r in rows], dtype=np.float32).T  # [3, T], on the fed values
    b = np.array([r.bias for r in rows], dtype=np.float32)
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], axes=axes, keepdims=0),
        helper.make_node("MatMul", ["mean", "W"], ["logits0"]),
        helper.make_node("Add", ["logits0", "B"], ["raw_logits"]),
    ]
    kinds = {kind for _, kind in outputs}
    init = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    if "embedding" in kinds:
        init.append(numpy_helper.from_array(EMBEDDING_WEIGHTS[:, :embedding_dim].copy(), "E"))
    if "other" in kinds:
        init.append(numpy_helper.from_array(np.float32(0.5), "HALF"))
    outs = []
    for name, kind in outputs:
        source = {"probs": "Sigmoid", "logits": "Identity", "embedding": "MatMul", "other": "Mul"}[kind]
        args = {
            "probs": ["raw_logits"],
            "logits": ["raw_logits"],
            "embedding": ["mean", "E"],
            "other": ["raw_logits", "HALF"],
        }[kind]
        nodes.append(helper.make_node(source, args, [name]))
        dim = embedding_dim if kind == "embedding" else len(rows)
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", dim]))
    graph = helper.make_graph(nodes, "family_test", [inp], outs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tagger-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


EMBEDDING_WEIGHTS = np.array(
    [[1.0, 0.5, -1.0, 0.25, 2.0, -0.5], [0.0, 2.0, 1.0, -1.0, 0.5, 1.5], [-1.0, 0.25, 0.5, 3.0, 1.0, 0.0]],
    dtype=np.float32,
)


def family_expected(tensor: np.ndarray, rows: tuple[Row, ...], layout: str = "NCHW") -> np.ndarray:
    """The probabilities the stand-in gives for an input tensor (one image, no batch axis)."""
    means = np.asarray(tensor, dtype=np.float64).mean(axis=(1, 2) if layout == "NCHW" else (0, 1))
    logits = np.array([np.dot(r.weights, means) + r.bias for r in rows])
    return 1 / (1 + np.exp(-logits))


def family_embedding(tensor: np.ndarray, layout: str = "NCHW", dim: int = 4) -> np.ndarray:
    means = np.asarray(tensor, dtype=np.float64).mean(axis=(1, 2) if layout == "NCHW" else (0, 1))
    return means @ EMBEDDING_WEIGHTS[:, :dim].astype(np.float64)
