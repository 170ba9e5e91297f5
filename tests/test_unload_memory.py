"""After an unload, of any kind, resident memory returns to where it was before the model was loaded.

Each case runs in a fresh interpreter with a real ONNX Runtime session of a ~190 MB stand-in model (the
size of a real WD14 ViT-B), and reads the process's resident size from /proc: before the model is loaded,
while it is, and after the unload. The memory must really go back, not merely be unreferenced.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.modelgen import make_model_dir

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"),
    reason="resident size is read from /proc, and handing memory back is glibc's malloc_trim",
)
HEAVY_MB = 190
TOLERANCE_MB = 50

_PROBE = textwrap.dedent(
    """
    import gc, sys
    from pathlib import Path
    from PIL import Image
    from tagger.engine import Tagger
    from tagger.runtime import release_free_memory

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    root, kind = Path(sys.argv[1]), sys.argv[2]
    tagger = Tagger(root, "cpu", download=False, progress=False, threads=1)
    image = Image.new("RGB", (64, 64), (255, 0, 0))
    # Everything but the heavy model warmed up: imports, onnxruntime's own state, a small model's run.
    tagger.tag_image("tiny", image)
    tagger.unload_all()
    gc.collect()
    release_free_memory()
    before = rss_mb()
    if kind == "unload":
        tagger.tag_image("heavy", image)
        loaded = rss_mb()
        tagger.unload("heavy")
    elif kind == "unload_all":
        tagger.tag_image("heavy", image)
        loaded = rss_mb()
        tagger.unload_all()
    elif kind == "device_change":
        tagger.tag_image("heavy", image)
        loaded = rss_mb()
        tagger.set_device("auto")
    elif kind == "still_referenced":  # a caller keeps the LoadedModel object (the tab used to)
        kept = tagger.load("heavy")
        tagger.tag_image("heavy", image)
        loaded = rss_mb()
        tagger.unload("heavy")
    elif kind == "during_a_batch":  # unloaded while a batch still runs: freed when the batch ends
        stream = tagger.tag_many("heavy", [image, image, image])
        next(stream)
        tagger.unload("heavy")
        loaded = rss_mb()
        assert len(list(stream)) == 2, "the batch finished its images"
    elif kind == "api":
        from fastapi.testclient import TestClient
        from tagger.api import create_app
        import base64, io
        buf = io.BytesIO()
        image.save(buf, "PNG")
        body = {"image": base64.b64encode(buf.getvalue()).decode(), "model": "heavy"}
        with TestClient(create_app(tagger)) as client:
            assert client.post("/tagger/v1/interrogate", json=body).status_code == 200
            loaded = rss_mb()
            assert client.post("/tagger/v1/unload", json={"model": "heavy"}).json()["unloaded"] == 1
    print(before, loaded, rss_mb())
    """
)


@pytest.fixture(scope="module")
def heavy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_model_dir(root / "heavy", heavy_mb=HEAVY_MB)
    make_model_dir(root / "tiny")
    return root


@pytest.mark.parametrize("kind", ["unload", "unload_all", "device_change", "still_referenced", "during_a_batch", "api"])
def test_memory_goes_back_after_an_unload(heavy_root: Path, kind: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(heavy_root), kind], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, loaded, after = (float(x) for x in proc.stdout.split()[-3:])
    assert loaded - before > HEAVY_MB * 0.8, f"the model did not take its memory ({before:.0f} -> {loaded:.0f} MB)"
    assert after - before < TOLERANCE_MB, (
        f"{kind}: {before:.0f} MB before loading, {loaded:.0f} MB loaded, {after:.0f} MB after the unload"
    )
