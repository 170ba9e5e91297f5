"""paths.name_problem: the one check of names that become the user's folders and files (local models, presets,
quantised copies), and the three places that use it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagger import hub, paths
from tagger.errors import ModelUnavailableError
from tagger.options import TagOptions
from tagger.presets import PresetError, PresetStore
from tests.modelgen import make_model_dir

GOOD = ["wd-vit-tagger-v3", "Anime 2", "my.model", "模型", "a" * 255, " leading space", "con-tagger", "COM10", "LPT0"]
BAD = {
    "": "empty",
    ".": "starts with a dot",
    "..": "starts with a dot",
    ".hidden": "starts with a dot",
    "a/b": "contains /",
    "../escape": "contains /",
    "a\\b": "contains \\",
    "c:model": "contains :",
    'q"': 'contains "',
    "what?": "contains ?",
    "a*": "contains *",
    "<x>": "contains <",
    "a|b": "contains |",
    "tab\there": r"contains '\t'",
    "nul\x00byte": r"contains '\x00'",
    "trailing.": "ends with a space or a dot",
    "trailing ": "ends with a space or a dot",
    "CON": "Windows device",
    "nul": "Windows device",
    "Aux.json": "Windows device",
    "com1": "Windows device",
    "LPT9 .txt": "Windows device",
    "a" * 256: "longer than 255 characters",
}


@pytest.mark.parametrize("name", GOOD)
def test_names_every_platform_can_hold(name: str) -> None:
    assert paths.name_problem(name) is None


@pytest.mark.parametrize(("name", "why"), BAD.items(), ids=[repr(n)[:20] for n in BAD])
def test_names_refused_with_the_reason(name: str, why: str) -> None:
    problem = paths.name_problem(name)
    assert problem is not None and why in problem


def test_length_limit_is_the_callers() -> None:
    assert paths.name_problem("x" * 64, max_length=64) is None
    assert paths.name_problem("x" * 65, max_length=64) == "longer than 64 characters"


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "c:model", "CON", "trailing.", "x" * 65])
def test_presets_refuse_what_the_check_refuses(tmp_path: Path, name: str) -> None:
    store = PresetStore(tmp_path / "presets")
    with pytest.raises(PresetError, match=r"^Preset name "):
        store.save(name, TagOptions())
    assert not (tmp_path / "presets").exists() or not any((tmp_path / "presets").iterdir())
    assert store.save("  Anime 2 ", TagOptions()).name == "Anime 2.json"  # trimmed, then checked


@pytest.mark.parametrize("name", ["c:model", "CON", "trailing.", ".hidden"])
def test_model_folders_named_so_are_neither_listed_nor_found_by_name(tmp_path: Path, name: str) -> None:
    # On Linux such folders can exist; they are not model names (hidden, or not portable), so the list and
    # the lookup by name agree: a folder path still reaches them.
    models_dir = tmp_path / "models"
    folder = make_model_dir(models_dir / name)
    make_model_dir(models_dir / "fine")
    assert [i.name for i in hub.list_models(models_dir) if i.family == "local"] == ["fine"]
    with pytest.raises(ModelUnavailableError, match="Unknown model"):
        hub.resolve_model(name, models_dir, download=False)
    assert hub.resolve_model(str(folder), models_dir).model_path == folder / "model.onnx"


@pytest.mark.parametrize("name", ["c:model", "CON", "trailing.", "a/b", ".."])
def test_quantize_refuses_what_the_check_refuses(tmp_path: Path, name: str) -> None:
    pytest.importorskip("onnx")
    from tagger.quantize import QuantizeError, quantize_model

    models_dir = tmp_path / "models"
    make_model_dir(models_dir / "source")
    with pytest.raises(QuantizeError, match="cannot be the quantised model's folder name"):
        quantize_model("source", models_dir, out_name=name)
    assert sorted(p.name for p in models_dir.iterdir()) == ["source"]
