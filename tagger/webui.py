"""The WebUI adapter (AUTOMATIC1111 1.6+ and Forge): the only module that imports the host's ``modules.*``.

Every host import happens inside ``load_host_modules`` and is guarded: a missing API becomes a ``HostError``
naming the WebUI version needed, not an AttributeError deep inside a callback. ``scripts/tagger_script.py``
creates one ``TaggerExtension`` and registers its methods as the host's callbacks.

Facts this relies on (read in the host's source, A1111 v1.10.1 and Forge main):

- ``modules.infotext_utils`` (``modules.generation_parameters_copypaste`` before 1.8) wires send-to buttons:
  ``register_paste_params_button(ParamBinding(button, tabname, source_text_component,
  source_image_component))``; the host connects them after every tab is built. The text goes through
  ``parse_generation_parameters``, which takes the text's last line as generation parameters (and drops it
  from the prompt) when that line holds three or more ``name: value`` pairs; weighted tags such as
  ``(solo:0.98), (long hair:0.90), (smile:0.80)`` look exactly like that. ``paste_safe`` below avoids it.
- ``modules.call_queue.queue_lock`` is the lock image generation holds; ``shared.state.begin/end`` mark a job,
  and ``shared.state.interrupted`` is set by the Interrupt button.
- ``shared.opts.add_option(key, shared.OptionInfo(default, label, component, component_args,
  onchange=..., section=(id, title)))`` adds a setting; ``component_args`` may be a callable.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tagger.catalog import DEFAULT_MODEL
from tagger.embedded import is_infotext
from tagger.errors import TaggerError
from tagger.host import Host, HostDefaults
from tagger.options import OPTION_FIELDS

log = logging.getLogger(__name__)

SECTION = ("tagger", "Tagger")
TAB_TITLE = "Tagger"
TAB_ID = "tagger"
SEND_TARGETS = ("txt2img", "img2img")
NEEDED = "AUTOMATIC1111 stable-diffusion-webui 1.6 or newer, or Forge"
# Appended to what the send-to buttons hand the host: the text's last line then starts with "Negative
# prompt:", is never read as a parameter line, and yields an empty negative prompt (which is what the host
# pastes anyway when the text has no such line). The prompt itself arrives unchanged.
_SEND_SUFFIX = "\nNegative prompt: "
# The Settings page's devices (runtime.DEVICES without the numbered ones, which --tagger-device takes). The last three
# run on OpenVINO: offered whether or not it is installed, since choosing one has install.py install it at the next
# start; until then loading says how to get it, in the tab and the API.
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cpu-bf16", "openvino", "intel-gpu")
DEVICE_LABEL = (
    "Device for the tagger models. auto: CUDA when present, else the CPU (with OpenVINO installed, its bf16 units "
    "where measured faster); cpu-bf16: the CPU's bf16 units; openvino: the CPU at fp32; intel-gpu: an Intel GPU. "
    "These three need OpenVINO: installed at the WebUI's next start once chosen (or pip install openvino)"
)


class HostError(TaggerError):
    """The running WebUI lacks something this extension needs."""


def paste_safe(prompt: str) -> str:
    """``prompt`` in a form the host's send-to parser hands back intact as the prompt (see module doc). An
    infotext (a prompt, its negative prompt and settings line, as PNG Info sends them) goes as it is: the host
    is meant to read its settings."""
    text = (prompt or "").rstrip("\n")
    return text if is_infotext(text) else text + _SEND_SUFFIX


@dataclass(frozen=True)
class HostModules:
    shared: ModuleType
    script_callbacks: ModuleType
    infotext: ModuleType
    call_queue: ModuleType | None


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise HostError(f"Tagger: the WebUI module {name} is missing ({e}); this extension needs {NEEDED}.") from e


def load_host_modules() -> HostModules:
    """Import the host modules the extension uses, checking the names it calls."""
    shared = _import("modules.shared")
    callbacks = _import("modules.script_callbacks")
    try:
        infotext = importlib.import_module("modules.infotext_utils")
    except ImportError:  # before 1.8 the module had its old name
        infotext = _import("modules.generation_parameters_copypaste")
    try:
        call_queue: ModuleType | None = importlib.import_module("modules.call_queue")
    except ImportError:
        call_queue = None
    need = {
        callbacks: ("on_ui_tabs", "on_ui_settings", "on_app_started"),
        infotext: ("ParamBinding", "register_paste_params_button"),
        shared: ("opts", "OptionInfo"),
    }
    for module, names in need.items():
        missing = [n for n in names if not hasattr(module, n)]
        if missing:
            raise HostError(f"Tagger: {module.__name__} has no {', '.join(missing)}; this extension needs {NEEDED}.")
    return HostModules(shared, callbacks, infotext, call_queue)


# -- settings ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    key: str
    default: Any
    label: str
    kind: str  # "dropdown" | "slider" | "checkbox" | "radio" | "textbox"
    args: dict[str, Any] | Callable[[], dict[str, Any]] | None = None
    restart: bool = False
    reload_ui: bool = False


def settings_list(model_choices: Callable[[], list[str]]) -> list[Setting]:
    """The "Tagger" settings section; thresholds' ranges come from the engine's options."""
    g, c = OPTION_FIELDS["general_threshold"], OPTION_FIELDS["character_threshold"]
    return [
        Setting(
            "tagger_default_model", DEFAULT_MODEL, "Default model", "dropdown", lambda: {"choices": model_choices()}
        ),
        Setting(
            "tagger_general_threshold",
            g.default,
            "Default general tags threshold",
            "slider",
            {"minimum": g.metadata["ge"], "maximum": g.metadata["le"], "step": 0.01},
        ),
        Setting(
            "tagger_character_threshold",
            c.default,
            "Default character tags threshold",
            "slider",
            {"minimum": c.metadata["ge"], "maximum": c.metadata["le"], "step": 0.01},
        ),
        Setting("tagger_device", "auto", DEVICE_LABEL, "radio", {"choices": list(DEVICE_CHOICES)}),
        Setting(
            "tagger_unload_after",
            False,
            "Unload the model after each interrogation, in the tab and the API (frees memory; the API follows a "
            "change at once, the tab's checkbox starts from it after Reload UI)",
            "checkbox",
            reload_ui=True,
        ),
        Setting(
            "tagger_models_dir",
            "",
            "Models folder (empty: models/tagger in the WebUI's folder)",
            "textbox",
            restart=True,
        ),
        Setting(
            "tagger_batch_size",
            0,
            "Batch size for folders (0: automatic, 1 on CPU and 16 on CUDA)",
            "slider",
            {"minimum": 0, "maximum": 64, "step": 1},
        ),
        Setting(
            "tagger_interrogate_on_drop",
            False,
            "Interrogate as soon as an image is dropped",
            "checkbox",
            reload_ui=True,
        ),
    ]


def _component(kind: str) -> Any:
    import gradio as gr

    return {
        "dropdown": gr.Dropdown,
        "slider": gr.Slider,
        "checkbox": gr.Checkbox,
        "radio": gr.Radio,
        "textbox": gr.Textbox,
    }[kind]


# -- the host ------------------------------------------------------------------------------------------------


class WebUIHost(Host):
    name = "webui"

    def __init__(self, modules: HostModules) -> None:
        self.m = modules

    def _opt(self, key: str, default: Any) -> Any:
        opts = self.m.shared.opts
        data = getattr(opts, "data", None)
        if isinstance(data, dict) and key in data:
            return data[key]
        return getattr(opts, key, default)

    def defaults(self) -> HostDefaults:
        d = HostDefaults()
        return HostDefaults(
            model=str(self._opt("tagger_default_model", d.model) or d.model),
            general_threshold=float(self._opt("tagger_general_threshold", d.general_threshold)),
            character_threshold=float(self._opt("tagger_character_threshold", d.character_threshold)),
            unload_after=bool(self._opt("tagger_unload_after", d.unload_after)),
            batch_size=int(self._opt("tagger_batch_size", d.batch_size) or 0),
            interrogate_on_drop=bool(self._opt("tagger_interrogate_on_drop", d.interrogate_on_drop)),
        )

    def _cmd(self, name: str) -> Any:
        return getattr(getattr(self.m.shared, "cmd_opts", None), name, None)

    def data_path(self) -> Path:
        return Path(getattr(self.m.shared, "data_path", None) or Path.cwd())

    def models_dir(self) -> Path:
        flag = self._cmd("tagger_models_dir")
        if flag:
            return Path(flag).expanduser()
        setting = str(self._opt("tagger_models_dir", "") or "").strip()
        if setting:
            return Path(setting).expanduser()
        models_path = getattr(self.m.shared, "models_path", None)
        return Path(models_path) / "tagger" if models_path else self.data_path() / "models" / "tagger"

    def device(self) -> str:
        return str(self._cmd("tagger_device") or self._opt("tagger_device", "auto") or "auto")

    def presets_dir(self) -> Path:
        return self.data_path() / "tagger" / "presets"

    def send_targets(self) -> tuple[str, ...]:
        return SEND_TARGETS

    def send_text(self, prompt: str) -> str:
        return paste_safe(prompt)

    def add_send_buttons(self, image: Any, prompt: Any, name: str = "") -> list[Any]:
        import gradio as gr

        buttons = []
        for tab in SEND_TARGETS:
            button = gr.Button(f"Send to {tab}", elem_id=f"tagger_send_{name}_{tab}" if name else f"tagger_send_{tab}")
            self.m.infotext.register_paste_params_button(
                self.m.infotext.ParamBinding(
                    paste_button=button, tabname=tab, source_text_component=prompt, source_image_component=image
                )
            )
            buttons.append(button)
        return buttons

    def queue_lock(self) -> Any:
        """The lock image generation holds: the engine holds it around each model run."""
        return getattr(self.m.call_queue, "queue_lock", None) if self.m.call_queue else None

    @contextlib.contextmanager
    def job(self, name: str) -> Iterator[None]:
        state = getattr(self.m.shared, "state", None)
        if state is not None and hasattr(state, "begin"):
            state.begin(job=name)
        try:
            yield
        finally:
            if state is not None and hasattr(state, "end"):
                state.end()

    def interrupted(self) -> bool:
        return bool(getattr(getattr(self.m.shared, "state", None), "interrupted", False))


class TaggerExtension:
    """What the script registers: one engine for the tab and the API, created on first use."""

    def __init__(self, modules: HostModules | None = None, tab: tuple[str, str] = (TAB_TITLE, TAB_ID)) -> None:
        """``tab``: the tab's title and id (another one beside an older tagger extension whose tab has ours)."""
        self.modules = modules or load_host_modules()
        self.tab = tab
        self.host = WebUIHost(self.modules)
        self._tagger: Any = None

    def tagger(self) -> Any:
        if self._tagger is None:
            from tagger.cache import ProbCache
            from tagger.engine import Tagger

            # The probability cache lives in the models folder (beside what it caches): re-interrogating an
            # image with other thresholds is instant, in the tab and over the API.
            models_dir = self.host.models_dir()
            cache = ProbCache(models_dir / "probs-cache.sqlite3")
            self._tagger = Tagger(models_dir, self.host.device(), cache=cache, run_lock=self.host.queue_lock())
        return self._tagger

    def register(self) -> None:
        cb = self.modules.script_callbacks
        cb.on_ui_settings(self.on_ui_settings)
        cb.on_ui_tabs(self.on_ui_tabs)
        cb.on_app_started(self.on_app_started)

    def model_names(self) -> list[str]:
        try:
            return [m.name for m in self.tagger().list_models()]
        except Exception:  # the settings page must open even when the models folder cannot be read
            log.exception("tagger: cannot list models")
            return [DEFAULT_MODEL]

    def _device_changed(self) -> None:
        try:
            self.tagger().set_device(self.host.device())
            if self.tagger().device.openvino:  # without OpenVINO, said now in the console, not only at the next load
                from tagger.backends import require_openvino

                require_openvino(self.tagger().device)
        except TaggerError as e:
            log.error("tagger: %s", e)

    def on_ui_settings(self) -> None:
        shared = self.modules.shared
        for s in settings_list(self.model_names):
            onchange = self._device_changed if s.key == "tagger_device" else None
            info = shared.OptionInfo(s.default, s.label, _component(s.kind), s.args, onchange=onchange, section=SECTION)
            if s.restart and hasattr(info, "needs_restart"):
                info = info.needs_restart()
            if s.reload_ui and hasattr(info, "needs_reload_ui"):
                info = info.needs_reload_ui()
            shared.opts.add_option(s.key, info)

    def on_ui_tabs(self) -> list[tuple[Any, str, str]]:
        from tagger.ui import build_ui

        page = build_ui(self.tagger(), self.host)
        title, tab_id = self.tab
        return [(page.demo, title, tab_id)]

    def on_app_started(self, demo: Any, app: Any) -> None:
        cmd = getattr(self.modules.shared, "cmd_opts", None)
        if not (getattr(cmd, "api", False) or getattr(cmd, "nowebui", False)):
            return  # like the host's own API: only with --api (or --nowebui)
        from tagger.api import mount_api, parse_api_auth

        try:
            auth = parse_api_auth(getattr(cmd, "api_auth", None))
        except ValueError as e:  # never serve the API without the protection the user asked for
            log.error("Tagger: the HTTP API is not mounted: %s", e)
            return
        mount_api(app, self.tagger(), auth=auth, unload_after=lambda: self.host.defaults().unload_after)
