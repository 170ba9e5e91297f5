"""A stand-in for the Hugging Face Hub's file interface, for tests that must not reach the network.

It serves ``HEAD`` and ``GET`` of ``/{owner}/{repo}/resolve/{revision}/{filename}`` on 127.0.0.1 with the
headers ``huggingface_hub.hf_hub_download`` reads (checked against huggingface_hub 2.4.0,
``file_download.get_hf_file_metadata`` / ``http_get``):

- ``X-Repo-Commit``: the commit the revision points to (required, else ``FileMetadataError``);
- ``ETag``: the git blob sha1 of a regular file, the sha256 of an LFS file (required);
- ``X-Linked-Etag`` / ``X-Linked-Size``: the sha256 and size of an LFS file (preferred over ETag and
  Content-Length when present);
- ``Content-Length`` and ``Accept-Ranges: bytes``; ``GET`` with ``Range: bytes=START-[END]`` answers
  206 with ``Content-Range`` (how huggingface_hub resumes a broken transfer);
- errors as the Hub sends them: 404 with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or
  ``EntryNotFound`` (the last one with ``X-Repo-Commit``), which huggingface_hub maps to
  ``RepositoryNotFoundError``, ``RevisionNotFoundError`` and ``(Remote)EntryNotFoundError``.

Files are served directly (the real Hub redirects LFS files to a CDN on another host; huggingface_hub
takes the metadata from that redirect response, so serving them in place exercises the same fields).

Faults to test recovery, queued per file name and used up one ``GET`` at a time:
``"corrupt"`` (same length, different bytes), ``"truncate"`` (full Content-Length announced, half the
body sent, connection closed) and ``"500"``/``"503"``/... (that HTTP status). ``head_delay`` makes every
HEAD wait that many seconds (to test timeouts). Every request is recorded in ``requests`` (huggingface_hub 2.x also asks ``/api/agent-harnesses`` once
per process when this stub's address was HF_ENDPOINT at its import; ``count`` only counts file requests).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")
LFS_SUFFIXES = (".onnx", ".bin", ".safetensors")


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob: what the Hub sends as ETag for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    range: str | None


@dataclass
class _Repo:
    revisions: dict[str, dict[str, bytes]] = field(default_factory=dict)


class HubStub:
    """A threaded HTTP server standing in for the Hub; use as a context manager or start()/stop()."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[Recorded] = []
        self.head_delay = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content ---------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> None:
        self.repos.setdefault(repo_id, _Repo()).revisions[revision] = dict(files)

    def add_fault(self, filename: str, *faults: str) -> None:
        """Queue faults for the next GETs of ``filename`` (any repo)."""
        with self._lock:
            self.faults.setdefault(filename, []).extend(faults)

    @staticmethod
    def commit_of(repo_id: str, revision: str) -> str:
        return hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()

    @staticmethod
    def is_lfs(filename: str) -> bool:
        return filename.endswith(LFS_SUFFIXES)

    # -- requests seen ---------------------------------------------------------------------------
    def count(self, method: str | None = None, filename: str | None = None) -> int:
        """Requests for files (``/resolve/`` paths), optionally of one method and one file name."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if "/resolve/" in r.path
                and (method is None or r.method == method)
                and (filename is None or r.path.endswith("/" + filename))
            )

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- server ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStub:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.stub = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> HubStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ---------------------------------------------------------------------
    def _record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, range_header))

    def _next_fault(self, filename: str) -> str | None:
        with self._lock:
            queue = self.faults.get(filename)
            return queue.pop(0) if queue else None


class _Handler(BaseHTTPRequestHandler):
    server_version = "hubstub/1"
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers at shutdown

    @property
    def stub(self) -> HubStub:
        return self.server.stub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, *, head: bool) -> None:
        stub = self.stub
        raw_path = urlsplit(self.path).path
        stub._record(self.command, unquote(raw_path), self.headers.get("Range"))
        match = _RESOLVE.match(raw_path)
        if not match:
            self._error(404, None, "Not found")
            return
        repo_id, revision, filename = (unquote(match.group(g)) for g in ("repo", "rev", "file"))
        repo = stub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        files = repo.revisions.get(revision)
        if files is None:
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
            return
        commit = stub.commit_of(repo_id, revision)
        content = files.get(filename)
        if content is None:
            self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
            return

        lfs = stub.is_lfs(filename)
        etag = hashlib.sha256(content).hexdigest() if lfs else git_blob_sha1(content)
        if head:
            if stub.head_delay:
                time.sleep(stub.head_delay)
            self.send_response(200)
            self._common_headers(commit, etag, lfs, len(content))
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            return

        fault = stub._next_fault(filename)
        if fault and fault.isdigit():
            self._error(int(fault), None, f"stub fault {fault}")
            return
        body = content
        if fault == "corrupt":
            body = bytes(b ^ 0xFF for b in content)
        start, end, status = 0, len(content) - 1, 200
        range_header = self.headers.get("Range")
        if range_header:
            m = _RANGE.match(range_header.strip())
            if m is None or int(m.group("start")) >= len(content):
                self._error(416, None, "Range not satisfiable", {"Content-Range": f"bytes */{len(content)}"})
                return
            start = int(m.group("start"))
            end = min(int(m.group("end")), len(content) - 1) if m.group("end") else len(content) - 1
            status = 206
        chunk = body[start : end + 1]
        self.send_response(status)
        self._common_headers(commit, etag, lfs, len(content))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(content)}")
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if fault == "truncate":
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)

    def _common_headers(self, commit: str, etag: str, lfs: bool, size: int) -> None:
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{etag}"')
        if lfs:
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")


@contextmanager
def running_stub() -> Iterator[HubStub]:
    """``with running_stub() as hub: ...`` starts a stub and stops it afterwards."""
    stub = HubStub().start()
    try:
        yield stub
    finally:
        stub.stop()
