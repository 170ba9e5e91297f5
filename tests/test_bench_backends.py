"""The backends benchmark of issue 14, tiny: the trivial stand-in, 2 images, 1 round (the path, not the speed);
and the SwinV2-B stand-in's graph, at a tiny width, through ONNX Runtime and the engine's OpenVINO backend."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_bench_smoke import _assert_tables_are_rectangular

onnx = pytest.importorskip("onnx")

TINY_SWIN = {"depths": (2, 2, 2, 2), "dim": 16, "heads": (1, 2, 2, 4), "n_tags": 40}  # the real layout, narrow


def _needs_openvino() -> None:
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install -e '.[openvino]'")


def _table(text: str, header: str) -> dict[str, list[str]]:
    """The rows of the table whose header line starts with ``header``, by their first two cells joined."""
    rows: dict[str, list[str]] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith(header):
            inside = True
        elif not line.startswith("|"):
            inside = False
        elif inside and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[" | ".join(cells[:2])] = cells
    assert rows, f"no table under {header!r}:\n{text}"
    return rows


def _tables(text: str) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, list[str]]]:
    """Speed (by "model | backend"), agreement (the same) and targets (by "figure | target")."""
    return (
        _table(text, "| model | backend | ran on | images/s"),
        _table(text, "| model | backend | ran on | images |"),
        {row[0]: row for row in _table(text, "| figure | target |").values()},
    )


def _bench(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    from bench.backends import main

    markdown = tmp_path / "BACKENDS.md"
    argv = ["--models", "trivial", "--images", "2", "--rounds", "1", "--no-wait", "--cache", str(tmp_path / "cache"),
            "--markdown", str(markdown), *extra]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert markdown.read_text(encoding="utf-8") in out
    _assert_tables_are_rectangular(out)
    return out


def test_quick_run_measures_every_backend_against_onnx_runtime_fp32(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _needs_openvino()
    from bench.backends import cpu_bf16_units

    out = _bench(tmp_path, capsys)
    speed, agreement, targets = _tables(out)
    ort_fp32, ov_fp32 = speed["trivial | ONNX Runtime fp32"], speed["trivial | OpenVINO fp32"]
    assert ort_fp32[2] == "CPU" and ov_fp32[2] == "OpenVINO CPU fp32"  # what the workers say really ran
    assert float(ort_fp32[3]) > 0 and float(ov_fp32[3]) > 0  # images/s
    fp32 = targets["trivial: OpenVINO fp32 / ONNX Runtime fp32, images/s"]
    assert fp32[1] == "— (no target)" and fp32[2].endswith("x")
    if cpu_bf16_units():
        assert "This CPU has bf16 units" in out
        bf16 = speed["trivial | OpenVINO bf16"]
        assert bf16[2] == "OpenVINO CPU bf16" and float(bf16[3]) > 0
        ratio = targets["trivial: OpenVINO bf16 / ONNX Runtime fp32, images/s"]
        assert ratio[1].startswith("—") and ratio[2].endswith("x")  # the trivial model carries no speed target
        compared = "OpenVINO bf16"
    else:
        assert "**This CPU has no bf16 units**" in out
        compared = "OpenVINO fp32"
    (checked,) = agreement.values()  # one model, one comparison: bf16 where the CPU has it
    assert checked[:4] == ["trivial", compared, f"OpenVINO CPU {compared.split()[1]}", "2"]
    versus = f"{compared} (OpenVINO CPU {compared.split()[1]}) vs ONNX Runtime fp32"
    diff = targets[f"trivial: largest probability difference, {versus}"]
    assert diff[1] == "<= 0.01" and diff[2] == checked[4] and 0 <= float(diff[2]) < 1
    tags = targets[f"trivial: tags at 0.35, {versus}"]
    assert tags[1] == "identical on every image" and tags[2].startswith(f"same on {checked[6]} of 2 images")
    assert tags[3] == ("yes" if checked[6] == "2" and checked[7] == "100%" else "**no**")


def test_a_cpu_without_bf16_units_is_named_and_only_openvino_fp32_is_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fake: the CPU's answer to "have you bf16 units?" is forced to no (this machine may have them)."""
    _needs_openvino()
    import bench.backends

    monkeypatch.setattr(bench.backends, "cpu_bf16_units", lambda: False)
    out = _bench(tmp_path, capsys, "--images", "1")
    speed, agreement, targets = _tables(out)
    assert "**This CPU has no bf16 units**" in out
    assert set(speed) == {"trivial | ONNX Runtime fp32", "trivial | OpenVINO fp32"}
    assert set(agreement) == {"trivial | OpenVINO fp32"} and agreement["trivial | OpenVINO fp32"][3] == "1"
    assert (
        targets["trivial: OpenVINO bf16 / ONNX Runtime fp32, images/s"][2] == "not measured: no bf16 units on this CPU"
    )
    assert "trivial: largest probability difference, OpenVINO fp32 (OpenVINO CPU fp32) vs ONNX Runtime fp32" in targets


def test_without_openvino_it_says_how_to_install_it_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Fake: ``import openvino`` fails as where it is not installed."""
    from bench.backends import main
    from tagger.backends import openvino_version

    monkeypatch.setitem(sys.modules, "openvino", None)
    openvino_version.cache_clear()  # it remembers its answer: forget it now, and the fake's answer afterwards
    request.addfinalizer(openvino_version.cache_clear)
    assert main(["--models", "trivial", "--cache", str(tmp_path)]) == 2
    assert "pip install -e '.[openvino]'" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()  # refused before building anything


def test_unknown_model_names_are_refused_with_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.backends import main

    with pytest.raises(SystemExit) as exc:
        main(["--models", "vit,swin"])
    assert exc.value.code == 2
    assert "unknown model(s) swin; known: vit, swinv2, convnext, trivial" in capsys.readouterr().err


def _tiny_swinv2(folder: Path) -> Path:
    from bench.models import build_swinv2, write_tags_csv

    folder.mkdir(parents=True)
    build_swinv2(folder / "model.onnx", **TINY_SWIN)  # type: ignore[arg-type]
    write_tags_csv(folder / "selected_tags.csv", TINY_SWIN["n_tags"])  # type: ignore[arg-type]
    return folder


def _two_images() -> np.ndarray:
    """Two different 448x448 BGR 0..255 images: a smooth gradient and noise."""
    ramp = np.linspace(0, 255, 448, dtype=np.float32)
    gradient = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.float32(128)), axis=-1)
    noise = np.random.default_rng(0).uniform(0, 255, (448, 448, 3)).astype(np.float32)
    return np.stack([gradient, noise])


def test_swinv2_stand_in_is_a_valid_wd14_model(tmp_path: Path) -> None:
    """The real SwinV2-B layout (patch 4, window 14 with shifts and masks, four stages, patch merging), narrow."""
    import onnxruntime as ort

    folder = _tiny_swinv2(tmp_path / "swinv2")
    onnx.checker.check_model(str(folder / "model.onnx"), full_check=True)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[1:] == [448, 448, 3] and not isinstance(inp.shape[0], int)  # dynamic batch, NHWC
    batch = _two_images()
    both = session.run(None, {inp.name: batch})[0]
    assert both.shape == (2, TINY_SWIN["n_tags"]) and both.dtype == np.float32
    assert ((both > 0) & (both < 1)).all()
    for i in range(2):  # windows of one image never mix with another's: each alone gives the same
        alone = session.run(None, {inp.name: batch[i : i + 1]})[0]
        np.testing.assert_allclose(alone[0], both[i], atol=1e-5)
    assert np.abs(both[0] - both[1]).max() > 1e-3  # the answer depends on the image


def test_swinv2_stand_in_runs_alike_through_onnx_runtime_and_openvino(tmp_path: Path) -> None:
    """What the benchmark relies on: the engine loads the stand-in on both backends and they agree in fp32."""
    _needs_openvino()
    from tagger.engine import Tagger

    _tiny_swinv2(tmp_path / "swinv2")
    batch = _two_images()
    probs = {}
    for device in ("cpu", "openvino"):
        loaded = Tagger(tmp_path, device=device, download=False, progress=False).load("swinv2")
        probs[device] = loaded.run(batch)
        assert probs[device].shape == (2, TINY_SWIN["n_tags"])
    assert "OpenVINO" in loaded.provider_label
    np.testing.assert_allclose(probs["openvino"], probs["cpu"], atol=1e-4)
