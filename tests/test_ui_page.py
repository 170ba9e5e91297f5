"""The Tagger page without a browser: its handlers called directly, the pure rendering, presets, and the
rules about ids, CSS, JavaScript and translations. (The browser tests are in test_ui_browser.py.)"""

from __future__ import annotations

import collections
import importlib.util
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

if importlib.util.find_spec("gradio") is None:  # absent: skip; installed but broken: fail loudly
    pytest.skip("gradio is not installed (pip install -e .[ui])", allow_module_level=True)

import gradio as gr

from tagger.batch import BatchProgress, BatchSummary, top_tags, write_counts_csv
from tagger.cache import ProbCache
from tagger.compare import REASONS
from tagger.engine import Tagger
from tagger.host import HostDefaults, StandaloneHost
from tagger.hub import ModelInfo
from tagger.options import OPTION_FIELDS, TagOptions
from tagger.presets import PresetError, PresetStore
from tagger.ui import build_ui, render
from tagger.ui.controls import CATEGORY_FIELDS, label_of
from tagger.webui import settings_list

ROOT = Path(__file__).resolve().parent.parent
NO_PROGRESS = lambda *a, **k: None  # noqa: E731 - stands in for gr.Progress


@pytest.fixture
def page(model_root: Path, tmp_path: Path) -> Any:
    host = StandaloneHost(HostDefaults(model="test-model", general_threshold=0.3), presets_dir=tmp_path / "presets")
    return build_ui(Tagger(model_root, "cpu"), host)


def inputs(page: Any, **overrides: Any) -> dict[Any, Any]:
    """The ``{component: value}`` an event would send, from the components' current values."""
    data = {c: c.value for c in page.controls}
    data.update({page.model: page.model.value, page.unload_after: False, page.last: None, page.image: None})
    for name, value in overrides.items():
        key = page.controls.components.get(name) or getattr(page, name)
        data[key] = value
    return data


def red() -> Image.Image:
    return Image.new("RGB", (40, 30), (255, 0, 0))


# -- the controls --------------------------------------------------------------------------------------------


def test_every_option_has_a_control_with_its_default_range_and_description(page: Any) -> None:
    # the per-category fields have a slider and a switch per category instead (test_category_controls_...)
    assert list(page.controls.components) == [n for n in OPTION_FIELDS if n not in CATEGORY_FIELDS]
    d = TagOptions()
    for name, comp in page.controls.components.items():
        f = OPTION_FIELDS[name]
        assert comp.elem_id == f"tagger_opt_{name}"
        assert comp.label == label_of(name) and comp.info == f.metadata["description"]
        if "ge" in f.metadata and isinstance(comp, gr.Slider):
            assert (comp.minimum, comp.maximum) == (f.metadata["ge"], f.metadata["le"])
        if name not in ("general_threshold",):
            expected = getattr(d, name)
            assert comp.value == (", ".join(expected) if isinstance(expected, tuple) else expected), name
    assert page.controls.components["general_threshold"].value == 0.3  # the host's default


def test_controls_round_trip_options(page: Any) -> None:
    opts = TagOptions(general_threshold=0.4, exclude_tags=("a", "b c"), sort="alpha", max_tags=7, weights=True)
    updates = page.controls.updates(opts)
    data = {comp: updates[comp] for comp in page.controls}
    assert page.controls.options(data) == opts


# -- handlers ------------------------------------------------------------------------------------------------


def test_interrogate_fills_prompt_bars_status_and_remembers_probabilities(page: Any) -> None:
    out = page.interrogate(inputs(page, image=red()), NO_PROGRESS)
    assert out[page.prompt].startswith("red theme, solo, kirisame marisa")
    assert list(out[page.ratings]) == ["general", "sensitive", "questionable", "explicit"]
    assert out[page.tags]["red theme"] == pytest.approx(1.0, abs=1e-3)
    assert "test-model" in out[page.status] and "CPU" in out[page.status]
    assert out[page.last].model == "test-model"
    retagged = page.retag(inputs(page, last=out[page.last], general_threshold=0.55, exclude_tags="solo"))
    assert "long hair" not in retagged[page.prompt] and "solo" not in retagged[page.prompt]


def test_a_cached_answer_retags_exactly_and_says_when_a_threshold_needs_the_model(
    model_root: Path, tmp_path: Path
) -> None:
    from tagger.cache import ProbCache

    host = StandaloneHost(HostDefaults(model="test-model"), presets_dir=tmp_path / "presets")
    cached_page = build_ui(Tagger(model_root, "cpu", cache=ProbCache(tmp_path / "probs.sqlite3")), host)
    first = cached_page.interrogate(inputs(cached_page, image=red()), NO_PROGRESS)
    again = cached_page.interrogate(inputs(cached_page, image=red()), NO_PROGRESS)
    assert first[cached_page.last].hit is None and again[cached_page.last].hit is not None  # the cache answered
    for options in ({"general_threshold": 0.55}, {"general_mcut": True, "character_mcut": True}):
        model_side = cached_page.retag(inputs(cached_page, last=first[cached_page.last], **options))
        cache_side = cached_page.retag(inputs(cached_page, last=again[cached_page.last], **options))
        assert cache_side[cached_page.prompt] == model_side[cached_page.prompt]
        assert "need the model" not in cache_side[cached_page.status]
    low = cached_page.retag(inputs(cached_page, last=again[cached_page.last], general_threshold=0.005))
    assert "Thresholds under 0.01 need the model" in low[cached_page.status]
    low_fresh = cached_page.retag(inputs(cached_page, last=first[cached_page.last], general_threshold=0.005))
    assert "need the model" not in low_fresh[cached_page.status]  # the model's own probabilities are exact


def test_a_cache_hit_in_the_tab_does_not_load_the_model(model_root: Path, tmp_path: Path) -> None:
    """The tab answers a seen image from the cache as the API does: the model stays unloaded."""
    from tagger.cache import ProbCache

    host = StandaloneHost(HostDefaults(model="test-model"), presets_dir=tmp_path / "presets")
    cached_page = build_ui(Tagger(model_root, "cpu", cache=ProbCache(tmp_path / "probs.sqlite3")), host)
    first = cached_page.interrogate(inputs(cached_page, image=red()), NO_PROGRESS)
    assert cached_page.tagger.unload_all() == 1
    again = cached_page.interrogate(inputs(cached_page, image=red(), general_threshold=0.5), NO_PROGRESS)
    assert again[cached_page.last].provider == "cache" and "cache" in again[cached_page.status]
    assert cached_page.tagger.loaded() == []
    assert again[cached_page.prompt] != first[cached_page.prompt]  # re-thresholded from the cached answer


def test_unload_after_and_unload_all_report_no_model_loaded(page: Any) -> None:
    out = page.interrogate(inputs(page, image=red(), unload_after=True), NO_PROGRESS)
    assert "unloaded after use" in out[page.status] and render.NO_MODEL_LOADED in out[page.status]
    assert page.tagger.loaded() == []
    page.interrogate(inputs(page, image=red()), NO_PROGRESS)
    assert "Unloaded 1 model" in page.unload_all() and page.tagger.loaded() == []
    assert render.NO_MODEL_LOADED in page.status_now()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "No image"),
        ({"image": red(), "model": "no-such-model"}, "no-such-model"),
        ({"image": red(), "general_threshold": 1.5}, "general_threshold: 1.5 is above the maximum 1.0"),
    ],
)
def test_errors_become_status_messages_not_exceptions(page: Any, overrides: dict, message: str) -> None:
    out = page.interrogate(inputs(page, **overrides), NO_PROGRESS)
    assert set(out) == {page.status}
    assert "tagger-error" in out[page.status] and message in out[page.status]


def test_unexpected_errors_are_shown_and_logged(page: Any, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(page.tagger, "tag_image", boom)
    out = page.interrogate(inputs(page, image=red()), NO_PROGRESS)
    assert "Unexpected error (RuntimeError: disk on fire)" in out[page.status]
    assert "disk on fire" in caplog.text


def test_interrogate_on_drop_follows_the_setting(page: Any) -> None:
    assert set(page.interrogate_on_drop(inputs(page, image=red()), NO_PROGRESS)) == {page.status}
    page.host._defaults = HostDefaults(model="test-model", interrogate_on_drop=True)
    assert page.prompt in page.interrogate_on_drop(inputs(page, image=red()), NO_PROGRESS)


# -- the image's own generation data ---------------------------------------------------------------------


def made_by_a1111(tmp_path: Path) -> Image.Image:
    """A PNG written as the WebUI writes it, opened as gradio hands it to the page (decoded and converted)."""
    from tests import geninfo

    with Image.open(geninfo.a1111_png(tmp_path / "made.png")) as im:
        return im.convert("RGBA")


def panel_inputs(page: Any, **overrides: Any) -> dict[Any, Any]:
    panel = page.embedded
    data = inputs(page, **{k: v for k, v in overrides.items() if k not in ("keep", "send", "shown")})
    data.update({panel.keep_networks: overrides.get("keep", True), panel.send_settings: overrides.get("send", False)})
    data[panel.state] = overrides.get("shown")
    return data


def test_a_dropped_image_shows_its_generation_data_at_once(page: Any, tmp_path: Path) -> None:
    from tagger.embedded import parse_infotext
    from tests import geninfo

    panel = page.embedded
    prompt, negative, settings = parse_infotext(geninfo.INFOTEXT)
    shown = panel.show(made_by_a1111(tmp_path), True, False)
    assert shown[panel.group]["visible"] is True
    assert (shown[panel.prompt], shown[panel.negative], shown[panel.settings]) == (prompt, negative, settings)
    assert "A1111 / Forge" in shown[panel.source] and render.COMPARE_PENDING in shown[panel.comparison]
    assert shown[panel.merged] == "" and page.tagger.loaded() == []  # no model ran for it
    plain = panel.show(red(), True, False)
    assert plain[panel.group]["visible"] is False and plain[panel.state].data is None
    assert panel.show(None, True, False)[panel.group]["visible"] is False


def test_tagging_compares_and_option_changes_follow(page: Any, tmp_path: Path) -> None:
    panel = page.embedded
    image = made_by_a1111(tmp_path)
    out = page.tag_and_compare(panel_inputs(page, image=image), NO_PROGRESS)
    assert out[page.prompt] == page.interrogate(inputs(page, image=image), NO_PROGRESS)[page.prompt]
    groups = out[panel.comparison]
    assert "Confirmed by the tagger" in groups and "<span>hakurei reimu</span> <b>0.30</b>" in groups
    assert "<span>&lt;lora:myStyle:0.8&gt;</span> <i>LoRA or other extra network</i>" in groups
    merged = out[panel.merged]
    assert merged.startswith("masterpiece, (solo:1.2), long_hair, smile, <lora:myStyle:0.8>, sks_style, 東方, ")
    assert "hakurei" not in merged and "red theme" in merged
    # A threshold under hakurei_reimu's 0.3 (the page's host starts general at 0.3): it is confirmed now.
    later = page.retag_and_compare(
        panel_inputs(page, last=out[page.last], shown=out[panel.state], character_threshold=0.25)
    )
    assert "hakurei reimu" in later[panel.merged] and later[page.prompt] != out[page.prompt]
    # The switches: LoRA references out of both prompts; the negative prompt and settings sent along.
    switched = page.switch_embedded(
        panel_inputs(page, last=out[page.last], shown=out[panel.state], keep=False, send=True)
    )
    assert "<lora" not in switched[panel.prompt] and "<lora" not in switched[panel.merged]
    assert switched[panel.merged].endswith(
        "\nNegative prompt: (worst quality:1.4), bad hands\nSteps: 20, Sampler: "
        "DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 64x48, "
        'Lora hashes: "myStyle: 0123abcd"'
    )


def test_a_new_image_is_not_compared_with_the_last_ones_tags(page: Any, tmp_path: Path) -> None:
    """Dropping another image keeps the last prediction for re-formatting, as before; the panel waits."""
    panel = page.embedded
    first = page.tag_and_compare(panel_inputs(page, image=red()), NO_PROGRESS)
    assert first[panel.group]["visible"] is False
    shown = panel.show(made_by_a1111(tmp_path), True, False)[panel.state]
    later = page.retag_and_compare(panel_inputs(page, last=first[page.last], shown=shown, general_threshold=0.5))
    assert render.COMPARE_PENDING in later[panel.comparison] and later[panel.merged] == ""


def test_interrogate_on_drop_shows_the_generation_data_in_the_same_event(page: Any, tmp_path: Path) -> None:
    """With "interrogate on drop" a drop starts one event (see _wire), which shows the panel compared."""
    panel = page.embedded
    page.host._defaults = HostDefaults(model="test-model", interrogate_on_drop=True)
    out = page.tag_dropped_and_compare(panel_inputs(page, image=made_by_a1111(tmp_path)), NO_PROGRESS)
    assert out[panel.group]["visible"] is True and out[panel.state].tagged
    assert "red theme" in out[panel.merged] and "Added by the tagger" in out[panel.comparison]


def test_without_generation_data_the_tab_answers_as_before(page: Any) -> None:
    panel = page.embedded
    out = page.tag_and_compare(panel_inputs(page, image=red()), NO_PROGRESS)
    before = page.interrogate(inputs(page, image=red()), NO_PROGRESS)
    assert {k: out[k] for k in before if k is not page.last and k is not page.status} == {
        k: v for k, v in before.items() if k is not page.last and k is not page.status
    }
    assert out[panel.group]["visible"] is False and out[panel.merged] == ""
    failed = page.tag_and_compare(panel_inputs(page), NO_PROGRESS)  # no image: only the status says so
    assert "No image" in failed[page.status] and page.prompt not in failed


def test_clicking_a_tag_adds_it_to_the_excludes_once(page: Any) -> None:
    evt = gr.SelectData(None, {"index": 1, "value": "long hair", "selected": True})
    assert page.exclude_selected("solo", evt) == "solo, long hair"
    assert page.exclude_selected("solo, long_hair", evt) == "solo, long_hair"
    assert page.exclude_selected("", evt) == "long hair"


def test_each_page_load_lists_the_models_on_disk_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.modelgen import make_model_dir

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # no catalog model cached anywhere
    models = tmp_path / "models"
    make_model_dir(models / "test-model")
    host = StandaloneHost(HostDefaults(model="wd-vit-tagger-v3"), presets_dir=tmp_path / "presets")
    fresh = build_ui(Tagger(models, "cpu"), host)
    assert fresh.model.value == "wd-vit-tagger-v3 · not downloaded"
    make_model_dir(models / "wd-vit-tagger-v3")  # the catalog model's files, put there after the start
    make_model_dir(models / "added-later")
    update, status = fresh.page_loaded(fresh.model.value)
    assert update["value"].startswith("wd-vit-tagger-v3 · downloaded")
    assert any(c.startswith("added-later · local") for c in update["choices"])
    assert render.NO_MODEL_LOADED in status
    update, _ = fresh.page_loaded("test-model · local, 1 kB")  # the user's choice is kept
    assert update["value"].startswith("test-model · local")


def test_presets_save_load_delete_through_the_page(page: Any) -> None:
    saved = page.save_preset(inputs(page, preset=None, preset_name="portraits", general_threshold=0.42, weights=True))
    assert "Preset saved" in saved[page.status]
    assert (page.host.presets_dir() / "portraits.json").is_file()
    loaded = page.load_preset({page.preset: "portraits"})
    assert loaded[page.controls.components["general_threshold"]] == 0.42
    assert loaded[page.controls.components["weights"]] is True
    assert "Preset loaded: portraits" in loaded[page.status]
    bad = page.save_preset(inputs(page, preset=None, preset_name="../escape"))
    assert set(bad) == {page.status} and "Preset name" in bad[page.status]
    page.delete_preset({page.preset: "portraits"})
    assert not (page.host.presets_dir() / "portraits.json").exists()


def test_batch_handler_streams_progress_and_ends_with_the_summary(page: Any, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        red().save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"not an image")
    stream = page.run_batch(batch_inputs(page, folder, "t1", batch_json=True))
    final = next(u for u in stream if u.get(page.batch_summary))
    assert "3 tagged" in final[page.batch_summary] and "bad.png" in final[page.batch_summary]
    assert final[page.batch_table]["value"]["headers"] == ["Tag", "Images", "Share %"]
    assert ["red theme", 3, 100.0] in final[page.batch_table]["value"]["data"]
    assert final[page.batch_table]["visible"] is True
    # gradio copies the CSV when it sends this update, before it asks the handler for more
    csv_lines = Path(final[page.batch_csv]).read_text(encoding="utf-8-sig").splitlines()
    assert csv_lines[0] == "tag,images,share_percent" and "red theme,3,100.0" in csv_lines
    assert list(stream) == []
    assert (folder / "0.txt").read_text(encoding="utf-8").startswith("red theme")
    assert (folder / "0.json").is_file()
    assert page._batches == {}  # the cancel token is dropped when the batch ends


def test_batch_captions_are_plain_and_the_table_spells_tags_as_the_single_view(page: Any, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(folder / "a.png")
    data = batch_inputs(page, folder, "t1", weights=True, escape=True)  # the prompt's switches
    final = list(page.run_batch(data))[-1]
    caption = (folder / "a.txt").read_text(encoding="utf-8")
    assert "(pokemon (creature):0.60)" in caption and "\\(" not in caption  # weights yes, escapes no
    assert ["pokemon (creature)", 1, 100.0] in final[page.batch_table]["value"]["data"]
    assert ">pokemon (creature)<" in final[page.batch_chart]
    again = batch_inputs(page, folder, "t2", batch_existing="overwrite", batch_escape=True)
    list(page.run_batch(again))
    assert "pokemon \\(creature\\)" in (folder / "a.txt").read_text(encoding="utf-8")
    assert (folder / "a.txt.bak").read_text(encoding="utf-8") == caption


def test_preview_says_what_a_batch_would_do_and_writes_nothing(page: Any, model_root: Path, tmp_path: Path) -> None:
    no_cache = page.preview_batch(batch_inputs(page, tmp_path, "t0"))
    assert "No tag statistics: the probability cache is off" in no_cache[page.batch_summary]
    page = build_ui(Tagger(model_root, "cpu", cache=ProbCache(tmp_path / "c.sqlite3")), page.host)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("pic.png", "pic.jpg", "other.png"):
        Image.new("RGB", (32, 32), (255, 0, 0)).save(folder / name)
    list(page.run_batch(batch_inputs(page, folder / "other.png", "t1")))  # its probabilities go into the cache
    before = sorted(p.name for p in folder.iterdir())
    out = page.preview_batch(batch_inputs(page, folder, "t2", exclude_tags="solo", batch_existing="overwrite"))
    assert sorted(p.name for p in folder.iterdir()) == before
    summary = out[page.batch_summary]
    assert "Preview, nothing written: 3 images: 1 new, 0 skip, 1 overwrite, 0 append, 0 prepend, 1 failed." in summary
    assert "1 captions would be kept as a backup first." in summary
    assert "pic.png" in summary and "already the caption of" in summary  # the collision, with its fix
    assert "probability cache: 1 of 2 images" in summary and "excluded: solo (1 images)" in summary
    rows = out[page.batch_table]["value"]["data"]
    assert ["red theme", 1, 100.0] in rows and all(r[0] != "solo" for r in rows)
    bad = page.preview_batch(batch_inputs(page, folder, "t3", batch_metadata=str(tmp_path / "m.txt")))
    assert ".json (one object) or .jsonl" in bad[page.status]


def test_a_rerun_that_skips_everything_hides_the_empty_table(page: Any, tmp_path: Path) -> None:
    """Given no rows, gradio replaces a table's headers with 1, 2, 3: an empty table is not shown at all."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    red().save(folder / "a.png")
    first = list(page.run_batch(batch_inputs(page, folder, "t1")))
    assert first[0][page.batch_table]["visible"] is False  # while it runs there is nothing to show yet
    assert first[-1][page.batch_table]["visible"] is True
    again = list(page.run_batch(batch_inputs(page, folder, "t2")))[-1]
    assert "0 tagged, 1 skipped" in again[page.batch_summary]
    assert again[page.batch_table]["visible"] is False
    assert again[page.batch_table]["value"] == {"headers": ["Tag", "Images", "Share %"], "data": []}
    assert "No tags." in again[page.batch_chart] and again[page.batch_csv] is None


def test_batches_leave_no_temporary_folder_behind(page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # this test's own temporary folder
    (tmp_path / "tmp").mkdir()
    folder = tmp_path / "imgs"
    folder.mkdir()
    red().save(folder / "a.png")
    for i in range(3):
        stream = page.run_batch(batch_inputs(page, folder, f"t{i}", batch_existing="overwrite"))
        final = next(u for u in stream if u.get(page.batch_summary))
        assert Path(final[page.batch_csv]).is_file()
        assert list(stream) == []  # the handler is done: its CSV has been sent
        assert list((tmp_path / "tmp").iterdir()) == []
    stream = page.run_batch(batch_inputs(page, folder, "closed", batch_existing="overwrite"))
    final = next(u for u in stream if u.get(page.batch_summary))
    stream.close()  # the browser went away before the end
    assert not Path(final[page.batch_csv]).exists() and list((tmp_path / "tmp").iterdir()) == []


def test_batch_config_errors_are_readable(page: Any, tmp_path: Path) -> None:
    data = inputs(
        page,
        batch_token="t",
        batch_input="",
        batch_recursive=False,
        batch_output="",
        batch_format="[name].txt",
        batch_existing="skip",
        batch_json=False,
        batch_escape=False,
        batch_backup=True,
        batch_metadata="",
        batch_workers=0,
    )
    assert "type the folder" in list(page.run_batch(data))[-1][page.status]
    data[page.batch_input] = str(tmp_path / "missing")
    assert "no such file or folder" in list(page.run_batch(data))[-1][page.status]
    data[page.batch_input], data[page.batch_format] = str(tmp_path), "../[name].txt"
    assert "outside the output folder" in list(page.run_batch(data))[-1][page.status]


class HeldBatch:
    """Holds the page's batches after their first image until ``release()`` (a gate in the real batch's
    progress callback), so a test acts while a batch is known to be running; counts the page's progress
    polls (each one asks the host whether the user interrupted)."""

    def __init__(self, page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        import tagger.ui.page as page_module

        self.first_image = threading.Event()
        self._released = threading.Event()
        self._polled = threading.Condition()
        self.polls = 0
        real_run, real_interrupted = page_module.run_batch, page.host.interrupted

        def held_run(*args: Any, progress: Any, **kwargs: Any) -> Any:
            def report(p: BatchProgress) -> None:
                progress(p)
                if p.done == 1:
                    self.first_image.set()
                    self._released.wait(60)

            return real_run(*args, progress=report, **kwargs)

        def counted_interrupted() -> bool:
            with self._polled:
                self.polls += 1
                self._polled.notify_all()
            return real_interrupted()

        monkeypatch.setattr(page_module, "run_batch", held_run)
        monkeypatch.setattr(page.host, "interrupted", counted_interrupted)

    def wait_polls(self, n: int) -> None:
        with self._polled:
            target = self.polls + n
            assert self._polled.wait_for(lambda: self.polls >= target, 30), "the page stopped polling its batch"

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> HeldBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def batch_inputs(page: Any, folder: Path, token: str, **overrides: Any) -> dict[Any, Any]:
    fields = {
        "batch_token": token,
        "batch_input": str(folder),
        "batch_recursive": False,
        "batch_output": "",
        "batch_format": "[name].txt",
        "batch_existing": "skip",
        "batch_json": False,
        "batch_escape": False,
        "batch_backup": True,
        "batch_metadata": "",
        "batch_workers": 0,
    }
    return inputs(page, **{**fields, **overrides})


def test_cancel_stops_a_running_batch_and_says_so_until_it_stops(
    page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(6):
        red().save(folder / f"{i}.png")
    with HeldBatch(page, monkeypatch) as held:
        stream = page.run_batch(batch_inputs(page, folder, "tok"))
        while "1 / 6 images" not in next(stream).get(page.batch_progress, ""):
            pass
        page.cancel_batch("tok")
        for _ in range(3):  # the polls while the batch finishes its image: the numbers, and "cancelling"
            progress = next(stream)[page.batch_progress]
            assert render.CANCELLING in progress and "1 / 6 images" in progress
        held.release()
        rest = list(stream)
    assert all(render.CANCELLING in u[page.batch_progress] for u in rest[:-1])
    assert "Cancelled" in rest[-1][page.batch_summary]
    assert render.CANCELLING not in rest[-1][page.batch_progress]  # stopped: the last numbers alone
    assert page._batches == {}  # a finished batch has nothing left to cancel


# -- rendering -----------------------------------------------------------------------------------------------


def test_model_choices_round_trip_and_say_what_is_downloaded() -> None:
    infos = [
        ModelInfo("wd-vit-tagger-v3", "x", "v3", "r", "main", False, None, None, 10861),
        ModelInfo("mine", "mine (local)", "local", None, None, True, 2_500_000, Path("/m/mine"), 18),
    ]
    choices = render.model_choices(infos)
    assert choices == ["wd-vit-tagger-v3 · not downloaded", "mine · local, 2 MB"]
    assert [render.choice_to_model(c) for c in choices] == ["wd-vit-tagger-v3", "mine"]
    assert render.choice_for("mine", choices) == choices[1] and render.choice_for("other", choices) is None


def test_status_shows_provider_time_and_the_cuda_note() -> None:
    html = render.status_html(model="m", provider="CPU", elapsed=0.0123, note="CUDA is not used: <fix>")
    assert "CPU" in html and "12 ms" in html and "CUDA is not used: &lt;fix&gt;" in html
    assert render.NO_MODEL_LOADED in render.status_html()
    assert "Loaded: a, b" in render.status_html(loaded=["a", "b"])


def test_progress_summary_chart() -> None:
    p = BatchProgress(done=5, total=20, tagged=4, skipped=1, failed=0, elapsed=2.0, rate=2.0, eta=7.5, current="x.png")
    html = render.progress_html(p)
    assert "5 / 20 images (25%)" in html and "ETA 8 s" in html and "width:25.0%" in html
    s = BatchSummary(tagged=2, failures=[("/a.png", "broken <png>")], failed=1, elapsed=61, images_per_s=0.03)
    s.tag_counts.update({"solo": 2, "smile": 1})
    assert "1 min 01 s" in render.summary_html(s) and "broken &lt;png&gt;" in render.summary_html(s)
    rows = top_tags(s.tag_counts, 2)
    assert rows == [["solo", 2, 100.0], ["smile", 1, 50.0]]
    assert "width:50.0%" in render.bar_chart_html(rows)
    assert render.duration(None) == "…" and render.duration(3725) == "1 h 02 min"


# -- presets -------------------------------------------------------------------------------------------------


def test_presets_keep_every_option_and_refuse_bad_names_and_values(tmp_path: Path) -> None:
    store = PresetStore(tmp_path / "p")
    assert store.names() == []
    opts = TagOptions(character_threshold=0.7, additional_tags=("masterpiece",), include_rating=True)
    store.save("Anime 2", opts, "wd-vit-tagger-v3")
    preset = store.load("Anime 2")
    assert (preset.options, preset.model) == (opts, "wd-vit-tagger-v3")
    for bad in ("", "a/b", "..", ".hidden", "x" * 65, 'q"'):
        with pytest.raises(PresetError, match="Preset name"):
            store.save(bad, opts)
    path = store.path("Anime 2")
    record = json.loads(path.read_text())
    record["options"]["from_the_future"] = 1
    path.write_text(json.dumps(record))
    assert store.load("Anime 2").ignored == ("from_the_future",)
    record["options"]["general_threshold"] = "high"
    path.write_text(json.dumps(record))
    with pytest.raises(PresetError, match="general_threshold"):
        store.load("Anime 2")
    with pytest.raises(PresetError, match="does not exist"):
        store.load("nope")


# -- ids, CSS, JavaScript, translations ----------------------------------------------------------------------


def _ui_strings(demo: gr.Blocks) -> set[str]:
    out: set[str] = set()
    for b in demo.blocks.values():
        for attr in ("label", "info", "placeholder"):
            v = getattr(b, attr, None)
            if isinstance(v, str) and v:
                out.add(v)
        if isinstance(b, gr.Button):
            out.add(b.value)
        if isinstance(b, gr.Radio):
            out.update(c if isinstance(c, str) else c[0] for c in b.choices)
        if isinstance(b, gr.Dataframe) and isinstance(b.headers, list):
            out.update(b.headers)
    return out


def test_every_ui_string_has_a_chinese_translation(page: Any) -> None:
    zh = json.loads((ROOT / "localizations" / "zh_CN.json").read_text(encoding="utf-8"))
    wanted = _ui_strings(page.demo) | {s.label for s in settings_list(list)}
    wanted |= {"Tagger", "Send to txt2img", "Send to img2img", "Stored in", render.NO_MODEL_LOADED}
    wanted |= {render.EMBEDDED_FOUND, render.COMPARE_PENDING, render.NO_EMBEDDED_PROMPT, *dict(render.GROUPS).values()}
    wanted |= set(REASONS.values())
    for s in settings_list(list):
        args = s.args() if callable(s.args) else (s.args or {})
        wanted.update(c for c in args.get("choices", []) if isinstance(c, str))
    missing = sorted(wanted - set(zh))
    assert not missing, f"localizations/zh_CN.json lacks: {missing}"
    assert all(isinstance(v, str) and v.strip() for v in zh.values())


def test_every_element_id_is_prefixed_and_unique(page: Any) -> None:
    ids = [b.elem_id for b in page.demo.blocks.values() if getattr(b, "elem_id", None)]
    assert ids and all(i.startswith("tagger_") for i in ids)
    assert len(ids) == len(set(ids))


def test_css_and_javascript_address_only_the_tabs_ids() -> None:
    css = re.sub(r"/\*.*?\*/", "", (ROOT / "style.css").read_text(encoding="utf-8"), flags=re.S)
    selectors = [s.strip() for block in re.findall(r"([^{}]+)\{", css) for s in block.split(",")]
    assert selectors and all(s.startswith("#tagger_") for s in selectors), selectors
    js = (ROOT / "javascript" / "tagger.js").read_text(encoding="utf-8")
    ids = re.findall(r"#([A-Za-z_][\w-]*)", js)
    assert ids and all(i.startswith("tagger_") for i in ids), ids
    assert not re.search(r"getElementById\(", js)
    globals_ = set(re.findall(r"window\.(\w+)\s*=", js))
    assert globals_ == {"taggerScriptLoaded"}


def test_counts_csv_has_every_tag(tmp_path: Path) -> None:
    counts = collections.Counter({f"t{i}": i for i in range(1, 300)})
    path = write_counts_csv(tmp_path / "c.csv", counts, 299)
    assert len(path.read_text(encoding="utf-8-sig").splitlines()) == 300


def test_components_started_from_settings_are_not_saved_by_the_host(page: Any) -> None:
    """The WebUI's ui-config.json would otherwise override the Tagger settings after the first launch."""
    assert page.model.do_not_save_to_config and page.unload_after.do_not_save_to_config
    for name in ("general_threshold", "character_threshold"):
        assert page.controls.components[name].do_not_save_to_config


# -- categories beyond general and character (issue 10) --------------------------------------------------------


def test_category_controls_follow_the_chosen_model(model_root: Path, tmp_path: Path) -> None:
    import shutil

    from tagger.postprocess import category_threshold
    from tests.test_families import BY_ID, build, scene

    root = tmp_path / "models"
    build(root, BY_ID["camie"])
    shutil.copytree(model_root / "test-model", root / "test-model")
    host = StandaloneHost(HostDefaults(model="test-model", general_threshold=0.3), presets_dir=tmp_path / "presets")
    pg = build_ui(Tagger(root, "cpu"), host)
    cats = pg.controls.categories
    assert set(cats.rows) >= {"copyright", "artist", "meta", "year", "quality", "species"}
    assert set(cats.includes) >= {"general", "character", *cats.rows}
    for name, comp in cats.thresholds.items():
        assert comp.elem_id == f"tagger_threshold_{name}" and comp.label == f"{name.capitalize()} tags threshold"
    # a WD14 model has none of them: every row hidden; Camie shows its four
    shown = lambda out: {name for name, row in cats.rows.items() if out[row]["visible"]}  # noqa: E731
    assert shown(pg.show_categories("test-model")) == set()
    assert shown(pg.show_categories("camie-tagger-v2")) == {"copyright", "artist", "meta", "year"}
    assert shown(pg.show_categories("z3d-e621-convnext · not downloaded")) == {
        "copyright",
        "artist",
        "species",
        "meta",
        "lore",
    }
    # chosen by hand, Camie starts at its own thresholds (0.61 everywhere); WD14 at the settings' (0.3)
    starts = pg.model_thresholds("camie-tagger-v2")
    assert starts[pg.controls.components["general_threshold"]] == 0.61
    assert starts[cats.thresholds["artist"]] == 0.61 and starts[cats.thresholds["meta"]] == 0.61
    assert pg.model_thresholds("test-model")[pg.controls.components["general_threshold"]] == 0.3
    # tag with Camie at its thresholds, then leave the artist out and take meta from 0.2 on: no model run
    data = inputs(pg, image=scene(300, 200), model="camie-tagger-v2")
    data.update(starts)
    out = pg.interrogate(data, NO_PROGRESS)
    assert "vocaloid" in out[pg.prompt] and "some artist" in out[pg.prompt] and "highres" not in out[pg.prompt]
    data.update({pg.last: out[pg.last], cats.includes["artist"]: False, cats.thresholds["meta"]: 0.2})
    again = pg.retag(data)
    assert "some artist" not in again[pg.prompt] and "highres" in again[pg.prompt] and "vocaloid" in again[pg.prompt]
    options = pg.controls.options(data)
    assert options.exclude_categories == ("artist",) and options.category_threshold("meta") == 0.2
    assert category_threshold("copyright", options) == 0.61  # the model's own, also the character threshold


def test_category_controls_round_trip_options_and_presets(page: Any) -> None:
    opts = TagOptions(category_thresholds={"meta": 0.2, "copyright": 0.5}, exclude_categories=("artist", "character"))
    updates = page.controls.updates(opts)
    data = {comp: updates[comp] for comp in page.controls}
    assert page.controls.options(data) == opts
    path = PresetStore(page.host.presets_dir()).save("cats", opts, "test-model")
    assert PresetStore(path.parent).load("cats").options == opts
