"""WebUI glue: registers the Tagger tab, its settings and its API. The real code is in the ``tagger`` package.

Older tagger extensions also ship a top-level package named ``tagger``; whichever is imported first wins.
If that is not ours, nothing of ours can load: say so plainly (console and a tab) instead of failing later
with a confusing ImportError.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("tagger")
EXTENSION_ROOT = Path(__file__).resolve().parent.parent


def _foreign_tagger() -> str | None:
    """Where the imported ``tagger`` package comes from, when it is not this extension's."""
    import tagger

    origin = Path(getattr(tagger, "__file__", "") or ".").resolve().parent.parent
    return None if origin == EXTENSION_ROOT else str(Path(getattr(tagger, "__file__", "?")).resolve().parent)


def _conflict(where: str) -> None:
    message = (
        f"Tagger ({EXTENSION_ROOT.name}) cannot load: another extension's 'tagger' package ({where}) was "
        "imported first and hides this one. Disable or remove one of the two tagger extensions in the "
        "Extensions tab, then restart the WebUI."
    )
    log.error(message)
    from modules import script_callbacks

    def tab():
        import html

        import gradio as gr

        with gr.Blocks(analytics_enabled=False) as blocks:
            gr.HTML(f"<div class='tagger-error'>{html.escape(message)}</div>", elem_id="tagger_conflict")
        return [(blocks, "Tagger", "tagger")]

    script_callbacks.on_ui_tabs(tab)


def _register() -> None:
    where = _foreign_tagger()
    if where is not None:
        _conflict(where)
        return
    from tagger.webui import TaggerExtension

    TaggerExtension().register()


_register()
