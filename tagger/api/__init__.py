"""The HTTP API: the earlier tagger extensions' routes, unchanged for their clients, plus richer ones.

``mount_api`` adds the routes to an existing FastAPI app (the WebUI's, on ``on_app_started``) and
``create_app`` makes a standalone app with only them. Nothing here imports gradio or the WebUI.

Routes, under the prefix (``/tagger/v1`` by default):

- ``GET interrogators`` -> ``{"models": [names]}`` (as the earlier extensions); ``GET models`` -> details.
- ``POST interrogate`` ``{"image": base64, "model": name, "threshold": 0.35, ...options}`` ->
  ``{"caption": {tag: probability}, "prompt": ..., "rating": ..., "general": ..., "character": ..., ...}``.
- ``POST interrogate/batch`` ``{"images": [base64, ...], "model": name, ...options}`` ->
  ``{"results": [{"index": 0, "ok": true, "result": {...}, "error": null}, ...], ...}`` in input order; a
  bad image gives its item an ``error`` and the others are still tagged.
- ``POST unload-interrogators`` (all; the earlier answer, a JSON string with the count), ``POST unload``
  ``{"model": name}`` (one, or all without a name), ``GET loaded``.

Where to find what: ``routes`` (the endpoints, over the engine), ``schemas`` (request and response models),
``errors`` (the JSON error answers), ``limits`` (body, pixel and image-count limits), ``auth`` (basic
auth as the WebUI's ``--api-auth``), ``payload`` (base64 images in, the earlier answer shape out).
"""

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from tagger import __version__
from tagger.api.auth import BasicAuth, parse_api_auth
from tagger.api.limits import ApiLimits
from tagger.api.routes import Routes, TaggerRoute
from tagger.engine import Tagger

__all__ = ["DEFAULT_PREFIX", "ApiLimits", "create_app", "mount_api", "parse_api_auth"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/tagger/v1"


def mount_api(
    app: FastAPI,
    tagger: Tagger,
    *,
    prefix: str = DEFAULT_PREFIX,
    auth: dict[str, str] | None = None,
    limits: ApiLimits | None = None,
    unload_after: Callable[[], bool] | None = None,
) -> None:
    """Add the tagger routes under ``prefix`` to ``app``.

    ``auth``: username -> password for HTTP basic auth, like the WebUI's ``--api-auth`` (None: no auth).
    ``limits``: see ApiLimits. ``unload_after``: asked after each request; True unloads the model used (the
    WebUI's "unload after each interrogation" setting). Model runs hold the engine's ``run_lock``.
    """
    routes = Routes(tagger, limits or ApiLimits(), BasicAuth(auth), unload_after)
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    # Mounting again (the WebUI's "Reload UI" runs on_app_started again) replaces the earlier routes:
    # Starlette would otherwise keep answering with the first ones.
    app.router.routes[:] = [
        r for r in app.router.routes if not (isinstance(r, TaggerRoute) and r.path.startswith(prefix + "/"))
    ]
    routes.add_to(app.router, prefix)
    _answer_first(app, prefix)
    app.openapi_schema = None  # regenerated with these routes on the next /openapi.json


def _answer_first(app: FastAPI, prefix: str) -> None:
    """Put our routes before another extension's on the same paths (the older tagger extensions serve
    ``/tagger/v1/...`` too; Starlette answers with the first match), and say so in the console."""
    ours = [r for r in app.router.routes if isinstance(r, TaggerRoute)]
    ours_paths = {r.path for r in ours}
    others = [r for r in app.router.routes if not isinstance(r, TaggerRoute)]
    shadowed = sorted({p for r in others if (p := getattr(r, "path", None)) in ours_paths})
    if not shadowed:
        return
    log.warning(
        "Tagger: another extension also serves %s; this tagger answers them now (the older clients' requests "
        "and model names work here unchanged). Disable the other tagger extension to silence this.",
        ", ".join(shadowed),
    )
    app.router.routes[:] = ours + others


def create_app(tagger: Tagger, **kwargs: Any) -> FastAPI:
    """A FastAPI app with only the tagger API (``mount_api``'s keyword arguments apply)."""
    app = FastAPI(
        title="WD14 tagger",
        version=__version__,
        description="Tag images with WD14 models. The earlier tagger extensions' routes work unchanged.",
    )
    mount_api(app, tagger, **kwargs)
    return app
