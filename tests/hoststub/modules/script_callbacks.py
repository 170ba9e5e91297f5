"""Stand-in of the WebUI's ``modules.script_callbacks``: records callbacks; tests fire them."""

from __future__ import annotations

from typing import Any

callbacks: dict[str, list[Any]] = {"ui_tabs": [], "ui_settings": [], "app_started": []}


def clear() -> None:
    for v in callbacks.values():
        v.clear()


def on_ui_tabs(callback: Any, *, name: str | None = None) -> None:
    callbacks["ui_tabs"].append(callback)


def on_ui_settings(callback: Any, *, name: str | None = None) -> None:
    callbacks["ui_settings"].append(callback)


def on_app_started(callback: Any, *, name: str | None = None) -> None:
    callbacks["app_started"].append(callback)


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
