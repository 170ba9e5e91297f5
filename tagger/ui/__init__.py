"""The Tagger page (gradio): ``build_ui(tagger, host)`` gives the Blocks the WebUI tab and the standalone site
show. Importing this package imports gradio; the engine (``tagger.engine``) never does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tagger.engine import Tagger
from tagger.host import Host
from tagger.ui.page import TaggerPage

__all__ = ["TaggerPage", "build_ui", "extension_root", "page_assets"]


def extension_root() -> Path:
    """The checkout holding ``javascript/`` and ``style.css`` (the WebUI extension's root folder)."""
    return Path(__file__).resolve().parent.parent.parent


def page_assets() -> tuple[str | None, str | None]:
    """``(css, js)`` for hosts that do not load an extension's files themselves (the standalone page)."""
    root = extension_root()
    css_path, js_path = root / "style.css", root / "javascript" / "tagger.js"
    css = css_path.read_text(encoding="utf-8") if css_path.is_file() else None
    js = js_path.read_text(encoding="utf-8") if js_path.is_file() else None
    return css, js


def build_ui(tagger: Tagger, host: Host, *, standalone_assets: bool = False, **kwargs: Any) -> TaggerPage:
    """Build the page; with ``standalone_assets`` the page carries its own CSS and JavaScript."""
    if standalone_assets:
        import json

        import gradio as gr

        css, js = page_assets()
        kwargs.setdefault("css", css)
        # System fonts: the default theme fetches Google fonts, which an offline machine cannot reach.
        kwargs.setdefault(
            "theme",
            gr.themes.Default(
                font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
            ),
        )
        if js:
            # Run the script as a global one (as the WebUI does with javascript/*.js) once the page is up.
            boot = f"() => {{ const s = document.createElement('script'); s.textContent = {json.dumps(js)}; document.head.appendChild(s); return []; }}"
            kwargs.setdefault("head_js", boot)
    page = TaggerPage(tagger, host)
    page.build(**kwargs)
    return page
