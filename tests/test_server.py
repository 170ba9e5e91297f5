"""The standalone server's exposure, over real HTTP (uvicorn on 127.0.0.1 serving the real app): basic auth over
the page, its websockets, the API and the docs; no exposed bind without auth; the page's batch folders
confined to the operator's roots; /docs working offline. Runs under gradio 3.41 and 4.x alike."""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

if importlib.util.find_spec("gradio") is None or importlib.util.find_spec("fastapi") is None:
    pytest.skip("the server needs the ui and api extras (pip install -e .[ui,api])", allow_module_level=True)

import gradio as gr
import httpx

from tagger.cli import main
from tagger.engine import Tagger
from tagger.host import HostDefaults, StandaloneHost
from tagger.server import ServeError, build_app, check_exposure, default_batch_roots, is_loopback, load_auth
from tagger.ui import build_ui
from tests.liveserver import LiveServer
from tests.test_ui_page import inputs

USERS = {"alice": "s3cret:with colon", "bob": "hunter2"}
GRADIO_3 = gr.__version__.startswith("3.")


@pytest.fixture(scope="module")
def live(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    app = build_app(
        Tagger(model_root, "cpu"),
        defaults=HostDefaults(model="test-model"),
        presets_dir=tmp_path_factory.mktemp("presets"),
        auth=USERS,
    )
    with LiveServer(app) as server:
        yield server


def client(live: LiveServer, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=live.url, trust_env=False, timeout=30, **kwargs)


PROTECTED = ["/", "/config", "/docs", "/openapi.json", "/tagger/v1/models", "/tagger/v1/interrogators"]


# -- authentication ------------------------------------------------------------------------------------------


def test_without_credentials_page_api_and_docs_answer_401(live: LiveServer) -> None:
    wrong = {"Authorization": "Basic " + base64.b64encode(b"alice:nope").decode()}
    garbage = {"Authorization": "Basic !!!not-base64"}
    with client(live) as c:
        for path in PROTECTED:
            for headers in ({}, wrong, garbage):
                r = c.get(path, headers=headers)
                assert r.status_code == 401, (path, headers, r.status_code)
                assert r.headers["www-authenticate"].startswith("Basic") and "set-cookie" not in r.headers
        r = c.post("/tagger/v1/interrogate", json={"image": "x"})
        assert r.status_code == 401 and r.json()["error"] == "Authentication required"


def test_with_credentials_page_api_and_docs_answer(live: LiveServer) -> None:
    for user, password in USERS.items():
        with client(live, auth=(user, password)) as c:
            for path in PROTECTED:
                assert c.get(path).status_code == 200, (user, path)
            assert "test-model" in [m["name"] for m in c.get("/tagger/v1/models").json()["models"]]


def test_the_session_cookie_stands_for_the_credentials(live: LiveServer) -> None:
    with client(live, auth=("bob", "hunter2")) as c:
        cookie = c.get("/").cookies["tagger_session"]
    with client(live, cookies={"tagger_session": cookie}) as c:
        assert c.get("/config").status_code == 200
    with client(live, cookies={"tagger_session": cookie[:-2] + "xx"}) as c:
        assert c.get("/config").status_code == 401


def handshake(live: LiveServer, path: str, headers: dict[str, str]) -> str:
    """The status line uvicorn answers a WebSocket handshake with."""
    port = int(live.url.rsplit(":", 1)[1])
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return s.recv(4096).decode("latin-1").split("\r\n", 1)[0]


def test_websockets_need_credentials_too(live: LiveServer) -> None:
    assert " 403 " in handshake(live, "/queue/join", {}) + " "
    if GRADIO_3:  # gradio 3's queue is a WebSocket; the browser brings the session cookie to it
        with client(live, auth=("bob", "hunter2")) as c:
            cookie = c.get("/").cookies["tagger_session"]
        assert " 101 " in handshake(live, "/queue/join", {"Cookie": f"tagger_session={cookie}"}) + " "


CHROMIUM = os.environ.get("TAGGER_CHROMIUM", "/usr/bin/chromium")


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"chromium not found at {CHROMIUM} (apt-get install chromium)")
def test_the_page_works_in_a_browser_behind_auth(live: LiveServer, tmp_path: Path) -> None:
    """In chromium, with the credentials: gradio 3 runs the event through its WebSocket and then POSTs it to its
    own /api/predict, gradio 4 through HTTP and server-sent events; each must get through the auth."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (255, 0, 0)).save(image)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(http_credentials={"username": "alice", "password": USERS["alice"]})
            page = context.new_page()
            page.set_default_timeout(60_000)  # generous: a loaded 2-core machine, not a deadline of the page
            page.goto(live.url + "/")
            page.set_input_files("#tagger_image input[type=file]", str(image))
            page.wait_for_selector("#tagger_image img")
            page.click("#tagger_interrogate")
            page.wait_for_function("() => document.querySelector('#tagger_prompt textarea').value.length > 0")
            assert page.input_value("#tagger_prompt textarea").startswith("red theme, solo")
        finally:
            browser.close()


# -- who may listen where ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_binds_need_no_auth(host: str) -> None:
    assert is_loopback(host)
    check_exposure(host, None, insecure_no_auth=False)
    assert default_batch_roots(host) == [Path.cwd()]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1"])
def test_an_exposed_bind_is_refused_without_auth(host: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert not is_loopback(host)
    with pytest.raises(ServeError, match="--insecure-no-auth"):
        check_exposure(host, None, insecure_no_auth=False)
    check_exposure(host, USERS, insecure_no_auth=False)
    check_exposure(host, None, insecure_no_auth=True)
    assert default_batch_roots(host) == []
    assert main(["serve", "--host", host]) == 2  # refused before anything is imported or bound
    assert "nobody is asked for a password" in capsys.readouterr().err


def test_auth_from_the_option_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_auth(None, None) is None
    assert load_auth("alice:a:b,bob:x", None) == {"alice": "a:b", "bob": "x"}
    users = tmp_path / "users"
    users.write_text("# who may use the tagger\nalice:one\n\nbob:two,carol:three\n", encoding="utf-8")
    assert load_auth(None, str(users)) == {"alice": "one", "bob": "two", "carol": "three"}
    monkeypatch.setenv("TAGGER_AUTH", "dave:four")
    assert load_auth(None, None) == {"dave": "four"}
    assert load_auth("erin:five", None) == {"erin": "five"}  # an option wins over the environment
    for text, message in [("bob", "must be user:password"), ("bob:", "empty password"), (",", "must be user")]:
        with pytest.raises(ServeError, match=message):
            load_auth(text, None)
    users.write_text("# nobody yet\n", encoding="utf-8")
    with pytest.raises(ServeError, match="no user:password entry"):
        load_auth(None, str(users))
    with pytest.raises(ServeError, match="cannot be read"):
        load_auth(None, str(tmp_path / "missing"))


# -- batch folders -------------------------------------------------------------------------------------------


def red(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    return path


@pytest.fixture
def confined(model_root: Path, tmp_path: Path) -> Any:
    host = StandaloneHost(HostDefaults(model="test-model"), tmp_path / "presets", batch_roots=[tmp_path / "allowed"])
    (tmp_path / "allowed").mkdir()
    return build_ui(Tagger(model_root, "cpu"), host)


def batch(page: Any, folder: str, output: str = "", recursive: bool = False, metadata: str = "") -> dict[Any, Any]:
    data = inputs(page, batch_token="t", batch_input=folder, batch_recursive=recursive, batch_output=output,
                  batch_format="[name].txt", batch_existing="skip", batch_json=False, batch_escape=False,
                  batch_backup=True, batch_metadata=metadata, batch_workers=0)  # fmt: skip
    return list(page.run_batch(data))[-1]


needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")


@needs_symlinks
def test_page_batches_inside_the_roots_only(confined: Any, tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    red(allowed / "imgs" / "a.png")
    red(outside / "b.png")
    (allowed / "link").symlink_to(outside, target_is_directory=True)
    refused = [
        (str(outside), "", ""),
        (str(allowed / ".." / "outside"), "", ""),  # ".." is resolved
        (str(allowed / "link"), "", ""),  # so are links
        (str(allowed / "imgs"), str(outside / "captions"), ""),  # the output folder too
        (str(allowed / "imgs"), "", str(outside / "meta.json")),  # and the metadata file
    ]
    for folder, output, metadata in refused:
        final = batch(confined, folder, output, metadata=metadata)
        status = final[confined.status]
        assert "outside the folders batches may use here" in status and str(allowed.resolve()) in status, folder
        assert "--batch-root" in status
    assert not list(tmp_path.rglob("*.txt"))
    final = batch(confined, str(allowed / "imgs"))
    assert "1 tagged" in final[confined.batch_summary] and (allowed / "imgs" / "a.txt").is_file()


@needs_symlinks
def test_a_link_inside_a_root_does_not_lead_a_batch_out(confined: Any, tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    red(allowed / "imgs" / "a.png")
    red(outside / "secret.png")
    (allowed / "imgs" / "evil.png").symlink_to(outside / "secret.png")
    (allowed / "imgs" / "sub").symlink_to(outside, target_is_directory=True)
    final = batch(confined, str(allowed / "imgs"), recursive=True)
    summary = final[confined.batch_summary]
    assert "1 tagged" in summary and "evil.png" in summary and "allowed folders" in summary
    assert sorted(p.name for p in tmp_path.rglob("*.txt")) == ["a.txt"]


def test_batch_is_off_when_no_root_is_allowed(model_root: Path, tmp_path: Path) -> None:
    red(tmp_path / "a.png")
    page = build_ui(Tagger(model_root, "cpu"), StandaloneHost(HostDefaults(model="test-model"), batch_roots=[]))
    assert "Batch from folder is off on this server" in batch(page, str(tmp_path))[page.status]
    assert not (tmp_path / "a.txt").exists()


# -- the API documentation, offline --------------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("fastapi_offline") is None,
    reason="fastapi-offline (Swagger UI's files, in the api extra) is not installed: /docs loads them from a CDN",
)
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_everything_from_the_app_itself(live: LiveServer, page: str) -> None:
    with client(live, auth=("bob", "hunter2")) as c:
        html = c.get(page).text
        assert not re.findall(r"(?:https?:)?//[\w.-]+", html.replace("window.location.origin", "")), html
        urls = [a or b for a, b in re.findall(r'(?:href|src|spec-url)="([^"]+)"|url: \'([^\']+)\'', html)]
        assert len(urls) >= 3 and "/openapi.json" in urls, urls
        for url in urls:
            r = c.get(url)
            assert r.status_code == 200 and len(r.content) > 100, url
        assert c.get("/docs-assets/server.py").status_code == 404  # its own files only
