"""The engine end to end with the generated model: sessions, devices, errors, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger.engine import Tagger
from tagger.errors import ModelFormatError, ModelUnavailableError, OptionsError
from tagger.options import TagOptions
from tagger.runtime import CPU, CUDA, Device, available_cpus, cuda_diagnosis
from tests.modelgen import ROWS, build_model, expected_probs, make_model_dir, write_csv

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tagger(model_root: Path) -> Tagger:
    return Tagger(model_root, "cpu", download=False, progress=False)


def test_tags_depend_on_the_image(tagger, solid_image):
    red = tagger.tag_image("test-model", solid_image((255, 0, 0), "r.png", size=(64, 64)))
    green = tagger.tag_image("test-model", solid_image((0, 255, 0), "g.png", size=(64, 64)))
    assert "red_theme" in red.result.general and "red_theme" not in green.result.general
    assert "hatsune_miku" in green.result.character and not red.result.character.get("hatsune_miku")
    np.testing.assert_allclose(red.probs, expected_probs((0.0, 0.0, 1.0)), atol=1e-4)
    assert red.provider == "CPU" and red.model == "test-model"


def test_fixed_batch_model_runs_one_image_per_call(tagger, tmp_path):
    loaded = tagger.load("test-model-b1")
    assert loaded.fixed_batch == 1 and loaded.size == 32
    paths = []
    for i, rgb in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (20, 20), rgb).save(paths[-1])
    out = list(tagger.tag_many("test-model-b1", paths, batch_size=8))
    assert ["red_theme" in o.result.general for o in out] == [True, False, False]
    assert "blue_theme" in out[1].result.general
    assert tagger.load("test-model").fixed_batch is None


def test_one_session_per_model_shared_and_unloaded(tagger, solid_image):
    a = tagger.load("test-model")
    assert tagger.load("test-model") is a
    assert [m.name for m in tagger.loaded()] == ["test-model"]
    assert tagger.unload("test-model") and tagger.loaded() == []
    assert not tagger.unload("test-model")
    tagger.load("test-model")
    tagger.load("test-model-b1")
    assert tagger.unload_all() == 2 and tagger.loaded() == []


def test_concurrent_calls_with_unloads(tagger, solid_image):
    path = solid_image((255, 0, 0), "r.png")
    errors: list[BaseException] = []
    results: list[bool] = []

    def worker():
        try:
            for _ in range(15):
                results.append("red_theme" in tagger.tag_image("test-model", path).result.general)
        except BaseException as e:
            errors.append(e)

    def unloader():
        for _ in range(15):
            tagger.unload_all()

    threads = [threading.Thread(target=worker) for _ in range(4)] + [threading.Thread(target=unloader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 60 and all(results)
    assert len(tagger.loaded()) <= 1


def test_csv_model_mismatch_is_a_clear_error(tmp_path):
    d = make_model_dir(tmp_path / "bad")
    write_csv(d / "selected_tags.csv", ROWS[:-2])
    with pytest.raises(
        ModelFormatError, match=rf"outputs {len(ROWS)} tags but selected_tags.csv has {len(ROWS) - 2} rows"
    ):
        Tagger(tmp_path, "cpu", download=False).load("bad")


def test_not_a_wd_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    d = tmp_path / "nchw"
    d.mkdir()
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [inp], [out])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(d / "model.onnx"))
    write_csv(d / "selected_tags.csv")
    with pytest.raises(ModelFormatError, match="not a WD14 tagger"):
        Tagger(tmp_path, "cpu", download=False).load("nchw")


def test_runtime_too_old_for_opset_says_so(tmp_path):
    d = tmp_path / "future"
    d.mkdir()
    build_model(d / "model.onnx", opset=17)
    import onnx

    m = onnx.load(str(d / "model.onnx"))
    m.opset_import[0].version = 99  # an operator set no runtime knows: what an old runtime sees with v3 models
    onnx.save(m, str(d / "model.onnx"))
    write_csv(d / "selected_tags.csv")
    with pytest.raises(ModelFormatError, match=r"too old for the model's operator set.*onnxruntime >= 1.17"):
        Tagger(tmp_path, "cpu", download=False).load("future")


def test_corrupt_onnx_file(tmp_path):
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"\x00garbage" * 10)
    write_csv(d / "selected_tags.csv")
    with pytest.raises(ModelFormatError, match="could not be loaded as an ONNX model"):
        Tagger(tmp_path, "cpu", download=False).load("corrupt")


def test_unknown_model_offline(tmp_path):
    with pytest.raises(ModelUnavailableError):
        Tagger(tmp_path, "cpu", download=False).load("no-such-model")


def test_device_parsing():
    assert str(Device.parse("CUDA:1")) == "cuda:1" and Device.parse(None).kind == "auto"
    for bad in ("gpu", "cpu:1", "cuda:x"):
        with pytest.raises(OptionsError, match="device"):
            Device.parse(bad)


def test_cuda_wanted_on_this_cpu_only_machine_says_why(model_root):
    """Not a fake: this machine's onnxruntime is the CPU build, so asking for CUDA must explain itself."""
    loaded = Tagger(model_root, "cuda", download=False).load("test-model")
    assert loaded.provider == CPU
    assert "CUDA is not used" in loaded.device_note and "Fix" in loaded.device_note
    auto = Tagger(model_root, "auto", download=False).load("test-model")
    assert auto.device_note == ""  # auto on a machine without CUDA is not a failure


def test_cuda_diagnosis_messages():
    """Stand-in inputs for situations that need a GPU machine (named plainly: no GPU exists here)."""
    both = cuda_diagnosis([CPU], ["onnxruntime 1.20.0", "onnxruntime-gpu 1.20.0"])
    assert "both onnxruntime-gpu and onnxruntime" in both and "pip uninstall" in both
    cpu_only = cuda_diagnosis([CPU], ["onnxruntime 1.20.0"])
    assert "CPU-only build" in cpu_only and "pip install onnxruntime-gpu" in cpu_only
    libs = cuda_diagnosis([CUDA, CPU], ["onnxruntime-gpu 1.20.0"], active=[CPU])
    assert "cuDNN" in libs and "1.20.0" in libs
    assert cuda_diagnosis([CUDA, CPU], ["onnxruntime-gpu 1.20.0"], active=[CUDA, CPU]) == ""


def test_threads_never_exceed_usable_cpus(model_root):
    code = (
        "import os; os.sched_setaffinity(0, {0});"
        "from tagger.runtime import available_cpus; from tagger.engine import Tagger;"
        f"t = Tagger({str(model_root)!r}, 'cpu', download=False); m = t.load('test-model');"
        "print(available_cpus(), m.threads)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def test_import_does_nothing():
    code = (
        "import sys, PIL.Image as I; before = I.MAX_IMAGE_PIXELS;"
        "import tagger, tagger.engine, tagger.cli, tagger.batch, tagger.hub;"
        "from PIL import ImageFile;"
        "assert I.MAX_IMAGE_PIXELS == before and not ImageFile.LOAD_TRUNCATED_IMAGES;"
        "assert 'onnxruntime' not in sys.modules and 'huggingface_hub' not in sys.modules, sorted(sys.modules)"
    )
    env = {**os.environ, "HOME": "/nonexistent-home", "TAGGER_MODELS_DIR": "/nonexistent/models"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=env)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tagger", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_text_and_json(model_root, solid_image):
    red = solid_image((255, 0, 0), "red.png")
    green = solid_image((0, 255, 0), "green.png")
    base = ["tag", str(red), str(green), "--models-dir", str(model_root), "--model", "test-model"]
    r = cli(*base)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{red}: red theme, solo") and lines[1].startswith(f"{green}: ")
    assert "model test-model on CPU" in r.stderr
    r = cli(*base, "--format", "json", "--exclude", "solo", "--weights", "--general-threshold", "0.55")
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert set(recs[0]) == {"path", "prompt", "rating", "general", "character"}
    assert "solo" not in recs[0]["general"] and "long_hair" not in recs[0]["general"]
    assert recs[1]["character"]["hatsune_miku"] > 0.99
    assert recs[0]["prompt"].startswith("(red theme:1.00), (kirisame marisa:0.88), (^_^:0.70)")


def test_cli_exit_codes(model_root, solid_image, tmp_path):
    red = solid_image((255, 0, 0), "red.png")
    bad = tmp_path / "bad.jpg"
    bad.write_text("no")
    r = cli("tag", str(red), str(bad), "--models-dir", str(model_root), "--model", "test-model")
    assert r.returncode == 1 and f"error: {bad}" in r.stderr and r.stdout.startswith(str(red))
    r = cli("tag", str(red), "--models-dir", str(model_root), "--model", "test-model", "--general-threshold", "2")
    assert r.returncode == 2 and "--general-threshold" in r.stderr and "Traceback" not in r.stderr
    r = cli("tag", str(red), "--models-dir", str(tmp_path), "--model", "wd-vit-tagger-v3", "--offline")
    assert r.returncode == 2 and "wd-vit-tagger-v3" in r.stderr and "Traceback" not in r.stderr
    r = cli("tag")
    assert r.returncode == 2
    r = cli("tag", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout


def test_cli_models_list(model_root):
    r = cli("models", "--models-dir", str(model_root))
    assert r.returncode == 0
    assert "wd-swinv2-tagger-v3" in r.stdout and "test-model" in r.stdout and "SmilingWolf/" in r.stdout


def test_options_object_is_frozen_and_defaults_match_webui():
    o = TagOptions()
    assert (o.general_threshold, o.character_threshold, o.replace_underscores, o.escape) == (0.35, 0.85, True, True)
    with pytest.raises(AttributeError):
        o.general_threshold = 0.5  # type: ignore[misc]
