"""A stand-in for the Hugging Face Hub's file interface, for tests that must not reach the network.

It serves ``HEAD`` and ``GET`` of ``/{owner}/{repo}/resolve/{revision}/{filename}`` on 127.0.0.1 with the
headers ``huggingface_hub.hf_hub_download`` and ``get_hf_file_metadata`` read (checked against
huggingface_hub 0.36 and 2.4, ``file_download.get_hf_file_metadata`` / ``http_get``):

- ``X-Repo-Commit``: the commit the revision points to (required, else ``FileMetadataError``);
- ``ETag``: the git blob sha1 of a regular file, the sha256 of an LFS file (required);
- LFS files (``.onnx``...) are answered as the Hub answers them: ``302`` to a content server on another host
  (``http://localhost:PORT/cdn/{sha256}/{filename}``, which huggingface_hub does not follow on ``HEAD``), with
  ``X-Linked-Etag`` / ``X-Linked-Size`` (the sha256 and size, preferred over ETag and Content-Length);
- a renamed repository (``rename(old, new)``) answers ``307`` with a relative ``Location`` to the new name,
  which huggingface_hub follows;
- ``Content-Length`` and ``Accept-Ranges: bytes``; ``GET`` with ``Range: bytes=START-[END]`` answers
  206 with ``Content-Range`` (how huggingface_hub resumes a broken transfer);
- errors as the Hub sends them: 404 with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or
  ``EntryNotFound`` (the last one with ``X-Repo-Commit``), which huggingface_hub maps to
  ``RepositoryNotFoundError``, ``RevisionNotFoundError`` and ``(Remote)EntryNotFoundError``.

Faults to test recovery, queued per file name and used up one ``GET`` of the file's bytes at a time:
``"corrupt"`` (same length, different bytes), ``"truncate"`` (full Content-Length announced, half the
body sent, connection closed) and ``"500"``/``"503"``/... (that HTTP status). ``head_delay`` makes every
HEAD wait that many seconds (to test timeouts). Every request is recorded in ``requests`` (huggingface_hub
2.x also asks ``/api/...`` once per process when this stub's address was HF_ENDPOINT at its import; ``count``
only counts file requests, ``/resolve/`` and ``/cdn/``).
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
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})/(?P<file>.+)$")
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
        self.renamed: dict[str, str] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[Recorded] = []
        self.head_delay = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content ---------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], revision: str = "main") -> None:
        self.repos.setdefault(repo_id, _Repo()).revisions[revision] = dict(files)

    def rename(self, old: str, new: str) -> None:
        """Requests for repository ``old`` are redirected to ``new`` (as the Hub does after a rename)."""
        self.renamed[old] = new

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
        """Requests for files (``/resolve/`` and ``/cdn/`` paths), optionally of one method and one file name."""
        with self._lock:
            return sum(
                1
                for r in self.requests
                if ("/resolve/" in r.path or r.path.startswith("/cdn/"))
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

    @property
    def cdn_url(self) -> str:
        """The same server under another host name: where LFS files are redirected, as the Hub redirects them to
        its content servers (huggingface_hub follows redirects within a host, not to another one)."""
        return self.url.replace("//127.0.0.1:", "//localhost:")

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

    def _blob(self, sha256: str) -> bytes | None:
        """The content of any LFS file whose sha256 is ``sha256`` (what a content server serves)."""
        for repo in list(self.repos.values()):
            for files in list(repo.revisions.values()):
                for name, content in files.items():
                    if self.is_lfs(name) and hashlib.sha256(content).hexdigest() == sha256:
                        return content
        return None


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
        cdn = _CDN.match(raw_path)
        if cdn:
            content = stub._blob(cdn.group("sha"))
            if content is None:
                self._error(404, None, "Not found")
            else:
                self._send_file(content, unquote(cdn.group("file")), head=head, headers={})
            return
        match = _RESOLVE.match(raw_path)
        if not match:
            self._error(404, None, "Not found")
            return
        repo_id, revision, filename = (unquote(match.group(g)) for g in ("repo", "rev", "file"))
        if repo_id in stub.renamed:
            self.send_response(307)
            self.send_header("Location", raw_path.replace(f"/{repo_id}/", f"/{stub.renamed[repo_id]}/", 1))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
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
        if head and stub.head_delay:
            time.sleep(stub.head_delay)

        if not stub.is_lfs(filename):
            headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(content)}"'}
            self._send_file(content, filename, head=head, headers=headers)
            return
        sha256 = hashlib.sha256(content).hexdigest()
        self.send_response(302)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{sha256}"')
        self.send_header("X-Linked-Etag", f'"{sha256}"')
        self.send_header("X-Linked-Size", str(len(content)))
        self.send_header("Location", f"{stub.cdn_url}/cdn/{sha256}/{match.group('file')}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_file(self, content: bytes, filename: str, *, head: bool, headers: dict[str, str]) -> None:
        """The bytes of a file (or only its headers), with Range support and the queued faults."""
        common = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if head:
            self.send_response(200)
            for key, value in common.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            return
        fault = self.stub._next_fault(filename)
        if fault and fault.isdigit():
            self._error(int(fault), None, f"stub fault {fault}")
            return
        body = bytes(b ^ 0xFF for b in content) if fault == "corrupt" else content
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
        for key, value in common.items():
            self.send_header(key, value)
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


@contextmanager
def running_stub() -> Iterator[HubStub]:
    """``with running_stub() as hub: ...`` starts a stub and stops it afterwards."""
    stub = HubStub().start()
    try:
        yield stub
    finally:
        stub.stop()
