"""Stand-in of the WebUI's ``modules.script_callbacks``: records callbacks; tests fire them."""

from __future__ import annotations

import inspect
from typing import Any

callbacks: dict[str, list[Any]] = {"ui_tabs": [], "ui_settings": [], "app_started": []}


def _add(kind: str, callback: Any) -> None:
    # As the WebUI's add_callback does on every registration (it records who registered): inspect.stack()
    # walks every frame, and for frames without a file (the import system's) inspect.getmodule goes through
    # sys.modules.
    _ = [frame for frame in inspect.stack() if frame.filename != __file__]
    callbacks[kind].append(callback)


def clear() -> None:
    for v in callbacks.values():
        v.clear()


def on_ui_tabs(callback: Any, *, name: str | None = None) -> None:
    _add("ui_tabs", callback)


def on_ui_settings(callback: Any, *, name: str | None = None) -> None:
    _add("ui_settings", callback)


def on_app_started(callback: Any, *, name: str | None = None) -> None:
    _add("app_started", callback)


def ui_tabs_callback() -> list[Any]:
    out: list[Any] = []
    for cb in callbacks["ui_tabs"]:
        out += cb() or []
    return out


def ui_settings_callback() -> None:
    for cb in callbacks["ui_settings"]:
        cb()


def app_started_callback(demo: Any, app: Any) -> None:
    for cb in callbacks["app_started"]:
        cb(demo, app)
