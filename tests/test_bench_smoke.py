"""The benchmark's own code path, tiny: trivial model, 6 images, 1 round. Proves it runs; asserts no speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("cv2")
pytest.importorskip("pandas")


def test_quick_benchmark_prints_the_table_with_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.run import main

    cache = tmp_path / "cache"
    raw = tmp_path / "raw.json"
    markdown = tmp_path / "RESULTS.md"
    argv = ["--models", "trivial", "--images", "6", "--trivial-images", "6", "--rounds", "1", "--memory", "6,12", "--no-wait",
            "--cache", str(cache), "--json", str(raw), "--markdown", str(markdown)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out

    for path in (
        "| trivial | ours |",
        "| trivial | serial (ours, decode then infer) |",
        "| trivial | baseline (older taggers) |",
        "| trivial | inference-only ceiling |",
    ):
        assert path in out
    assert "trivial model (pipeline-bound), ours / baseline | >= 1.8 |" in out
    assert "| trivial model, ours / serial: what decoding beside inference gains (no target) | — |" in out
    assert "peak RSS, 12 images vs 6 images | within 10% |" in out and "median resident" in out
    assert "| re-threshold " in out and "from the cache vs re-running the model" in out  # filled in by the cache
    assert "| decode | preprocess | inference |" in out
    assert "Device asked: cpu; ran on: CPU; batch size for ours and the ceiling: 1 (the baseline: 1)." in out
    assert markdown.read_text(encoding="utf-8") in out
    _assert_tables_are_rectangular(out)

    data = json.loads(raw.read_text())
    ours = data["runs"]["trivial/ours"][0]
    assert ours["images"] == 6 and ours["images_per_s"] > 0 and ours["peak_rss_mb"] > 0
    assert data["runs"]["trivial/baseline"][0]["stages_ms"]["inference"] >= 0
    assert data["runs"]["trivial/serial"][0]["images"] == 6
    assert set(data["memory"]) == {"6", "12"}
    # Models and images went to the cache given, nothing into the repository.
    assert (cache / "models" / "trivial" / "model.onnx").is_file()
    assert len(list((cache / "images").rglob("*.*"))) == 6


def test_a_cuda_request_on_a_machine_without_one_says_so_in_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real path: CUDA is asked of this CPU-only onnxruntime; the report must not pass CPU figures off as GPU ones."""
    import onnxruntime as ort

    from bench.run import main

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the fallback cannot be shown here")
    argv = ["--models", "trivial", "--images", "3", "--trivial-images", "3", "--rounds", "1", "--memory", "3,4",
            "--no-wait", "--device", "cuda", "--cache", str(tmp_path / "cache")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Device asked: cuda; ran on: CPU;" in out
    assert "**The GPU was not used:**" in out and "onnxruntime-gpu" in out


def _assert_tables_are_rectangular(text: str) -> None:
    """Every markdown table row has as many cells as its header (a missing header once shifted a column)."""
    width = None
    tables = 0
    for line in text.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        cells = len(line.strip().strip("|").split("|"))
        if width is None:
            width, tables = cells, tables + 1
        assert cells == width, f"{cells} cells, header has {width}: {line}"
    assert tables >= 3


def test_the_benchmark_runs_from_any_folder(tmp_path: Path) -> None:
    """``python -m bench`` is found outside the repository root too (an editable install maps it)."""
    proc = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout


def test_ours_over_serial_says_in_how_many_rounds_it_held(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report's arithmetic on given per-round figures: the median decides, the rounds are counted."""
    from bench import models as bench_models
    from bench.run import Results, _target_rows, parse_args

    monkeypatch.setattr(bench_models, "MODEL_NAMES", (*bench_models.MODEL_NAMES, "swinv2"))
    cfg = parse_args(["--models", "vit,swinv2", "--no-int8"])
    assert cfg.models == ("vit", "swinv2")
    res = Results(cfg)
    for ours, serial in [(1.02, 1.0), (0.99, 1.0), (1.05, 1.0), (1.01, 1.0)]:
        for name in cfg.models:
            for variant, ips in (("ours", ours), ("serial", serial), ("baseline", 0.9), ("ceiling", 1.04)):
                res.add(name, variant, {"images_per_s": ips})
    rows = "\n".join(_target_rows(res))
    assert (
        "| ViT-B fp32, ours / serial (every round) | >= 1.0 | 1.02x (rounds 0.99 to 1.05; 3/4 rounds >= 1) | yes |"
        in rows
    )
    assert "| ViT-B fp32, ours / inference-only ceiling | >= 0.97 | 0.98x" in rows
    assert "| swinv2, ours / serial (no target) | — | 1.02x (rounds 0.99 to 1.05) | — |" in rows
    for r, ours in enumerate((0.96, 0.98, 1.2, 0.98)):  # one fast round cannot lift a median below 1.0
        res.runs["vit", "ours"][r]["images_per_s"] = ours
    assert "| 0.98x (rounds 0.96 to 1.20; 1/4 rounds >= 1) | **no** |" in "\n".join(_target_rows(res))
    for r, ours in enumerate((1.0, 1.01, 1.01, 1.0)):  # ceiling 1.04: a median of 0.9663 rounds to 0.97 but misses
        res.runs["vit", "ours"][r]["images_per_s"] = ours
    assert "| >= 0.97 | 0.966x (rounds 0.962 to 0.971) | **no** |" in "\n".join(_target_rows(res))
