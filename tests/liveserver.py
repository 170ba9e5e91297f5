"""uvicorn serving an app on 127.0.0.1 (a free port) in a thread, for tests that talk real HTTP to it."""

from __future__ import annotations

import socket
import threading
from typing import Any


class LiveServer:
    """A context manager; ``url`` is ``http://127.0.0.1:PORT`` (no trailing slash).

    The socket listens before uvicorn starts, so a request made at once waits in the kernel's queue until
    uvicorn (after the app's startup) accepts it: nothing has to poll for "started".
    """

    def __init__(self, app: Any, **config: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))

    def __enter__(self) -> LiveServer:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
