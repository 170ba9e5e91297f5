"""The standalone server: the Tagger page and the HTTP API in one FastAPI app, for people without the WebUI.

``python -m tagger serve`` calls ``serve``; tests use ``build_app`` and run it with uvicorn themselves.
The page lives at ``/``, the API under ``/tagger/v1`` (the same routes as in the WebUI) and its
documentation at ``/docs``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tagger.engine import Tagger
from tagger.host import Host, HostDefaults, StandaloneHost

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7861
QUEUE_CONCURRENCY = 4  # page events run at once (a long batch must not block tagging in another browser tab)


def build_app(
    tagger: Tagger | None = None,
    *,
    models_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    host: Host | None = None,
    defaults: HostDefaults | None = None,
    presets_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """The FastAPI app serving the page at ``/`` and the API under ``/tagger/v1``.

    ``tagger`` defaults to ``Tagger(models_dir, device)`` with the probability cache; ``host`` to a ``StandaloneHost`` with
    ``defaults`` and ``presets_dir`` (default: the per-user data folder).
    """
    import gradio as gr

    from tagger.api import create_app
    from tagger.ui import build_ui
    from tagger.ui.compat import enable_queue

    if tagger is None:
        from tagger.cache import ProbCache
        from tagger.paths import cache_path

        tagger = Tagger(models_dir, device, cache=ProbCache(cache_path()))
    host = host or StandaloneHost(defaults, Path(presets_dir) if presets_dir else None)
    app = create_app(tagger)  # API routes first: the page's mount at "/" takes whatever they do not
    page = build_ui(tagger, host, standalone_assets=True)
    enable_queue(page.demo, QUEUE_CONCURRENCY)
    app = gr.mount_gradio_app(app, page.demo, path="/")
    app.state.tagger = tagger
    app.state.page = page
    return app


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    models_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
) -> None:
    """Serve the page and the API until interrupted (blocks). Binds to 127.0.0.1 unless told otherwise."""
    import uvicorn

    app = build_app(models_dir=models_dir, device=device)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log.warning("Tagger page: http://%s:%d/  (API: /tagger/v1, docs: /docs)", shown, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
