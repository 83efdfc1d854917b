"""The webhook receiver: authenticate, parse, route, write to the outbox, and only then answer 2xx.

``POST /webhook``: 401 for a missing or wrong signature or a stale timestamp, 409 for a delivery id seen
before (a replay), 400/422 for a body that is not an MLflow event, 413 for a body over 1 MiB, 503 when
the outbox cannot be written (MLflow retries with the same delivery id, which was not recorded). ``GET
/health`` answers 200 when the outbox database answers; ``GET /metrics`` gives the bridge's Prometheus
metrics (``metrics``). Any other path is 404, another method on these paths 405.

A bare ASGI app served by uvicorn (httptools and uvloop when installed) on an event loop in a thread of
its own. The outbox is synchronous SQLAlchemy: each delivery's verification and write, and each health
probe, run in worker threads, at most ``workers`` writes and ``HEALTH_WORKERS`` probes at a time, so a slow
database holds up neither the loop nor the other requests, and more deliveries than the outbox's
connection pool wait on the loop instead of in threads. A body over ``MAX_BODY`` is refused from its
``Content-Length`` alone and the connection closed: none of it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import anyio
import anyio.to_thread
import uvicorn
from sqlalchemy import text
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from mlflow_ext import events
from mlflow_ext.bridge import metrics, signature
from mlflow_ext.bridge.outbox import Outbox
from mlflow_ext.routing import Router

log = logging.getLogger("mlflow_ext.bridge.receiver")

MAX_BODY = 1024 * 1024
PATH = "/webhook"
HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
SERVER_NAME = "mlflow-ext-bridge"
# Deliveries written at once: as many as the outbox engine's pool holds (pool_size 8 + max_overflow 8).
WORKERS = 16
HEALTH_WORKERS = 2
# Open connections and requests in progress; beyond this uvicorn answers 503 at once and MLflow retries.
MAX_CONNECTIONS = 512
# MLflow delivers from a pool of threads per server worker: a burst must not overflow the backlog.
BACKLOG = 128
# On shutdown, requests in progress get this long to be answered; then they are cancelled (their
# deliveries were not acknowledged, so MLflow's retry or the reconcile loop brings them again).
SHUTDOWN_GRACE_S = 5


class Receiver:
    """Bound to its address when built (``server_address`` holds the port); ``serve_forever`` runs it
    until ``shutdown``."""

    def __init__(
        self,
        address: tuple[str, int],
        secret: str,
        max_skew_s: float,
        outbox: Outbox,
        router: Router,
        on_accepted: Callable[[], None] = lambda: None,
        *,
        workers: int = WORKERS,
    ) -> None:
        self.secret = secret
        self.max_skew_s = max_skew_s
        self.outbox = outbox
        self.router = router
        self.on_accepted = on_accepted
        self.workers = workers
        self.socket = _bind(address)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self._server = _Server(
            uvicorn.Config(
                self.app,
                interface="asgi3",
                lifespan="off",
                ws="none",
                log_config=None,
                access_log=False,
                proxy_headers=False,
                server_header=False,
                headers=[("server", SERVER_NAME)],
                backlog=BACKLOG,
                limit_concurrency=MAX_CONNECTIONS,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            )
        )
        self._serving = threading.Event()
        self._stopped = threading.Event()
        # Made on the serving loop.
        self._writes: anyio.CapacityLimiter | None = None
        self._probes: anyio.CapacityLimiter | None = None

    # --- what a delivery and a probe do (in a worker thread) --------------------------------------------

    def handle_delivery(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
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

    # --- the ASGI app ------------------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan, no websockets
            return
        headers = Headers(scope=scope)
        # A body the app does not read must not be read by the server either: answer and close.
        unread = _has_body(headers)
        path, method = scope["path"], scope["method"]
        if path == PATH:
            if method == "POST":
                await self._delivery(headers, receive, send)
            else:
                await _answer(send, 405, {"error": "method not allowed"}, close=unread, allow="POST")
        elif path == HEALTH_PATH:
            if method == "GET":
                assert self._probes is not None
                ok = await anyio.to_thread.run_sync(
                    self.healthy, abandon_on_cancel=True, limiter=self._probes
                )
                await _answer(
                    send,
                    200 if ok else 503,
                    {"status": "ok" if ok else "outbox database unavailable"},
                    close=unread,
                )
            else:
                await _answer(send, 405, {"error": "method not allowed"}, close=unread, allow="GET")
        elif path == METRICS_PATH:
            if method == "GET":
                assert self._probes is not None
                body = await anyio.to_thread.run_sync(
                    metrics.render, self.outbox.counts, abandon_on_cancel=True, limiter=self._probes
                )
                answer_headers = [
                    (b"content-type", metrics.CONTENT_TYPE),
                    (b"content-length", str(len(body)).encode()),
                ]
                if unread:
                    answer_headers.append((b"connection", b"close"))
                await send({"type": "http.response.start", "status": 200, "headers": answer_headers})
                await send({"type": "http.response.body", "body": body})
            else:
                await _answer(send, 405, {"error": "method not allowed"}, close=unread, allow="GET")
        else:
            await _answer(send, 404, {"error": "not found"}, close=unread)

    async def _delivery(self, headers: Headers, receive: Receive, send: Send) -> None:
        length = headers.get("content-length")
        if length is None or not (length.isascii() and length.isdigit()):
            await _answer(send, 411, {"error": "Content-Length required"}, close=True)
            return
        if int(length) > MAX_BODY:
            await _answer(send, 413, {"error": "body too large"}, close=True)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        assert self._writes is not None
        try:
            status, payload = await anyio.to_thread.run_sync(
                self.handle_delivery, headers, body, abandon_on_cancel=True, limiter=self._writes
            )
        except Exception:
            log.exception("cannot record a delivery")
            status, payload = 503, {"error": "outbox unavailable"}
        await _answer(send, status, payload)

    # --- running and stopping --------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve on this thread until ``shutdown``; then requests in progress get ``SHUTDOWN_GRACE_S``."""
        self._serving.set()
        try:
            with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
                runner.run(self._serve())
        finally:
            self._stopped.set()

    async def _serve(self) -> None:
        self._writes = anyio.CapacityLimiter(self.workers)
        self._probes = anyio.CapacityLimiter(HEALTH_WORKERS)
        await self._server.serve(sockets=[self.socket])

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop accepting, let requests in progress finish, and wait for ``serve_forever`` to return
        (True when it did within ``timeout``). Safe from any thread but the serving one."""
        self._server.should_exit = True
        if not self._serving.is_set():
            return True
        return self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process that embeds the receiver owns SIGTERM/SIGINT
    and calls ``Receiver.shutdown``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(address: tuple[str, int]) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    sock.setblocking(False)
    return sock


def _has_body(headers: Headers) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


async def _read_body(receive: Receive) -> bytes | None:
    """The body, ``None`` if the client went away. The HTTP parser stops at ``Content-Length``."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(
    send: Send, status: int, payload: dict[str, Any], *, close: bool = False, allow: str | None = None
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    if allow is not None:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_in_thread(receiver: Receiver) -> threading.Thread:
    receiver._serving.set()  # a shutdown from now on waits for the thread's loop to end
    thread = threading.Thread(target=receiver.serve_forever, name="bridge-receiver", daemon=True)
    thread.start()
    return thread
