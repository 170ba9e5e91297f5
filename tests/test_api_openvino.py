"""The OpenVINO devices through the front ends: the HTTP API (a live uvicorn serving the real FastAPI app) with the
generated test model and real PNG files, the probability cache that keeps bf16 and fp32 answers apart, and the
command line's message where OpenVINO is not installed.

OpenVINO is optional (``pip install openvino``): the tests that run it skip with that reason where it is missing.
Whether this CPU has bf16 units decides what cpu-bf16 computes in (bf16, else fp32, and it says so), so the tests
ask ``backends.cpu_bf16_units()`` what to expect.
"""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tagger import backends
from tagger.api import create_app
from tagger.cache import ProbCache
from tagger.engine import Tagger
from tests.liveserver import LiveServer
from tests.modelgen import ROWS, expected_probs

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/tagger/v1"
needs_openvino = pytest.mark.skipif(
    backends.openvino_version() is None, reason="OpenVINO is not installed (pip install openvino)"
)


def bf16_label() -> str:
    """The provider cpu-bf16 reports here: bf16 on a CPU with bf16 units, else fp32."""
    return f"OpenVINO CPU {'bf16' if backends.cpu_bf16_units() else 'fp32'}"


def png_b64(rgb: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def interrogate(live: LiveServer, rgb: tuple[int, int, int]) -> dict:
    body = {"image": png_b64(rgb), "model": "test-model", "threshold": 0.35}
    r = httpx.post(live.url + PREFIX + "/interrogate", json=body, timeout=60, trust_env=False)
    assert r.status_code == 200, r.text
    return r.json()


@needs_openvino
def test_cpu_bf16_behind_the_api_tags_and_says_what_ran(model_root: Path) -> None:
    engine = Tagger(model_root, "cpu-bf16", download=False, progress=False)
    rgb = (200, 30, 40)
    with LiveServer(create_app(engine)) as live:
        answer = interrogate(live, rgb)
        loaded = httpx.get(live.url + PREFIX + "/loaded", trust_env=False).json()["models"]
    assert answer["provider"] == bf16_label()
    assert [m["provider"] for m in loaded] == [bf16_label()]
    if not backends.cpu_bf16_units():  # it runs fp32 and says why
        assert "no bf16 units" in answer["provider_note"]
    # the model's own answer (the oracle of tests/modelgen.py), within bf16's rounding
    want = expected_probs(tuple(c / 255 for c in reversed(rgb)))
    got = answer["caption"]  # ratings and tags at the threshold, by name
    for row, p in zip(ROWS, want, strict=True):
        if p >= 0.35:
            assert got[row.name] == pytest.approx(p, abs=0.01), row.name


@needs_openvino
def test_the_cache_keeps_bf16_and_fp32_answers_apart(model_root: Path, tmp_path: Path) -> None:
    """One engine (as in the WebUI, whose device setting changes it) and a second one sharing the cache file."""
    cache_file = tmp_path / "probs.sqlite3"
    engine = Tagger(model_root, "cpu-bf16", download=False, progress=False, cache=ProbCache(cache_file))
    rgb = (30, 200, 40)
    with LiveServer(create_app(engine)) as live:
        first = interrogate(live, rgb)
        again = interrogate(live, rgb)
        engine.set_device("cpu")
        on_cpu = interrogate(live, rgb)
        engine.set_device("cpu-bf16")
        bf16_again = interrogate(live, rgb)
    other = Tagger(model_root, "cpu", download=False, progress=False, cache=ProbCache(cache_file))
    with LiveServer(create_app(other)) as live:
        other_cpu = interrogate(live, rgb)

    assert first["provider"] == bf16_label() and again["provider"] == "cache"
    if backends.cpu_bf16_units():  # bf16 answers never serve fp32 requests, nor the other way round
        assert on_cpu["provider"] == "CPU"
    else:  # cpu-bf16 ran fp32 here: its answer is an fp32 one and may serve cpu
        assert on_cpu["provider"] == "cache"
    assert bf16_again["provider"] == "cache" and other_cpu["provider"] == "cache"
    assert on_cpu["caption"] == pytest.approx(first["caption"], abs=0.01)


@needs_openvino
def test_openvino_fp32_shares_the_fp32_entries_with_onnx_runtime(model_root: Path, tmp_path: Path) -> None:
    """The cache keys carry the precision, not the backend: OpenVINO at fp32 and ONNX Runtime agree to 1e-6."""
    cache = ProbCache(tmp_path / "probs.sqlite3")
    engine = Tagger(model_root, "openvino", download=False, progress=False, cache=cache)
    with LiveServer(create_app(engine)) as live:
        first = interrogate(live, (40, 30, 200))
        engine.set_device("cpu")
        second = interrogate(live, (40, 30, 200))
    assert first["provider"] == "OpenVINO CPU fp32" and second["provider"] == "cache"


def test_without_openvino_the_api_names_the_device_and_the_fix(model_root: Path, without_openvino: None) -> None:
    engine = Tagger(model_root, "cpu-bf16", download=False, progress=False)
    body = {"image": png_b64((10, 20, 30)), "model": "test-model"}
    with LiveServer(create_app(engine)) as live:
        r = httpx.post(live.url + PREFIX + "/interrogate", json=body, timeout=60, trust_env=False)
    assert r.status_code == 422, r.text
    error = r.json()
    assert error["field"] == "device"
    assert "cpu-bf16 runs on OpenVINO, which is not installed" in error["error"]
    assert "pip install openvino" in error["error"]


# A stand-in for a Python where OpenVINO is not installed, in the CLI's own process: an import hook that finds no
# module named openvino (whether or not it is installed here), then the command line as `python -m tagger`.
HIDE_OPENVINO = """
import runpy, sys

class NoOpenVINO:
    def find_spec(self, name, path=None, target=None):
        if name == "openvino" or name.startswith("openvino."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoOpenVINO())
sys.argv = ["tagger", *sys.argv[1:]]
runpy.run_module("tagger", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("device", ["cpu-bf16", "openvino", "intel-gpu"])
def test_cli_without_openvino_says_what_to_install(model_root: Path, solid_image, device: str) -> None:
    image = solid_image((250, 0, 0), "red.png")
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_OPENVINO, "tag", str(image), "--model", "test-model",
         "--models-dir", str(model_root), "--device", device, "--offline"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"{device} runs on OpenVINO, which is not installed" in proc.stderr
    assert "pip install openvino" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_cli_help_names_every_device() -> None:
    """The command line's help spells out the devices without importing the runtime (it starts without numpy)."""
    from tagger.cli import DEVICE_HELP
    from tagger.runtime import DEVICES

    for device in (d.strip() for d in DEVICES.split(",")):
        assert device.replace(":N", "[:N]") in DEVICE_HELP, device
