"""tagger.quantize: the int8 copy of a model and its validation against the full-precision model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger import hub
from tagger.engine import Tagger
from tagger.options import TagOptions
from tagger.quantize import INFO_FILE, QuantizeError, int8_name, quantize_model, validate_quantized
from tagger.validate import ValidationReport, tag_set_f1
from tests.modelgen import ROWS, make_model_dir, write_csv

pytest.importorskip("onnx")

SIZE = 32
HIDDEN = 256


def build_mlp_model(path: Path, *, seed: int = 0) -> None:
    """A WD14-contract model with MatMuls worth quantising: 8x8 mean-pooled colours (192 values) -> 256
    hidden units (ReLU) -> one logit per tag of ``tests.modelgen.ROWS`` -> sigmoid."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n_in, n_out = 8 * 8 * 3, len(ROWS)
    w1 = (rng.standard_normal((n_in, HIDDEN)) * 2.0 / np.sqrt(n_in)).astype(np.float32)
    b1 = (rng.standard_normal(HIDDEN) * 0.5).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, n_out)) * 3.0 / np.sqrt(HIDDEN)).astype(np.float32)
    b2 = (rng.standard_normal(n_out) * 1.5 - 1.0).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array([0, 8, 4, 8, 4, 3], np.int64), "pool_shape"),
        numpy_helper.from_array(np.array([0, n_in], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
        numpy_helper.from_array(w1, "W1"),
        numpy_helper.from_array(b1, "B1"),
        numpy_helper.from_array(w2, "W2"),
        numpy_helper.from_array(b2, "B2"),
    ]
    nodes = [
        helper.make_node("Reshape", ["input_1", "pool_shape"], ["blocks"]),
        helper.make_node("ReduceMean", ["blocks"], ["pooled"], axes=[2, 4], keepdims=0),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "scale"], ["x"]),
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "B1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "W2"], ["l0"]),
        helper.make_node("Add", ["l0", "B2"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    inp = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", SIZE, SIZE, 3])
    out = helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", n_out])
    graph = helper.make_graph(nodes, "wd14_mlp_test", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tagger-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_images(folder: Path, count: int = 6) -> list[Path]:
    """Deterministic varied images: gradients, blocks and noise in different colours and sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        h, w = (48, 64) if i % 2 else (64, 40)
        y, x = np.mgrid[0:h, 0:w]
        base = rng.integers(0, 256, 3)
        arr = np.stack([(x * (i + 1) * 7 + base[0]) % 256, (y * 5 + base[1]) % 256,
                        ((x // 8 + y // 8) % 2) * base[2]], axis=-1)  # fmt: skip
        arr = np.clip(arr + rng.normal(0, 12, arr.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"img{i}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A fresh models folder with ``mlp-model`` (quantisable MatMuls) and ``test-model`` (the tiny one)."""
    root = tmp_path / "models"
    (root / "mlp-model").mkdir(parents=True)
    build_mlp_model(root / "mlp-model" / "model.onnx")
    write_csv(root / "mlp-model" / "selected_tags.csv")
    make_model_dir(root / "test-model")
    return root


@pytest.fixture
def tagger(models: Path) -> Tagger:
    return Tagger(models, "cpu", download=False, progress=False)


def _op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_quantize_writes_a_local_int8_model(models: Path, tagger: Tagger) -> None:
    out = quantize_model("mlp-model", models)
    assert out == models / "mlp-model-int8"
    assert (out / "selected_tags.csv").read_bytes() == (models / "mlp-model" / "selected_tags.csv").read_bytes()
    ops = _op_types(out / "model.onnx")
    assert "MatMul" not in ops and {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert (out / "model.onnx").stat().st_size < (models / "mlp-model" / "model.onnx").stat().st_size / 2.5
    info = json.loads((out / INFO_FILE).read_text())
    assert info["source_model"] == "local:mlp-model" and info["weight_type"] == "QInt8"
    assert info["op_types"] == ["MatMul", "Gemm"]
    assert not [p for p in models.iterdir() if p.name.endswith(".partial")]  # no staging folder left
    # An ordinary local model from now on: listed and loaded like any other.
    listed = {m.name: m for m in hub.list_models(models)}
    assert listed["mlp-model-int8"].family == "local" and listed["mlp-model-int8"].tags == len(ROWS)
    loaded = tagger.load("mlp-model-int8")
    assert loaded.size == SIZE and len(loaded.labels) == len(ROWS) and loaded.fixed_batch is None


def test_validate_reports_agreement_on_the_users_images(models: Path, tagger: Tagger, tmp_path: Path) -> None:
    quantize_model("mlp-model", models)
    folder = tmp_path / "images"
    make_images(folder)
    report = validate_quantized(tagger, "mlp-model", "mlp-model-int8", folder, TagOptions())
    assert isinstance(report, ValidationReport)
    assert report.images == 6 and report.failed == 0
    # Measured on the development machine (AVX-512 VNNI): mean F1 1.0 (all 6 tag sets equal), largest
    # probability difference 0.018, mean 0.0034. The bounds leave room for other CPUs' int8 kernels; the
    # difference must not be zero: the weights really changed.
    assert report.mean_f1 >= 0.95 and report.min_f1 >= 0.8
    assert 1e-4 < report.max_abs_diff < 0.05
    assert 0 < report.mean_abs_diff <= report.max_abs_diff
    assert report.rating_agreement == 1.0
    assert report.reference_s_per_image > 0 and report.candidate_s_per_image > 0
    text = report.summary()
    assert "mean F1" in text and "largest difference" in text and "6 images" in text


def test_validate_a_model_against_itself_is_exact(models: Path, tagger: Tagger, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    make_images(folder, 3)
    report = validate_quantized(tagger, "mlp-model", "mlp-model", folder, TagOptions(general_threshold=0.2))
    assert report.images == 3 and report.mean_f1 == 1.0 and report.max_abs_diff == 0.0
    assert report.identical_tag_sets == 3


def test_validate_skips_unreadable_images_and_honours_limit(models: Path, tagger: Tagger, tmp_path: Path) -> None:
    quantize_model("mlp-model", models)
    folder = tmp_path / "images"
    make_images(folder, 4)
    (folder / "broken.png").write_bytes(b"not a png")
    report = validate_quantized(tagger, "mlp-model", "mlp-model-int8", folder, TagOptions())
    assert report.images == 4 and report.failed == 1
    assert report.failures and report.failures[0][0].endswith("broken.png")
    limited = validate_quantized(tagger, "mlp-model", "mlp-model-int8", folder, TagOptions(), limit=2, chunk=1)
    assert limited.images + limited.failed == 2


def test_quantized_tiny_model_keeps_its_tags(models: Path, tagger: Tagger, solid_image) -> None:
    files = tagger.resolve("test-model")
    out = quantize_model(files, models, out_name="tiny-q")
    assert out.name == "tiny-q"
    red = solid_image((255, 0, 0), "red.png")
    a, b = tagger.tag_image("test-model", red), tagger.tag_image("tiny-q", red)
    assert set(a.result.general) == set(b.result.general) and "red_theme" in b.result.general
    assert np.abs(a.probs - b.probs).max() < 0.02


def test_existing_output_is_refused_unless_overwrite(models: Path) -> None:
    first = quantize_model("mlp-model", models)
    marker = first / "marker.txt"
    marker.write_text("old copy")
    with pytest.raises(QuantizeError, match="already exists"):
        quantize_model("mlp-model", models)
    assert marker.exists()
    again = quantize_model("mlp-model", models, overwrite=True)
    assert again == first and not marker.exists() and (again / "model.onnx").is_file()


@pytest.mark.parametrize("bad", ["../escape", "a/b", ".", "mlp-model"])
def test_bad_output_names_are_refused(models: Path, bad: str) -> None:
    with pytest.raises(QuantizeError):
        quantize_model("mlp-model", models, out_name=bad)


def test_missing_onnx_package_gives_a_clear_error(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes ``import onnx`` raise ImportError
    with pytest.raises(QuantizeError, match="pip install onnx"):
        quantize_model("mlp-model", models)
    assert not (models / "mlp-model-int8").exists()


def test_unquantisable_file_is_a_quantize_error(models: Path) -> None:
    bad = models / "bad-model"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(b"this is not an onnx file")
    write_csv(bad / "selected_tags.csv")
    with pytest.raises(QuantizeError, match="could not be quantised"):
        quantize_model("bad-model", models)
    assert not (models / "bad-model-int8").exists()
    assert not [p for p in models.iterdir() if p.name.endswith(".partial")]


def test_helpers() -> None:
    assert tag_set_f1([], []) == 1.0
    assert tag_set_f1(["a", "b"], ["a", "b"]) == 1.0
    assert tag_set_f1(["a", "b"], ["a"]) == pytest.approx(2 / 3)
    assert tag_set_f1(["a"], ["b"]) == 0.0
    assert int8_name("wd-vit-tagger-v3") == "wd-vit-tagger-v3-int8"
    assert int8_name(str(Path("/some/where/my-model"))) == "my-model-int8"
