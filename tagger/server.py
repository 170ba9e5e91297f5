"""The standalone server: the Tagger page and the HTTP API in one FastAPI app, for people without the WebUI.

``python -m tagger serve`` calls ``serve``; tests use ``build_app`` and run it with uvicorn themselves.
The page lives at ``/``, the API under ``/tagger/v1`` (the same routes as in the WebUI) and its
documentation at ``/docs``, served from this app (no CDN), so it works offline.

With ``auth``, HTTP basic auth guards everything (page, its websockets, API, docs). The page's "Batch from
folder" reads and writes folders of this machine, so it is confined to ``batch_roots``; ``serve`` refuses to
listen beyond this machine without auth.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tagger.engine import Tagger
from tagger.errors import TaggerError
from tagger.host import Host, HostDefaults, StandaloneHost

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7861
QUEUE_CONCURRENCY = 4  # page events run at once (a long batch must not block tagging in another browser tab)
ENV_AUTH = "TAGGER_AUTH"
DOCS_ASSETS = "/docs-assets"


class ServeError(TaggerError):
    """``serve`` was asked for something unsafe or impossible (an exposed bind without auth, a bad auth entry)."""


# -- who may connect ----------------------------------------------------------------------------------------


def parse_auth(text: str, source: str) -> dict[str, str]:
    """``user:password`` entries separated by commas or new lines (``#`` starts a comment line)."""
    from tagger.api import parse_api_auth

    lines = [line.strip() for line in text.splitlines()]
    entries = ",".join(line for line in lines if line and not line.startswith("#"))
    try:
        users = parse_api_auth(entries) or {}
    except ValueError:
        raise ServeError(f"{source}: every entry must be user:password (entries separated by commas)") from None
    if not users:
        raise ServeError(f"{source}: no user:password entry")
    empty = sorted(u for u, p in users.items() if not p)
    if empty:
        raise ServeError(f"{source}: user {empty[0]!r} has an empty password")
    return users


def load_auth(auth: str | None, auth_file: str | None) -> dict[str, str] | None:
    """The users of ``--auth`` and ``--auth-file`` together, else of ``$TAGGER_AUTH``; None when none is given."""
    users: dict[str, str] = {}
    if auth:
        users.update(parse_auth(auth, "--auth"))
    if auth_file:
        try:
            text = Path(auth_file).expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise ServeError(f"--auth-file {auth_file}: cannot be read ({e.strerror or e})") from e
        users.update(parse_auth(text, f"--auth-file {auth_file}"))
    if not users and os.environ.get(ENV_AUTH):
        users.update(parse_auth(os.environ[ENV_AUTH], f"${ENV_AUTH}"))
    return users or None


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (127.0.0.0/8, ::1, a name that resolves only to
    those). A name that cannot be resolved counts as exposed."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


class BasicAuth:
    """ASGI middleware: HTTP basic auth over the whole app, under gradio 3 and 4 alike (gradio 3.41's
    ``mount_gradio_app`` has no ``auth``).

    A request that passes gets a session cookie, which is accepted too: gradio 3 runs its queue over a
    WebSocket, and browsers do not reliably send basic credentials with a WebSocket handshake. The cookie is a
    random token of this process (a restart logs everyone out), HttpOnly and SameSite=Strict. gradio 3's own
    call to itself carries ``internal_token`` (see ``_gradio_queue_token``) and passes too.
    """

    COOKIE = "tagger_session"

    def __init__(self, app: Any, users: dict[str, str], internal_token: str | None = None) -> None:
        from tagger.api.auth import BasicAuth as Credentials

        self.app = app
        self.credentials = Credentials(users)
        self.token = secrets.token_urlsafe(32)
        self.internal = f"Bearer {internal_token}".encode() if internal_token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        internal = self.internal is not None and secrets.compare_digest(
            headers.get(b"authorization", b""), self.internal
        )
        if internal or self._cookie_ok(headers.get(b"cookie", b"")):
            await self.app(scope, receive, send)
            return
        if not self._basic_ok(headers.get(b"authorization", b"")):
            await self._refuse(scope, send)
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                cookie = f"{self.COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie if scope["type"] == "http" else send)

    def _cookie_ok(self, header: bytes) -> bool:
        for part in header.decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.COOKIE and secrets.compare_digest(value.encode(), self.token.encode()):
                return True
        return False

    def _basic_ok(self, header: bytes) -> bool:
        return self.credentials.problem(header.decode("latin-1")) is None

    async def _refuse(self, scope: dict[str, Any], send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the handshake gets 403
            return
        body = json.dumps({"error": "Authentication required", "field": None, "detail": None}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Basic realm="Tagger", charset="UTF-8"'),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _gradio_queue_token(app: Any) -> str | None:
    """gradio 3 runs each queued event by POSTing it to its own ``/api/predict`` over HTTP, with a random token
    of the mounted gradio app; that call must pass the auth middleware. (gradio 4 makes no such call.)"""
    for route in app.routes:
        token = getattr(getattr(route, "app", None), "queue_token", None)
        if isinstance(token, str) and token:
            return token
    return None


# -- the API documentation, served from here ----------------------------------------------------------------


def _docs_assets() -> Path | None:
    """The folder of Swagger UI's files from the ``fastapi-offline`` package, or None when it is not installed."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def serve_docs_locally(app: Any) -> bool:
    """Replace FastAPI's ``/docs`` and ``/redoc``, which load Swagger UI and ReDoc from a CDN (a blank page
    offline), with the same pages loading them from this app. False (CDN pages kept) without the package."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response

    folder = _docs_assets()
    if folder is None:
        log.info("fastapi-offline is not installed: /docs loads Swagger UI from the internet")
        return False
    files = {p.name: p for p in folder.iterdir() if p.suffix in (".js", ".css", ".png")}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in ("/docs", "/redoc")]
    title = f"{app.title} - API"

    def asset(request: Request) -> Response:
        path = files.get(request.path_params["name"])
        return FileResponse(path, headers={"Cache-Control": "max-age=86400"}) if path else Response(status_code=404)

    def docs(request: Request) -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=title,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        )

    def redoc(request: Request) -> Response:
        return get_redoc_html(
            openapi_url=app.openapi_url,
            title=title,
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route(DOCS_ASSETS + "/{name}", asset, include_in_schema=False)
    app.add_route("/docs", docs, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    return True


# -- the app ------------------------------------------------------------------------------------------------


def build_app(
    tagger: Tagger | None = None,
    *,
    models_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    host: Host | None = None,
    defaults: HostDefaults | None = None,
    presets_dir: str | os.PathLike[str] | None = None,
    auth: dict[str, str] | None = None,
    batch_roots: Sequence[str | os.PathLike[str]] | None = None,
) -> Any:
    """The FastAPI app serving the page at ``/`` and the API under ``/tagger/v1``.

    ``tagger`` defaults to ``Tagger(models_dir, device)`` with the probability cache; ``host`` to a
    ``StandaloneHost`` with ``defaults``, ``presets_dir`` (default: the per-user data folder) and
    ``batch_roots`` (None: batches anywhere). ``auth`` (username -> password): basic auth over everything.
    """
    import gradio as gr

    from tagger.api import create_app
    from tagger.ui import build_ui
    from tagger.ui.compat import enable_queue

    if tagger is None:
        from tagger.cache import ProbCache
        from tagger.paths import cache_path

        tagger = Tagger(models_dir, device, cache=ProbCache(cache_path()))
    host = host or StandaloneHost(defaults, Path(presets_dir) if presets_dir else None, batch_roots=batch_roots)
    app = create_app(tagger, auth=auth)  # API routes first: the page's mount at "/" takes whatever they do not
    serve_docs_locally(app)
    page = build_ui(tagger, host, standalone_assets=True)
    enable_queue(page.demo, QUEUE_CONCURRENCY)
    app = gr.mount_gradio_app(app, page.demo, path="/")
    if auth is not None:
        app.add_middleware(BasicAuth, users=auth, internal_token=_gradio_queue_token(app))
    app.state.tagger = tagger
    app.state.page = page
    return app


def check_exposure(host: str, auth: dict[str, str] | None, insecure_no_auth: bool) -> None:
    """Refuse to listen beyond this machine without auth: the page reads and writes this machine's files."""
    if auth is None and not insecure_no_auth and not is_loopback(host):
        raise ServeError(
            f"--host {host} lets other machines use the page and the API, and nobody is asked for a password. "
            f"Give users with --auth user:password (or --auth-file FILE, or ${ENV_AUTH}), or, on a network you "
            "trust completely, --insecure-no-auth."
        )


def default_batch_roots(host: str) -> list[Path]:
    """Where the page may batch when ``--batch-root`` is not given: the current folder when only this machine
    can connect, nowhere otherwise (an exposed server must be told which folders it may read and write)."""
    return [Path.cwd()] if is_loopback(host) else []


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    models_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    *,
    auth: dict[str, str] | None = None,
    insecure_no_auth: bool = False,
    batch_roots: Sequence[str | os.PathLike[str]] | None = None,
) -> None:
    """Serve the page and the API until interrupted (blocks). Binds to 127.0.0.1 unless told otherwise."""
    check_exposure(host, auth, insecure_no_auth)
    roots = [Path(r).expanduser() for r in batch_roots] if batch_roots is not None else default_batch_roots(host)
    for root in roots:
        if not root.is_dir():
            raise ServeError(f"--batch-root {root}: no such folder")
    import uvicorn

    app = build_app(models_dir=models_dir, device=device, auth=auth, batch_roots=roots)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log.warning("Tagger page: http://%s:%d/  (API: /tagger/v1, docs: /docs)", shown, port)
    if auth is None and not is_loopback(host):
        log.warning("no authentication: anyone who can reach port %d can use the page and the API", port)
    where = ", ".join(str(r.resolve()) for r in roots) if roots else "nowhere (give --batch-root DIR)"
    log.warning("Batch from folder may read and write in: %s", where)
    uvicorn.run(app, host=host, port=port, log_level="warning")
