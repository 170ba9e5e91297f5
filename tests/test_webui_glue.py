"""The WebUI glue (scripts/tagger_script.py, tagger/webui.py, preload.py) against a stand-in of the host.

``tests/hoststub`` is a plainly named stand-in of the host's callback modules, not the WebUI; what it
models is documented there. The real host was tried by hand (see the closing notes of the change).
"""

from __future__ import annotations

import argparse
import base64
import html as html_lib
import importlib.util
import inspect
import io
import runpy
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("gradio") is None:  # absent: skip; installed but broken: fail loudly
    pytest.skip("gradio is not installed (pip install -e .[ui])", allow_module_level=True)

import gradio as gr
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
STUB = Path(__file__).resolve().parent / "hoststub"
WEIGHTED = "(solo:0.90), (long hair:0.50), (smile:0.36)"


def _drop_host_modules() -> None:
    for name in [n for n in sys.modules if n == "modules" or n.startswith("modules.")]:
        del sys.modules[name]


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, model_root: Path):
    """The stand-in host's modules, fresh for each test, with the test models folder set by flag."""
    _drop_host_modules()
    monkeypatch.syspath_prepend(str(STUB))
    from modules import infotext_utils, script_callbacks, shared

    script_callbacks.clear()
    infotext_utils.registered_param_bindings.clear()
    shared.cmd_opts.tagger_models_dir = str(model_root)
    shared.cmd_opts.tagger_device = "cpu"
    yield sys.modules["modules"]
    _drop_host_modules()


def _run_script() -> None:
    runpy.run_path(str(ROOT / "scripts" / "tagger_script.py"), run_name="tagger_script")


def _extension_following_the_device_setting():  # type: ignore[no-untyped-def]
    """Our extension as the WebUI starts it, with the Settings device radio's change handler wired as the host
    does (``onchange``), so that ``shared.opts.set("tagger_device", ...)`` reaches the engine."""
    from modules import script_callbacks, shared

    from tagger.webui import TaggerExtension

    shared.cmd_opts.tagger_device = None
    _run_script()
    script_callbacks.ui_settings_callback()
    ext = TaggerExtension()
    shared.opts.data_labels["tagger_device"].onchange = ext._device_changed
    return ext


def test_script_registers_the_three_callbacks(host) -> None:
    from modules import script_callbacks

    _run_script()
    assert {k: len(v) for k, v in script_callbacks.callbacks.items()} == {
        "ui_tabs": 1,
        "ui_settings": 1,
        "app_started": 1,
    }


def test_settings_section_and_defaults_reach_the_page(host) -> None:
    from modules import script_callbacks, shared

    _run_script()
    script_callbacks.ui_settings_callback()
    keys = [k for k, v in shared.opts.data_labels.items() if v.section == ("tagger", "Tagger")]
    assert keys == [
        "tagger_default_model",
        "tagger_general_threshold",
        "tagger_character_threshold",
        "tagger_device",
        "tagger_unload_after",
        "tagger_models_dir",
        "tagger_batch_size",
        "tagger_interrogate_on_drop",
    ]
    with gr.Blocks():  # every setting's component can be built the way the Settings page builds it
        for info in shared.opts.data_labels.values():
            args = info.component_args() if callable(info.component_args) else (info.component_args or {})
            info.component(label=info.label, value=info.default, **args)
    model_args = shared.opts.data_labels["tagger_default_model"].component_args()
    assert "test-model" in model_args["choices"]

    shared.opts.data.update(
        tagger_default_model="test-model",
        tagger_general_threshold=0.55,
        tagger_unload_after=True,
        tagger_interrogate_on_drop=True,
    )
    from tagger.webui import TaggerExtension

    ext = TaggerExtension()
    d = ext.host.defaults()
    assert (d.model, d.general_threshold, d.unload_after, d.interrogate_on_drop) == ("test-model", 0.55, True, True)
    page_blocks = ext.on_ui_tabs()[0][0]
    values = {getattr(b, "elem_id", None): getattr(b, "value", None) for b in page_blocks.blocks.values()}
    assert values["tagger_opt_general_threshold"] == 0.55
    assert values["tagger_unload_after"] is True
    assert values["tagger_model"].startswith("test-model")


def test_tab_and_send_buttons_use_the_hosts_paste_mechanism(host) -> None:
    from modules import infotext_utils, script_callbacks

    _run_script()
    tabs = script_callbacks.ui_tabs_callback()
    assert len(tabs) == 1
    blocks, title, elem_id = tabs[0]
    assert isinstance(blocks, gr.Blocks) and (title, elem_id) == ("Tagger", "tagger")
    bindings = infotext_utils.registered_param_bindings
    assert [b.tabname for b in bindings] == ["txt2img", "img2img"] * 3
    sources = ["tagger_prompt"] * 2 + ["tagger_embedded_prompt"] * 2 + ["tagger_merged_prompt"] * 2
    assert [b.source_text_component.elem_id for b in bindings] == sources
    buttons = ["tagger_send_{}", "tagger_send_embedded_{}", "tagger_send_merged_{}"]
    assert [b.paste_button.elem_id for b in bindings] == [f.format(t) for f in buttons for t in ("txt2img", "img2img")]
    for b in bindings:
        assert b.source_image_component.elem_id == "tagger_image"  # img2img receives the image too


@pytest.mark.parametrize(
    "prompt",
    [
        WEIGHTED,
        "1girl, solo, long hair",
        "(1girl:0.99), (solo:0.98), (long hair:0.90), (smile:0.36), (re\\:zero:0.40)",
        "masterpiece\n" + WEIGHTED,
        "",
    ],
)
def test_weighted_tags_arrive_intact(host, prompt: str) -> None:
    from modules import infotext_utils

    _run_script()
    from modules import script_callbacks

    script_callbacks.ui_tabs_callback()
    for binding in infotext_utils.registered_param_bindings:
        params = infotext_utils.paste(binding, prompt)
        assert params["Prompt"] == prompt
        assert params["Negative prompt"] == ""
        assert set(params) == {"Prompt", "Negative prompt"}  # no parameter line was read


def test_the_merged_prompt_reaches_txt2img_with_or_without_the_embedded_settings(host, tmp_path: Path) -> None:
    """The tab's own handlers make the merged prompt (weighted tags included) and the host's paste reads it:
    the prompt alone by default, and the negative prompt and settings too when asked, as PNG Info sends them."""
    from modules import infotext_utils, shared

    from tagger.webui import TaggerExtension
    from tests import geninfo

    shared.opts.data["tagger_default_model"] = "test-model"
    ext = TaggerExtension()
    from tagger.ui import build_ui

    page = build_ui(ext.tagger(), ext.host)
    panel = page.embedded
    with Image.open(geninfo.a1111_png(tmp_path / "made.png")) as im:
        image = im.convert("RGBA")
    data = {c: c.value for c in page.controls}
    data.update({page.image: image, page.model: "test-model", page.unload_after: False, panel.state: None})
    data.update({page.controls.components["weights"]: True, panel.keep_networks: True, panel.send_settings: False})
    out = page.tag_and_compare(data, lambda *a, **k: None)
    merged = out[panel.merged]
    assert "(red theme:1.00)" in merged and "<lora:myStyle:0.8>" in merged
    (binding,) = [
        b for b in infotext_utils.registered_param_bindings if b.paste_button.elem_id == "tagger_send_merged_txt2img"
    ]
    assert infotext_utils.paste(binding, merged) == {"Prompt": merged, "Negative prompt": ""}

    data.update({page.last: out[page.last], panel.state: out[panel.state], panel.send_settings: True})
    with_settings = page.switch_embedded(data)[panel.merged]
    params = infotext_utils.paste(binding, with_settings)
    assert params["Prompt"] == merged and params["Negative prompt"] == "(worst quality:1.4), bad hands"
    assert (params["Steps"], params["Sampler"], params["Seed"], params["Size"]) == ("20", "DPM++ 2M", "1234", "64x48")


def test_stand_in_really_drops_weighted_tags_without_the_protection(host) -> None:
    """The stand-in models the host's pitfall; if this failed, the test above would prove nothing."""
    from modules import infotext_utils

    assert infotext_utils.parse_generation_parameters(WEIGHTED)["Prompt"] == ""


def test_model_runs_hold_the_hosts_queue_lock_and_jobs_are_marked(host) -> None:
    from modules import call_queue, shared

    from tagger.webui import TaggerExtension

    ext = TaggerExtension()
    assert ext.tagger().run_lock is call_queue.queue_lock
    seen = []
    with ext.host.job("tagger"):
        seen.append(call_queue.queue_lock.locked())
        seen.append(shared.state.job)
    assert seen == [False, "tagger"]  # a job marks the host's state; only model runs take the lock
    assert shared.state.job == ""
    shared.state.interrupt()
    assert ext.host.interrupted()


def test_interrogate_through_the_tab_waits_for_the_queue_lock(host, model_root: Path) -> None:
    """A tagging call made while the host generates (holds the lock) waits until the lock is free."""
    from modules import call_queue, shared

    from tagger.webui import TaggerExtension

    shared.opts.data["tagger_default_model"] = "test-model"
    ext = TaggerExtension()
    from tagger.ui import build_ui

    page = build_ui(ext.tagger(), ext.host)
    data = {c: c.value for c in page.controls}
    data.update(
        {page.image: Image.new("RGB", (40, 40), (255, 0, 0)), page.model: "test-model", page.unload_after: False}
    )
    out: dict = {}
    call_queue.queue_lock.acquire()
    worker = threading.Thread(target=lambda: out.update(page._interrogate(data, lambda *a, **k: None)))
    worker.start()
    worker.join(1.0)
    assert worker.is_alive(), "tagging ran while the host held its queue lock"
    call_queue.queue_lock.release()
    worker.join(30)
    assert "red theme" in out[page.prompt]


def test_device_setting_change_reaches_the_engine(host) -> None:
    from modules import shared

    ext = _extension_following_the_device_setting()
    shared.opts.set("tagger_device", "cpu")
    assert str(ext.tagger().device) == "cpu"


def test_models_folder_and_device_flags_win_over_settings(host, tmp_path: Path) -> None:
    from modules import shared

    from tagger.webui import TaggerExtension

    shared.opts.data.update(tagger_models_dir=str(tmp_path / "from-setting"), tagger_device="cuda")
    shared.cmd_opts.tagger_models_dir = str(tmp_path / "from-flag")
    shared.cmd_opts.tagger_device = "cpu"
    host_ = TaggerExtension().host
    assert host_.models_dir() == tmp_path / "from-flag" and host_.device() == "cpu"
    shared.cmd_opts.tagger_models_dir = shared.cmd_opts.tagger_device = None
    assert host_.models_dir() == tmp_path / "from-setting" and host_.device() == "cuda"
    shared.opts.data.update(tagger_models_dir="", tagger_device="auto")
    assert host_.models_dir() == Path(shared.models_path) / "tagger"
    assert host_.presets_dir() == Path(shared.data_path) / "tagger" / "presets"


def _png_b64(rgb: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), rgb).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _requests(app, calls: list[tuple[str, str, dict]]) -> list:
    """Send ``(method, path, kwargs)`` requests to ``app`` in process (starlette's TestClient of these FastAPI
    versions does not work with httpx >= 0.28)."""
    import asyncio

    import httpx

    async def run() -> list:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webui") as client:
            return [await client.request(method, path, **kw) for method, path, kw in calls]

    # Not asyncio.run: it leaves the main thread without a current event loop, and a gradio 4 app built after
    # that gets a queue without its lock (every event then fails: test_server's browser test, run after these).
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


def test_api_is_mounted_only_with_api_flag_and_honours_api_auth(host) -> None:
    from fastapi import FastAPI
    from modules import script_callbacks, shared

    _run_script()
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    assert not any(getattr(r, "path", "").startswith("/tagger/") for r in app.routes)

    shared.cmd_opts.api = True
    shared.cmd_opts.api_auth = "alice:secret:with:colons,bob:pw"
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    body = {"image": _png_b64((255, 0, 0)), "model": "test-model", "threshold": 0.35}
    anonymous, alice, bob = _requests(
        app,
        [
            ("GET", "/tagger/v1/interrogators", {}),
            ("GET", "/tagger/v1/interrogators", {"auth": ("alice", "secret:with:colons")}),
            ("POST", "/tagger/v1/interrogate", {"json": body, "auth": ("bob", "pw")}),
        ],
    )
    assert anonymous.status_code == 401
    assert alice.status_code == 200 and "test-model" in alice.json()["models"]
    assert bob.status_code == 200 and "red_theme" in bob.json()["caption"]


def test_unload_after_setting_applies_to_the_api_and_the_tab_at_once(host) -> None:
    """ "Unload the model after each interrogation" means it everywhere: the API reads the setting per
    request (no restart), and the tab's checkbox starts from it."""
    from fastapi import FastAPI
    from modules import shared

    from tagger.webui import TaggerExtension

    ext = TaggerExtension()
    ext.tagger().cache.clear()  # the models folder's cache may know this image from another test
    shared.cmd_opts.api = True
    app = FastAPI()
    ext.on_app_started(None, app)
    body = {"image": _png_b64((255, 0, 0)), "model": "test-model"}
    (kept,) = _requests(app, [("POST", "/tagger/v1/interrogate", {"json": body})])
    assert kept.status_code == 200 and [m.name for m in ext.tagger().loaded()] == ["test-model"]
    shared.opts.data["tagger_unload_after"] = True  # changed in Settings while the WebUI runs
    (dropped,) = _requests(app, [("POST", "/tagger/v1/interrogate", {"json": {**body, "threshold": 0.5}})])
    assert dropped.status_code == 200 and ext.tagger().loaded() == []
    from tagger.ui import build_ui

    assert build_ui(ext.tagger(), ext.host).unload_after.value is True


# -- beside the older tagger extensions ------------------------------------------------------------------------
# Their layout, read in their repositories (toriato/stable-diffusion-webui-wd14-tagger 99bf7d8,
# picobyte/stable-diffusion-webui-wd14-tagger e72d984, Akegarasu/sd-webui-wd14-tagger 711ba0a): a top-level
# `tagger/` folder WITHOUT __init__.py whose modules import each other by absolute name, and a scripts/tagger.py
# importing from it at load. The stand-ins below have their file names and their import lines, nothing else of
# theirs; each answers where its modules came from, so a test sees whose `tagger` each import found.

_THEIR_API = """
def on_app_started(_, app):
    def where():
        from tagger import utils as at_request_time  # an import when a request comes, as picobyte's code has

        return {"utils": utils.__file__, "at_request_time": at_request_time.__file__}

    app.add_api_route("/older-tagger/where", where, methods=["GET"])
    app.add_api_route("/tagger/v1/interrogate", lambda: {"theirs": True}, methods=["POST"])  # as theirs all do
"""
_THEIR_UI = """
def on_ui_tabs():
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as blocks:
        gr.HTML(__file__, elem_id="older_tagger")
    return [(blocks, "Tagger", "tagger")]
"""
_TORIATO = {
    "api.py": "from tagger import utils\nfrom tagger import api_models as models\n" + _THEIR_API,
    "api_models.py": "class TaggerInterrogateRequest:\n    pass\n",
    "dbimutils.py": "",
    "format.py": "",
    "interrogator.py": "class Interrogator:\n    pass\n\n\nclass WaifuDiffusionInterrogator(Interrogator):\n    pass\n\n\n"
    "class DeepDanbooruInterrogator(Interrogator):\n    pass\n",
    "preset.py": "class Preset:\n    pass\n",
    "ui.py": "from tagger import format, utils\nfrom tagger.utils import split_str\nfrom tagger.interrogator import "
    "Interrogator\n" + _THEIR_UI,
    "utils.py": "from tagger.preset import Preset\nfrom tagger.interrogator import Interrogator, WaifuDiffusionInterrogator\n"
    "\n\ndef split_str(s):\n    return s.split(',')\n",
    "../scripts/tagger.py": "from modules import script_callbacks\nfrom tagger.api import on_app_started\n"
    "from tagger.ui import on_ui_tabs\n\nscript_callbacks.on_app_started(on_app_started)\n"
    "script_callbacks.on_ui_tabs(on_ui_tabs)\n",
    "../preload.py": "def preload(parser):\n    parser.add_argument('--deepdanbooru-projects-path', type=str)\n",
}
_PICOBYTE = {
    **_TORIATO,
    "interrogator.py": "from tagger import settings\nfrom tagger.uiset import QData, IOData\n\n\nclass Interrogator:\n    pass\n"
    "\n\nclass WaifuDiffusionInterrogator(Interrogator):\n    pass\n\n\nclass DeepDanbooruInterrogator(Interrogator):\n"
    "    pass\n",
    "settings.py": "def on_ui_settings():\n    pass\n",
    "uiset.py": "from tagger import format as tags_format\nfrom tagger import settings\n\n\nclass QData:\n    pass\n\n\n"
    "class IOData:\n    pass\n",
    "generator/tf_data_reader.py": "class DataGenerator:\n    pass\n",
    "ui.py": "from tagger import utils\nfrom tagger.interrogator import Interrogator as It\nfrom tagger.uiset import "
    "IOData, QData\n" + _THEIR_UI,
    "utils.py": "from tagger.preset import Preset\nfrom tagger.interrogator import Interrogator, DeepDanbooruInterrogator\n"
    "from tagger.interrogator import WaifuDiffusionInterrogator\n",
    "../scripts/tagger.py": "from modules import script_callbacks\nfrom tagger.api import on_app_started\n"
    "from tagger.ui import on_ui_tabs\nfrom tagger.settings import on_ui_settings\n\n"
    "script_callbacks.on_app_started(on_app_started)\nscript_callbacks.on_ui_tabs(on_ui_tabs)\n"
    "script_callbacks.on_ui_settings(on_ui_settings)\n",
}
_AKEGARASU = {k: v for k, v in _TORIATO.items() if k != "../preload.py"}
OLDER = {
    "toriato": ("stable-diffusion-webui-wd14-tagger", _TORIATO),
    "picobyte": ("stable-diffusion-webui-wd14-tagger", _PICOBYTE),
    "akegarasu": ("sd-webui-wd14-tagger", _AKEGARASU),
}


def _older_extension(extensions: Path, which: str) -> Path:
    folder, files = OLDER[which]
    root = extensions / folder
    for name, text in files.items():
        path = (root / "tagger" / name).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert not (root / "tagger" / "__init__.py").exists()
    return root


def _this_extension(extensions: Path) -> Path:
    """A copy of this checkout's extension files in an extensions folder beside the older one."""
    root = extensions / "sd-webui-tagger"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "tagger", root / "tagger", ignore=ignore)
    shutil.copytree(ROOT / "scripts", root / "scripts", ignore=ignore)
    shutil.copy(ROOT / "preload.py", root / "preload.py")
    return root


@pytest.fixture
def fresh_process(host, monkeypatch: pytest.MonkeyPatch):
    """This process as a WebUI process is when it loads extensions: no `tagger` imported yet, and this checkout
    not on sys.path (the host puts each extension's folder there itself)."""
    from modules import scripts

    saved = {n: m for n, m in sys.modules.items() if n == "tagger" or n.startswith("tagger.")}
    for name in saved:
        del sys.modules[name]
    # Nor has inspect seen any `tagger` yet (it remembers each module's file by name, process-wide).
    for name in [n for n in inspect._filesbymodname if n == "tagger" or n.startswith("tagger.")]:  # type: ignore[attr-defined]
        del inspect._filesbymodname[name]  # type: ignore[attr-defined]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    scripts.errors.clear()
    yield scripts
    for name in [n for n in sys.modules if n == "tagger" or n.startswith("tagger.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def _start_webui(scripts, order: list[Path], host_kind: str) -> tuple[list, Any]:
    """Preload, load every script, then fire the callbacks as the host does at start; the tabs and the app."""
    from fastapi import FastAPI
    from modules import script_callbacks, shared

    importlib.invalidate_caches()
    scripts.preload_extensions(order, argparse.ArgumentParser())
    scripts.load_scripts(order, host_kind)
    shared.cmd_opts.api = True
    script_callbacks.ui_settings_callback()
    tabs = script_callbacks.ui_tabs_callback()
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    return tabs, app


def _elem_values(blocks: Any) -> dict[str, Any]:
    return {b.elem_id: getattr(b, "value", None) for b in blocks.blocks.values() if getattr(b, "elem_id", None)}


@pytest.mark.parametrize("which", list(OLDER))
@pytest.mark.parametrize("host_kind", ["a1111", "forge"])
@pytest.mark.parametrize("ours_first", [False, True], ids=["older-first", "ours-first"])
def test_both_taggers_work_side_by_side(
    fresh_process, tmp_path: Path, which: str, host_kind: str, ours_first: bool
) -> None:
    ours = _this_extension(tmp_path / "extensions")
    theirs = _older_extension(tmp_path / "extensions", which)
    order = [ours, theirs] if ours_first else [theirs, ours]
    tabs, app = _start_webui(fresh_process, order, host_kind)
    assert fresh_process.errors == []  # no script raised
    pages = [_elem_values(blocks) for blocks, _, _ in tabs]
    assert [p["older_tagger"] for p in pages if "older_tagger" in p] == [str(theirs / "tagger" / "ui.py")]
    assert [p for p in pages if "tagger_prompt" in p] and not [p for p in pages if "tagger_conflict" in p]
    tab_ids = [tab_id for _, _, tab_id in tabs]
    assert len(set(tab_ids)) == len(tab_ids) == 2, tab_ids  # one id, and the WebUI merges the two tabs
    # The WebUI calls inspect.stack() on every callback registration; frames without a file on disk (the
    # import system's) make it look through sys.modules, where a namespace package once seen with a file
    # under the same name raised TypeError in the real A1111.
    eval(compile("inspect.stack()", "<no file>", "eval"), {"inspect": inspect})

    body = {"image": _png_b64((9, 99, 199)), "model": "test-model", "threshold": 0.35}
    tagged, where = _requests(
        app, [("POST", "/tagger/v1/interrogate", {"json": body}), ("GET", "/older-tagger/where", {})]
    )
    assert tagged.status_code == 200 and tagged.json()["model"] == "test-model"
    from modules import shared  # the Settings page asks for the model list whenever it is built

    assert "test-model" in shared.opts.data_labels["tagger_default_model"].component_args()["choices"]
    their_utils = str(theirs / "tagger" / "utils.py")
    assert where.json() == {"utils": their_utils, "at_request_time": their_utils}


def test_both_keep_working_after_reload_ui(fresh_process, tmp_path: Path) -> None:
    """The WebUI's Reload UI clears the callbacks and runs every script again in the same process."""
    from modules import script_callbacks

    ours = _this_extension(tmp_path / "extensions")
    theirs = _older_extension(tmp_path / "extensions", "picobyte")
    _start_webui(fresh_process, [ours, theirs], "forge")
    script_callbacks.clear()
    fresh_process.load_scripts([ours, theirs], "forge")
    assert fresh_process.errors == []
    script_callbacks.ui_settings_callback()
    pages = [_elem_values(blocks) for blocks, _, _ in script_callbacks.ui_tabs_callback()]
    assert any("tagger_prompt" in p for p in pages) and any("older_tagger" in p for p in pages)


def test_when_ours_cannot_load_beside_theirs_one_line_says_so(fresh_process, tmp_path: Path) -> None:
    """Fake: our copy made to fail on import; the tab then names both folders and what to do, theirs works."""
    ours = _this_extension(tmp_path / "extensions")
    with (ours / "tagger" / "cache.py").open("a", encoding="utf-8") as f:
        f.write("\nraise ImportError('stand-in failure')\n")
    theirs = _older_extension(tmp_path / "extensions", "akegarasu")
    tabs, _ = _start_webui(fresh_process, [theirs, ours], "a1111")
    assert fresh_process.errors == []
    pages = [_elem_values(blocks) for blocks, _, _ in tabs]
    message = html_lib.unescape(next(p["tagger_conflict"] for p in pages if "tagger_conflict" in p))
    assert str(ours) in message and str(theirs) in message and "stand-in failure" in message
    assert "Disable one of the two in the Extensions tab" in message
    assert any("older_tagger" in p for p in pages)


def test_missing_host_api_names_the_webui_version_needed(host, monkeypatch) -> None:
    from modules import infotext_utils

    from tagger.webui import HostError, load_host_modules

    monkeypatch.delattr(infotext_utils, "ParamBinding")
    with pytest.raises(HostError, match=r"1\.6 or newer, or Forge"):
        load_host_modules()


def test_preload_adds_the_flags() -> None:
    parser = argparse.ArgumentParser()
    runpy.run_path(str(ROOT / "preload.py"))["preload"](parser)
    args = parser.parse_args(["--tagger-models-dir", "/m", "--tagger-device", "cuda:1"])
    assert (args.tagger_models_dir, args.tagger_device) == ("/m", "cuda:1")
    assert parser.parse_args([]).tagger_device is None


def test_malformed_api_auth_keeps_the_api_closed(host, caplog) -> None:
    from fastapi import FastAPI
    from modules import script_callbacks, shared

    _run_script()
    shared.cmd_opts.api = True
    shared.cmd_opts.api_auth = "alice"  # no password: the host's own parser would fail on it too
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    assert not any(getattr(r, "path", "").startswith("/tagger/") for r in app.routes)
    assert "not mounted" in caplog.text and "alice" in caplog.text


def test_tab_and_api_say_why_cuda_did_not_start_in_auto(host, monkeypatch) -> None:
    """The WebUI's default device is auto; a CUDA provider that is offered and does not start is said in the
    tab's status and in the API's provider_note. Fake: onnxruntime's provider list offers CUDA, as the GPU
    build does; the session is real and this machine's CPU build starts it without CUDA. The images are
    this test's own, so that the models folder's probability cache cannot answer for the model."""
    import onnxruntime
    from fastapi import FastAPI
    from modules import script_callbacks, shared

    from tagger.runtime import CPU, CUDA
    from tagger.ui import build_ui
    from tagger.webui import TaggerExtension

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    shared.cmd_opts.tagger_device = "auto"
    shared.opts.data["tagger_default_model"] = "test-model"
    ext = TaggerExtension()
    page = build_ui(ext.tagger(), ext.host)
    data = {c: c.value for c in page.controls}
    data.update({page.image: Image.new("RGB", (40, 40), (7, 77, 177)), page.model: "test-model"})
    data.update({page.unload_after: False, page.last: None})
    status = html_lib.unescape(page.interrogate(data, lambda *a, **k: None)[page.status])
    assert "CUDA is not used:" in status

    _run_script()
    shared.cmd_opts.api = True
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    body = {"image": _png_b64((7, 78, 178)), "model": "test-model", "threshold": 0.35}
    tagged, loaded = _requests(
        app, [("POST", "/tagger/v1/interrogate", {"json": body}), ("GET", "/tagger/v1/loaded", {})]
    )
    assert tagged.json()["provider"] == "CPU" and tagged.json()["provider_note"].startswith("CUDA is not used:")
    assert loaded.json()["models"][0]["provider_note"].startswith("CUDA is not used:")


def test_device_setting_offers_the_openvino_devices(host) -> None:
    """The Settings page's radio (built with this gradio, 3.41 or 4.x) offers OpenVINO's devices beside auto, cpu
    and cuda, whether or not OpenVINO is installed, and its label says what they need."""
    from modules import script_callbacks, shared

    from tagger.runtime import Device

    _run_script()
    script_callbacks.ui_settings_callback()
    info = shared.opts.data_labels["tagger_device"]
    with gr.Blocks():
        radio = info.component(label=info.label, value="cpu-bf16", **info.component_args)
    values = [value for _, value in radio.choices]
    assert values == ["auto", "cpu", "cuda", "cpu-bf16", "openvino", "intel-gpu"]
    assert [v for v in values if Device.parse(v).openvino] == ["cpu-bf16", "openvino", "intel-gpu"]
    assert "pip install openvino" in info.label and info.default == "auto"


@pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed (pip install openvino)"
)
def test_cpu_bf16_setting_runs_in_the_tab_and_the_api_and_says_so(host) -> None:
    """Chosen in Settings, cpu-bf16 reaches the engine; the tab's status line and the API name what ran (bf16 on a
    CPU with bf16 units, else fp32). The images are this test's own, so the models folder's cache cannot answer."""
    from fastapi import FastAPI
    from modules import script_callbacks, shared

    from tagger import backends
    from tagger.ui import build_ui

    label = f"OpenVINO CPU {'bf16' if backends.cpu_bf16_units() else 'fp32'}"
    ext = _extension_following_the_device_setting()
    shared.opts.data["tagger_default_model"] = "test-model"
    shared.opts.set("tagger_device", "cpu-bf16")
    page = build_ui(ext.tagger(), ext.host)
    data = {c: c.value for c in page.controls}
    data.update({page.image: Image.new("RGB", (40, 40), (9, 99, 199)), page.model: "test-model"})
    data.update({page.unload_after: False, page.last: None})
    out = page.interrogate(data, lambda *a, **k: None)
    assert f"provider: <b>{label}</b>" in out[page.status]
    assert out[page.prompt].startswith("blue theme")

    shared.cmd_opts.api = True
    app = FastAPI()
    script_callbacks.app_started_callback(None, app)
    body = {"image": _png_b64((9, 98, 198)), "model": "test-model", "threshold": 0.35}
    (tagged,) = _requests(app, [("POST", "/tagger/v1/interrogate", {"json": body})])
    assert tagged.json()["provider"] == label


def test_without_openvino_choosing_its_device_says_what_to_install(host, without_openvino, caplog) -> None:
    """At once in the console when the setting changes, and in the tab's status when it tags."""
    from modules import shared

    from tagger.ui import build_ui

    ext = _extension_following_the_device_setting()
    shared.opts.set("tagger_device", "cpu")
    assert caplog.text == ""  # ONNX Runtime's devices need no OpenVINO
    shared.opts.set("tagger_device", "intel-gpu")
    assert "intel-gpu runs on OpenVINO, which is not installed" in caplog.text
    assert str(ext.tagger().device) == "intel-gpu"  # kept: install.py installs OpenVINO at the next start

    page = build_ui(ext.tagger(), ext.host)
    data = {c: c.value for c in page.controls}
    data.update({page.image: Image.new("RGB", (40, 40), (8, 88, 188)), page.model: "test-model"})
    data.update({page.unload_after: False, page.last: None})
    status = html_lib.unescape(page.interrogate(data, lambda *a, **k: None)[page.status])
    assert "tagger-error" in status and "intel-gpu runs on OpenVINO" in status and "pip install openvino" in status
