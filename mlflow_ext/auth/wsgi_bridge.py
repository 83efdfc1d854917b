"""MLflow's Flask app behind its FastAPI app, with one thread hop per request.

MLflow mounts its Flask app at ``/`` through ``_EfficientWSGIMiddleware``, Starlette's WSGI bridge: the
Flask call runs in a worker thread, and every message of the answer (the start, each chunk, the end) is
handed back to the event loop one at a time, each a blocking call into the loop from the thread, through
a memory stream and a task group. For a tracking call such as log-metric those hand-overs cost about a
quarter of the server's time.

``WsgiBridge`` runs the Flask call in a worker thread the same way, with the same WSGI environ (Starlette's
``build_environ``) and the same context, but keeps the answer in the thread while it is small: the status,
the headers and the body up to ``BUFFER_LIMIT`` come back to the loop once, when the call returns. An
answer that outgrows the limit (an artifact download, say) is streamed from then on, each chunk handed to
the loop as Starlette does. The ASGI messages are the ones Starlette sends: the same status and headers
(lower-cased names, stripped values), the same body bytes; an ``exc_info`` given to ``start_response`` is
raised once the answer is sent, as there. Unlike Starlette, the answer's iterable is closed (PEP 3333).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from mlflow_ext.auth.asgi import ASGIApp, Scope

_logger = logging.getLogger(__name__)

# An answer kept in the worker thread until it is complete; past this size it is streamed.
BUFFER_LIMIT = 1 << 20

Message = dict[str, Any]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Answer:
    """What the WSGI call answered, collected in the worker thread."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.streaming = False
        self.exc_info: Any = None

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        self.exc_info = exc_info
        if self.start is None:
            code, _ = status.split(" ", 1)
            self.start = {
                "type": "http.response.start",
                "status": int(code),
                "headers": [
                    (name.strip().encode("ascii").lower(), value.strip().encode("ascii"))
                    for name, value in headers
                ],
            }

    def _to_loop(self, message: Message) -> None:
        import anyio.from_thread

        anyio.from_thread.run(self.send, message)

    def add(self, chunk: bytes) -> None:
        if self.streaming:
            self._to_loop({"type": "http.response.body", "body": chunk, "more_body": True})
            return
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.size > BUFFER_LIMIT and self.start is not None:
            self.streaming = True
            self._to_loop(self.start)
            body, self.chunks = b"".join(self.chunks), []
            self._to_loop({"type": "http.response.body", "body": body, "more_body": True})

    def run(self, app: WSGIApp, environ: dict[str, Any]) -> None:
        iterable = app(environ, self.start_response)
        try:
            for chunk in iterable:
                self.add(chunk)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        if self.streaming:
            self._to_loop({"type": "http.response.body", "body": b""})


class WsgiBridge:
    """ASGI app serving a WSGI app, its answer handed to the loop once unless it is large."""

    def __init__(self, app: WSGIApp, fallback: ASGIApp) -> None:
        self.app = app
        self.fallback = fallback  # MLflow's bridge, for what is not HTTP (it refuses WebSockets cleanly)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        import anyio.to_thread
        from starlette.middleware.wsgi import build_environ

        chunks: list[bytes] = []
        more_body = True
        while more_body:
            message = await receive()
            if chunk := message.get("body", b""):
                chunks.append(chunk)
            more_body = message.get("more_body", False)
        environ = build_environ(scope, b"".join(chunks))
        del chunks
        answer = _Answer(send)
        await anyio.to_thread.run_sync(answer.run, self.app, environ)
        if not answer.streaming:
            if answer.start is None:
                raise RuntimeError("the WSGI app returned without calling start_response")
            await send(answer.start)
            await send({"type": "http.response.body", "body": b"".join(answer.chunks)})
        if answer.exc_info is not None:
            raise answer.exc_info[0].with_traceback(answer.exc_info[1], answer.exc_info[2])


def install(served: Any, flask_app: WSGIApp) -> bool:
    """Put ``WsgiBridge`` in place of MLflow's bridge on the mount that serves ``flask_app``; False if
    no such mount is found (MLflow's bridge then serves as before)."""
    from starlette.routing import Mount

    mounts = [
        route
        for route in served.router.routes
        if isinstance(route, Mount)
        and route.app is getattr(route, "_base_app", None)  # no middleware of the mount's own around it
        and getattr(route.app, "app", None) is flask_app
        and not isinstance(route.app, WsgiBridge)
    ]
    if len(mounts) != 1:
        _logger.warning("MLflow's Flask mount not found once; its WSGI bridge serves unchanged")
        return False
    mount = mounts[0]
    bridge = WsgiBridge(flask_app, fallback=mount.app)
    mount.app = bridge
    mount._base_app = bridge
    return True
