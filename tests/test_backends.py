"""OpenVINO as the second backend (issue 14): the devices, auto's one-time check, the precision in cache keys and
the comparison on a user's images. Real OpenVINO and ONNX Runtime sessions of small generated models; the tests
that need OpenVINO skip with their reason where it is not installed, those that need bf16 units where the CPU has
none."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagger import backends, cli
from tagger.cache import ProbCache
from tagger.engine import Tagger
from tagger.errors import OptionsError
from tagger.runtime import DEVICES, Device
from tests.modelgen import GENERAL, ROWS, Row, make_model_dir

pytest.importorskip("onnx")
needs_openvino = pytest.mark.skipif(backends.openvino_version() is None, reason="openvino is not installed")
needs_bf16 = pytest.mark.skipif(
    backends.openvino_version() is None or not backends.cpu_bf16_units(),
    reason="needs openvino and a CPU with bf16 units (AVX512-BF16 or AMX)",
)
# Tags whose logit is 4000 x (mean blue - mean green) plus biases spread over the range any image can give: some
# of them sit near 0.5 for every image, where bf16's rounding of the mean (8 bits of mantissa) moves the
# probability by far more than 0.01. A model on which bf16 must disagree with fp32.
EDGE_ROWS = ROWS + tuple(
    Row(f"edge_{i}", GENERAL, (4000.0, -4000.0, 0.0), float(b)) for i, b in enumerate(np.linspace(-1500, 1500, 151))
)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    make_model_dir(root / "m")
    return root


@pytest.fixture
def red(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.new("RGB", (48, 40), (230, 20, 10)).save(path)
    return path


def test_device_names() -> None:
    for text, kind, index, shown in [
        ("cpu-bf16", "cpu-bf16", 0, "cpu-bf16"),
        ("OpenVINO", "openvino", 0, "openvino"),
        ("intel-gpu:1", "intel-gpu", 1, "intel-gpu:1"),
        ("cuda:2", "cuda", 2, "cuda:2"),
        (" auto ", "auto", 0, "auto"),
    ]:
        device = Device.parse(text)
        assert (device.kind, device.index, str(device)) == (kind, index, shown)
        assert device.openvino == (kind in ("cpu-bf16", "openvino", "intel-gpu"))
    for bad in ("cpu-bf16:1", "bf16", "gpu", "openvino:0"):
        with pytest.raises(OptionsError) as err:
            Device.parse(bad)
        assert err.value.field == "device" and DEVICES in str(err.value)


def test_without_openvino_its_devices_say_how_to_get_it(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake: OpenVINO reported as not installed (it may well be installed here).
    monkeypatch.setattr(backends, "openvino_version", lambda: None)
    for device in ("cpu-bf16", "openvino", "intel-gpu"):
        with pytest.raises(OptionsError) as err:
            Tagger(models, device, download=False).load("m")
        assert device in str(err.value) and "pip install openvino" in str(err.value)
    assert not backends.auto_candidates()  # and auto never tries it
    assert Tagger(models, "auto", download=False).load("m").provider_label == "CPU"


@needs_openvino
def test_openvino_fp32_gives_onnxruntimes_answers(models: Path, red: Path) -> None:
    ort = Tagger(models, "cpu", download=False).tag_image("m", red)
    ov = Tagger(models, "openvino", download=False).tag_image("m", red)
    assert ov.provider == "OpenVINO CPU fp32" and ort.provider == "CPU"
    assert np.abs(ov.probs - ort.probs).max() < 1e-5
    assert set(ov.result.general) == set(ort.result.general) and set(ov.result.character) == set(ort.result.character)
    assert "red theme" in ov.result.prompt


@needs_openvino
def test_cpu_bf16_runs_on_the_bf16_units_or_says_why_not(models: Path, red: Path) -> None:
    tagger = Tagger(models, "cpu-bf16", download=False)
    loaded = tagger.load("m")
    tags = tagger.tag_image("m", red)
    if backends.cpu_bf16_units():
        assert (loaded.precision, tags.provider, loaded.device_note) == ("bf16", "OpenVINO CPU bf16", "")
    else:
        assert loaded.precision == "fp32" and "no bf16 units" in loaded.device_note
    assert "red theme" in tags.result.prompt  # this model's probabilities are far from its thresholds


@needs_openvino
def test_intel_gpu_names_what_is_missing(models: Path) -> None:
    if backends.gpu_devices():
        pytest.skip("this machine has an Intel GPU: the error is for machines without one")
    with pytest.raises(OptionsError) as err:
        Tagger(models, "intel-gpu", download=False).load("m")
    assert "no Intel GPU" in str(err.value) and "driver" in str(err.value)


@needs_bf16
def test_cache_keys_keep_bf16_and_fp32_answers_apart(models: Path, red: Path, tmp_path: Path) -> None:
    cache = ProbCache(tmp_path / "probs.sqlite3")
    bf16 = Tagger(models, "cpu-bf16", download=False, cache=cache)
    fp32 = Tagger(models, "cpu", download=False, cache=cache)
    assert bf16.tag_image("m", red).provider == "OpenVINO CPU bf16"
    assert fp32.tag_image("m", red).provider == "CPU"  # not the bf16 answer
    assert bf16.tag_image("m", red).provider == "cache"
    assert fp32.tag_image("m", red).provider == "cache"
    assert Tagger(models, "openvino", download=False, cache=cache).tag_image("m", red).provider == "cache"  # fp32


def _checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts auto's checks: every check times the fp32 model (a wrapper that calls the real function)."""
    calls: list[str] = []
    real = backends._timed_runs

    def counted(model, tensors):  # type: ignore[no-untyped-def]
        calls.append(model.provider_label)
        return real(model, tensors)

    monkeypatch.setattr(backends, "_timed_runs", counted)
    return calls


@needs_bf16
def test_auto_checks_once_per_machine_and_model_and_keeps_its_verdict(
    models: Path, red: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "MIN_SECONDS", 0.0)  # this tiny model is fast: check it all the same
    checks = _checks(monkeypatch)
    loaded = Tagger(models, "auto", download=False).load("m")
    assert checks == ["CPU", "OpenVINO CPU bf16"]
    stored = json.loads((models / "m" / backends.CHOICE_FILE).read_text())
    (key, entry), *more = stored.items()
    assert not more and backends.cpu_name() in key and "local:m" in key
    agrees = entry["max_diff"] <= backends.MAX_DIFF and entry["same_tags"]
    faster = entry["fp32_s"] / entry["bf16_s"] >= backends.MIN_SPEEDUP
    assert entry["device"] == ("cpu-bf16" if agrees and faster else "cpu")
    assert loaded.provider_label == ("OpenVINO CPU bf16" if entry["device"] == "cpu-bf16" else "CPU")

    backends._MEMO.clear()  # a new process: only the file remembers
    again = Tagger(models, "auto", download=False)
    assert again.load("m").provider_label == loaded.provider_label and len(checks) == 2  # not checked again
    assert again.tag_image("m", red).provider == loaded.provider_label

    model_file = models / "m" / "model.onnx"
    st = model_file.stat()
    os.utime(model_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # another model file: checked again
    Tagger(models, "auto", download=False).load("m")
    assert len(checks) == 4 and len(json.loads((models / "m" / backends.CHOICE_FILE).read_text())) == 2


@needs_bf16
def test_auto_never_uses_bf16_that_disagrees_with_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_model_dir(tmp_path / "models" / "edge", rows=EDGE_ROWS)
    monkeypatch.setattr(backends, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(backends, "MIN_SPEEDUP", 0.0)  # however fast bf16 is
    loaded = Tagger(tmp_path / "models", "auto", download=False).load("edge")
    assert loaded.provider_label == "CPU"
    verdict = backends.Choices(loaded.files, loaded.threads).get()
    assert verdict is not None and verdict.device == "cpu" and "disagrees" in verdict.reason
    assert verdict.max_diff is not None and verdict.max_diff > backends.MAX_DIFF


@needs_bf16
def test_auto_leaves_fast_models_alone(models: Path) -> None:
    loaded = Tagger(models, "auto", download=False).load("m")
    verdict = backends.Choices(loaded.files, loaded.threads).get()
    assert loaded.provider_label == "CPU" and verdict is not None and "nothing to gain" in verdict.reason
    assert verdict.fp32_s < backends.MIN_SECONDS and verdict.bf16_s is None


@needs_bf16
def test_auto_stores_answers_under_the_precision_it_chose(
    models: Path, red: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(backends, "MIN_SPEEDUP", 0.0)  # bf16 whenever it agrees (it does on this model)
    cache = ProbCache(tmp_path / "probs.sqlite3")
    auto = Tagger(models, "auto", download=False, cache=cache)
    assert auto.precision(auto.resolve("m")) is None  # not checked yet: the first load decides
    assert auto.tag_image("m", red).provider == "OpenVINO CPU bf16"
    assert auto.precision(auto.resolve("m")) == "bf16"
    assert Tagger(models, "cpu-bf16", download=False, cache=cache).tag_image("m", red).provider == "cache"
    assert Tagger(models, "cpu", download=False, cache=cache).tag_image("m", red).provider == "CPU"


@needs_openvino
def test_devices_command_compares_a_device_on_the_users_images(models: Path, tmp_path: Path) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, rgb in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (40, 40), rgb).save(imgs / f"{i}.png")
    (imgs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = io.StringIO()
    code = cli.main(["devices", "m", "--device", "openvino", "--validate", str(imgs), "--models-dir", str(models)], out)
    text = out.getvalue()
    assert code == 0, text
    assert "openvino (OpenVINO CPU fp32) vs cpu (CPU) on 3 images (1 unreadable, skipped)" in text
    assert "identical tag sets 3/3" in text and "largest difference 0.0000" in text
    out = io.StringIO()
    assert cli.main(["devices", "--models-dir", str(models)], out) == 0
    assert f"OpenVINO {backends.openvino_version()}" in out.getvalue() and "bf16 units" in out.getvalue()
