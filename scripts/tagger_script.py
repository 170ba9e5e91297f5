"""WebUI glue: registers the Tagger tab, its settings and its API. The real code is in the ``tagger`` package.

The older tagger extensions (toriato's, picobyte's and Akegarasu's ``...wd14-tagger``) also ship a top-level
``tagger``: a folder without ``__init__.py`` (so a namespace package) that their ``scripts/tagger.py`` and its
modules import by that name, all at load time. Python keeps one ``sys.modules["tagger"]``, and which package
gets it depends on the load order and the host (A1111 puts an extension's folder on ``sys.path`` only while its
scripts load; Forge keeps every extension's folder there, where a regular package beats a namespace one). So
when another ``tagger`` is imported or active:

- ``preload.py`` (which the host runs for every extension before any script) gives ``sys.modules["tagger"]``
  to the older extension's folders: their scripts then never find our package instead (Forge keeps our
  folder on ``sys.path``), and this script knows theirs is there even when it loads first;
- ours is loaded from this extension's folder by file location, whatever ``tagger`` was imported first;
- outside our callbacks, ``sys.modules`` holds theirs under ``tagger`` and under every name both packages use
  (``tagger.ui``, ``tagger.api``), so that their scripts get their own modules whether they load before or
  after ours; while our callbacks run it holds ours, so that our imports inside them get ours. Our modules
  whose names theirs lacks stay in place, so that our code finds them at any time.

If this cannot work (our package fails to import beside theirs), the Tagger tab and the console say so in one
line naming both folders and what to do.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("tagger")
EXTENSION_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = EXTENSION_ROOT / "tagger"
# What our callbacks import when they run; imported at load, while our package is the one in sys.modules.
RUNTIME_MODULES = ("tagger.webui", "tagger.ui", "tagger.api", "tagger.engine", "tagger.cache")


def _tagger_entries() -> dict[str, ModuleType]:
    return {n: m for n, m in list(sys.modules.items()) if m is not None and (n == "tagger" or n.startswith("tagger."))}


def _is_ours(module: ModuleType) -> bool:
    where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", None) or []), None)
    return bool(where) and Path(where).resolve().is_relative_to(PACKAGE)


def _folders(package: ModuleType | None) -> list[Path]:
    return [Path(p).resolve() for p in getattr(package, "__path__", None) or [] if Path(p).is_dir()]


def _forget_in_inspect(names: list[str]) -> None:
    """``inspect.getmodule`` remembers each module's file by name. Once it has seen our ``tagger`` (which has a
    file) under the name, their namespace package (``__file__`` None) there makes the next ``inspect.stack()``
    raise TypeError ("is a built-in module"), and the WebUI calls ``inspect.stack()`` on every callback
    registration: a host script failed to load in the real A1111. Forgetting what it remembered for the names
    just handed back lets it pass over theirs again, as it does before it ever saw ours."""
    remembered = getattr(inspect, "_filesbymodname", None)
    if isinstance(remembered, dict):
        for name in names:
            remembered.pop(name, None)


class SharedName:
    """Keeps our ``tagger`` and another extension's apart in ``sys.modules`` (see the module's doc)."""

    def __init__(self, theirs: dict[str, ModuleType], their_dirs: list[Path]) -> None:
        self.theirs = dict(theirs)
        self.ours: dict[str, ModuleType] = {}
        self.their_names = {p.stem for d in their_dirs for p in d.iterdir() if p.suffix == ".py" or p.is_dir()}

    def _clashes(self, name: str) -> bool:
        return name == "tagger" or name.split(".")[1] in self.their_names

    def give_back(self) -> None:
        """Remember our modules (and theirs), then let theirs have the shared names."""
        for name, module in _tagger_entries().items():
            (self.ours if _is_ours(module) else self.theirs)[name] = module
        handed_back = [n for n in self.ours if self._clashes(n)]
        for name in handed_back:
            sys.modules.pop(name, None)
        sys.modules.update(self.theirs)
        _forget_in_inspect(handed_back)

    def ours_during(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` run with our modules in ``sys.modules``, theirs given back afterwards."""

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            for name, module in _tagger_entries().items():
                if not _is_ours(module):
                    self.theirs[name] = module  # theirs may have loaded since
            sys.modules.update(self.ours)
            try:
                return fn(*args, **kwargs)
            finally:
                self.give_back()

        return call


class _Callbacks:
    """The host's ``script_callbacks`` as ``TaggerExtension.register`` sees it: each callback wrapped."""

    def __init__(self, host: ModuleType, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        self._host, self._wrap = host, wrap

    def __getattr__(self, name: str) -> Any:
        register = getattr(self._host, name)
        if not name.startswith("on_"):
            return register
        return lambda callback, *a, **k: register(self._wrap(callback), *a, **k)


def _import_ours() -> ModuleType:
    """Our package from this extension's folder, under its name, whatever ``sys.path`` holds."""
    spec = importlib.util.spec_from_file_location("tagger", PACKAGE / "__init__.py")
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules["tagger"] = package
    spec.loader.exec_module(package)
    for name in RUNTIME_MODULES:
        importlib.import_module(name)
    return package


def _conflict(their_dirs: list[Path], error: BaseException) -> None:
    others = ", ".join(str(d.parent) for d in their_dirs)
    message = (
        f"Tagger ({EXTENSION_ROOT}) could not load beside the older tagger extension in {others}, which has a "
        f"'tagger' package too ({type(error).__name__}: {error}). Disable one of the two in the Extensions tab, "
        "then restart the WebUI."
    )
    log.error(message)
    from modules import script_callbacks

    def tab() -> list[tuple[Any, str, str]]:
        import html

        import gradio as gr

        with gr.Blocks(analytics_enabled=False) as blocks:
            gr.HTML(f"<div class='tagger-error'>{html.escape(message)}</div>", elem_id="tagger_conflict")
        return [(blocks, "Tagger", "tagger")]

    script_callbacks.on_ui_tabs(tab)


def _register() -> None:
    entries = _tagger_entries()
    theirs = {n: m for n, m in entries.items() if not _is_ours(m)}
    if not theirs:  # the usual case: no other tagger around (preload.py registers one that loads later)
        if "tagger" not in sys.modules:
            _import_ours()
        importlib.import_module("tagger.webui").TaggerExtension().register()
        return
    their_dirs = _folders(theirs.get("tagger"))
    shared = SharedName(theirs, their_dirs)
    for name in entries:  # a fresh copy of ours each load (the WebUI's "Reload UI" runs this file again)
        del sys.modules[name]
    try:
        _import_ours()
        webui = sys.modules["tagger.webui"]
        modules = webui.load_host_modules()
        modules = dataclasses.replace(
            modules, script_callbacks=_Callbacks(modules.script_callbacks, shared.ours_during)
        )
        # Their tab is called "Tagger" with the id "tagger" too: the WebUI would merge two tabs of one id.
        webui.TaggerExtension(modules, tab=("WD14 Tagger", "tagger_wd14")).register()
    except Exception as e:  # whatever it is, the user gets one line and the way out
        for name in [n for n, m in _tagger_entries().items() if _is_ours(m)]:
            del sys.modules[name]
        sys.modules.update(shared.theirs)
        _conflict(their_dirs, e)
        return
    shared.give_back()


_register()
