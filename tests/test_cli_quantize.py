"""``python -m tagger quantize``: the opt-in int8 copy through the command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def test_quantize_then_validate_then_tag(model_root: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(model_root / "test-model", models / "test-model")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, rgb in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (40, 40), rgb).save(imgs / f"{i}.png")

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "tagger", *args, "--models-dir", str(models)]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)

    r = cli("quantize", "test-model")
    assert r.returncode == 0, r.stderr
    assert (models / "test-model-int8" / "model.onnx").is_file() and "--model test-model-int8" in r.stdout
    again = cli("quantize", "test-model")
    assert again.returncode == 2 and "already exists" in again.stderr  # never replaced silently
    r = cli("quantize", "test-model", "--validate", str(imgs))
    assert r.returncode == 0, r.stderr
    assert "on 3 images" in r.stdout and "mean F1 1.0000" in r.stdout
    listed = cli("models")
    assert "test-model-int8" in listed.stdout
    tagged = cli("tag", str(imgs / "0.png"), "--model", "test-model-int8", "--no-cache")
    assert tagged.returncode == 0 and "red theme" in tagged.stdout
