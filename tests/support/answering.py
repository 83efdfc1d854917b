"""A loopback HTTP(S) server that answers every GET with 200, for tests of what a client does before it
talks to MLflow (the CLI's reachability check). With ``tls_dir`` it serves TLS with a self-signed certificate
made by ``openssl`` in that folder (``cert`` is its path, to hand to a client as its CA). Stopped on leaving
the ``with`` block."""

from __future__ import annotations

import ssl
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.threaded_server import ServedInThread


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"OK"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key."""
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class Answering(ServedInThread):
    def __init__(self, tls_dir: Path | None = None) -> None:
        super().__init__(ThreadingHTTPServer(("127.0.0.1", 0), _Answer), "answering")
        self.server.daemon_threads = True
        self.cert: Path | None = None
        scheme = "http"
        if tls_dir is not None:
            self.cert, key = self_signed(tls_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
