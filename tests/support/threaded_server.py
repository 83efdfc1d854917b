"""A ``socketserver`` server on loopback, served by a daemon thread for the length of a ``with`` block."""

from __future__ import annotations

import socketserver
import threading
from typing import Self


class ServedInThread:
    def __init__(self, server: socketserver.BaseServer, name: str) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
