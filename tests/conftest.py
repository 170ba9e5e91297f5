from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.modelgen import CATEGORY_ROWS, make_model_dir


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the generated test models: ``test-model`` (dynamic batch, S=32),
    ``test-model-b1`` (fixed batch 1) and ``test-model-cats`` (with copyright, artist and meta tags too)."""
    root = tmp_path_factory.mktemp("models")
    make_model_dir(root / "test-model")
    make_model_dir(root / "test-model-b1", fixed_batch=True)
    make_model_dir(root / "test-model-cats", rows=CATEGORY_ROWS)
    return root


@pytest.fixture
def solid_image(tmp_path: Path):
    """Write a solid-colour RGB image and return its path: ``solid_image((255, 0, 0), "red.png")``."""

    def make(rgb: tuple[int, int, int], name: str = "img.png", size: tuple[int, int] = (64, 48)) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, rgb).save(path)
        return path

    return make


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and the CLI subprocesses it starts) gets its own probability cache, never the user's."""
    monkeypatch.setenv("TAGGER_CACHE", str(tmp_path_factory.mktemp("cache") / "probs.sqlite3"))


@pytest.fixture
def without_openvino(monkeypatch: pytest.MonkeyPatch):
    """A Python without OpenVINO, for the message its users get: ``import openvino`` fails as it does where it is
    not installed (None in ``sys.modules``), and what tagger.backends remembers of it is forgotten before and after
    (the real module comes back when the test ends)."""
    import sys

    from tagger import backends

    monkeypatch.setitem(sys.modules, "openvino", None)
    backends.openvino_version.cache_clear()
    backends._core.cache_clear()
    yield
    backends.openvino_version.cache_clear()
    backends._core.cache_clear()
