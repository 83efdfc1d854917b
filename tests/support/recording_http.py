"""A small HTTP/1.1 server on 127.0.0.1 that records every POST and answers it as told, for client tests.

Each request is recorded as a ``Request`` (the client's port, so a kept-alive connection shows as one, the
path, the headers and the body). ``answer`` decides the reply from the request: a status, a body, and
whether to drop the connection afterwards without saying so (as a server whose keep-alive timeout ran
out); by default 200 ``{}``. Stopped on leaving the ``with`` block.
"""

from __future__ import annotations

import http.server
from collections.abc import Callable
from typing import Any, NamedTuple

from tests.support.threaded_server import ServedInThread


class Request(NamedTuple):
    port: int
    path: str
    headers: dict[str, str]
    body: bytes


class Answer(NamedTuple):
    status: int = 200
    body: bytes = b"{}"
    drop_after: bool = False


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = Request(self.client_address[1], self.path, dict(self.headers.items()), body)
        self.server.requests.append(request)
        answer = self.server.answer(request)
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)
        self.close_connection = answer.drop_after

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    requests: list[Request]
    answer: Callable[[Request], Answer]


class RecordingServer(ServedInThread):
    server: _Server

    def __init__(self, answer: Callable[[Request], Answer] | None = None) -> None:
        super().__init__(_Server(("127.0.0.1", 0), _Handler), "recording-http")
        self.server.requests = self.requests = []
        self.server.answer = answer or (lambda request: Answer())

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
