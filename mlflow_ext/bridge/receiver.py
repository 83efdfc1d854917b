"""The webhook receiver: authenticate, parse, route, write to the outbox, and only then answer 2xx.

``POST /webhook``: 401 for a missing or wrong signature or a stale timestamp, 409 for a delivery id seen
before (a replay), 400/422 for a body that is not an MLflow event, 413 for a body over 1 MiB, 503 when
the outbox cannot be written (MLflow retries with the same delivery id, which was not recorded). ``GET
/health`` answers 200 when the outbox database answers.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import text

from mlflow_ext import events
from mlflow_ext.bridge import signature
from mlflow_ext.bridge.outbox import Outbox
from mlflow_ext.routing import Router

log = logging.getLogger("mlflow_ext.bridge.receiver")

MAX_BODY = 1024 * 1024
PATH = "/webhook"


class Receiver(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # MLflow delivers from a pool of threads per server worker: a burst must not overflow the backlog.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        secret: str,
        max_skew_s: float,
        outbox: Outbox,
        router: Router,
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        self.secret = secret
        self.max_skew_s = max_skew_s
        self.outbox = outbox
        self.router = router
        self.on_accepted = on_accepted
        super().__init__(address, _Handler)

    def handle_delivery(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            delivery_id, _ = signature.verify(
                self.secret,
                headers.get(signature.DELIVERY_ID_HEADER),
                headers.get(signature.TIMESTAMP_HEADER),
                headers.get(signature.SIGNATURE_HEADER),
                body,
                time.time(),
                self.max_skew_s,
            )
            event = events.parse(body)
        except (signature.SignatureError, events.EventError) as exc:
            return exc.status, {"error": exc.message}
        if event is None or event.reserved_tag:
            outcome = self.outbox.accept_delivery(delivery_id)
            if outcome == "replay":
                return 409, {"error": "delivery id already seen"}
            return 200, {"accepted": False, "reason": "event not routed"}
        routes = self.router.match(event)
        if not routes and event.event not in (events.ALIAS_CREATED, events.ALIAS_DELETED):
            if self.outbox.accept_delivery(delivery_id) == "replay":
                return 409, {"error": "delivery id already seen"}
            return 200, {"accepted": False, "reason": "no route matches"}
        result = self.outbox.accept(event, routes, "webhook", delivery_id=delivery_id)
        if result.outcome == "replay":
            return 409, {"error": "delivery id already seen"}
        if result.row_ids:
            self.on_accepted()
        log.info(
            "delivery %s: %s %s v%s %s -> %s (%d trigger(s))",
            delivery_id,
            event.event,
            event.model,
            event.version,
            event.alias or event.tag_key or "",
            result.outcome,
            len(result.row_ids),
        )
        return 200, {"accepted": True, "outcome": result.outcome, "triggers": len(result.row_ids)}

    def healthy(self) -> bool:
        try:
            with self.outbox.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"
    server_version = "mlflow-ext-bridge"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without this a keep-alive client waits for the
        # delayed ACK (about 40 ms) on every delivery.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            ok = self.server.healthy()
            self._answer(200 if ok else 503, {"status": "ok" if ok else "outbox database unavailable"})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != PATH:
            self._answer(404, {"error": "not found"})
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._answer(411, {"error": "Content-Length required"})
            return
        if int(length) > MAX_BODY:
            self.close_connection = True
            self._answer(413, {"error": "body too large"})
            return
        body = self.rfile.read(int(length))
        try:
            status, payload = self.server.handle_delivery(self.headers, body)
        except Exception:
            log.exception("cannot record a delivery")
            status, payload = 503, {"error": "outbox unavailable"}
        self._answer(status, payload)


def serve_in_thread(receiver: Receiver) -> threading.Thread:
    thread = threading.Thread(target=receiver.serve_forever, name="bridge-receiver", daemon=True)
    thread.start()
    return thread
