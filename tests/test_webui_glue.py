"""The WebUI glue (scripts/tagger_script.py, tagger/webui.py, preload.py) against a stand-in of the host.

``tests/hoststub`` is a plainly named stand-in of the host's callback modules, not the WebUI; what it
models is documented there. The real host was tried by hand (see the closing notes of the change).
"""

from __future__ import annotations

import argparse
import base64
import html as html_lib
import importlib.util
import io
import runpy
import sys
import threading
from pathlib import Path

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
    assert [b.tabname for b in bindings] == ["txt2img", "img2img"]
    for b in bindings:
        assert b.paste_button.elem_id == f"tagger_send_{b.tabname}"
        assert b.source_text_component.elem_id == "tagger_prompt"
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


def test_stand_in_really_drops_weighted_tags_without_the_protection(host) -> None:
    """The stand-in models the host's pitfall; if this failed, the test above would prove nothing."""
    from modules import infotext_utils

    assert infotext_utils.parse_generation_parameters(WEIGHTED)["Prompt"] == ""


def test_gpu_work_holds_the_hosts_queue_lock_and_marks_a_job(host) -> None:
    from modules import call_queue, shared

    from tagger.webui import TaggerExtension

    ext = TaggerExtension()
    seen = []
    with ext.host.gpu_section("tagger"):
        seen.append(call_queue.queue_lock.locked())
        seen.append(shared.state.job)
    assert seen == [True, "tagger"]
    assert not call_queue.queue_lock.locked() and shared.state.job == ""
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
    from modules import script_callbacks, shared

    shared.cmd_opts.tagger_device = None
    _run_script()
    script_callbacks.ui_settings_callback()
    from tagger.webui import TaggerExtension

    ext = TaggerExtension()
    shared.opts.data_labels["tagger_device"].onchange = ext._device_changed
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

    return asyncio.run(run())


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


def test_another_tagger_package_shadowing_ours_is_named(host, tmp_path: Path, monkeypatch) -> None:
    from modules import script_callbacks

    other = tmp_path / "stable-diffusion-webui-wd14-tagger"
    (other / "tagger").mkdir(parents=True)
    (other / "tagger" / "__init__.py").write_text("")
    saved = {n: m for n, m in sys.modules.items() if n == "tagger" or n.startswith("tagger.")}
    for n in saved:
        del sys.modules[n]
    monkeypatch.syspath_prepend(str(other))
    try:
        _run_script()
        tabs = script_callbacks.ui_tabs_callback()
    finally:
        for n in [n for n in sys.modules if n == "tagger" or n.startswith("tagger.")]:
            del sys.modules[n]
        sys.modules.update(saved)
    blocks = tabs[0][0]
    html = next(b.value for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "tagger_conflict")
    html = html_lib.unescape(html)
    assert str(other / "tagger") in html and "another extension's 'tagger' package" in html


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
