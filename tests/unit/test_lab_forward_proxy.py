"""The lab's forward proxy (tests/lab/forward_proxy.py): plain requests by absolute URI, as apt sends
them, and CONNECT tunnels, as pip opens them, against a server on loopback."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.lab.forward_proxy import ForwardProxy


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"path={self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ForwardProxy("127.0.0.1", port):
        yield port


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_request_by_absolute_uri_reaches_the_origin_with_its_path(origin: int, proxy_port: int) -> None:
    answer = _exchange(
        proxy_port,
        f"GET http://127.0.0.1:{origin}/dists/bookworm/InRelease?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Proxy-Connection: keep-alive\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.0 200") and answer.endswith(b"path=/dists/bookworm/InRelease?x=1")


def test_connect_opens_a_tunnel_to_the_origin(origin: int, proxy_port: int) -> None:
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as conn:
        conn.sendall(f"CONNECT 127.0.0.1:{origin} HTTP/1.1\r\nHost: 127.0.0.1:{origin}\r\n\r\n".encode())
        assert conn.recv(1024).startswith(b"HTTP/1.1 200")
        conn.sendall(b"GET /simple/ HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    assert b"".join(chunks).endswith(b"path=/simple/")


def test_an_unreachable_origin_is_a_502(proxy_port: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    answer = _exchange(proxy_port, f"CONNECT 127.0.0.1:{closed_port} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 502")


def test_a_scheme_other_than_http_is_refused(proxy_port: int) -> None:
    answer = _exchange(proxy_port, b"GET ftp://127.0.0.1/x HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
