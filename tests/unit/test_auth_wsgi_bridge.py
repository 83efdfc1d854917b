"""The WSGI bridge in front of MLflow's Flask app: MLflow's bridge's answers, with one thread hop."""

from __future__ import annotations

import asyncio
import contextvars
import json
import sys

import pytest
from flask import Flask, Response, jsonify, request
from mlflow.server.fastapi_app import _EfficientWSGIMiddleware

from mlflow_ext.auth import wsgi_bridge

WORKSPACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("workspace", default=None)
CHUNK = 64 * 1024


def _flask() -> Flask:
    app = Flask("bridged")

    @app.post("/api/2.0/mlflow/runs/log-metric")
    def log_metric():
        return jsonify(
            {
                "got": request.get_json(),
                "query": request.args.get("q"),
                "workspace": WORKSPACE.get(),
                "remote": request.remote_addr,
                "host": request.host,
            }
        )

    @app.get("/big")
    def big():
        chunks = int(request.args["chunks"])
        return Response((bytes([65 + i % 26]) * CHUNK for i in range(chunks)), mimetype="text/plain")

    @app.get("/cookies")
    def cookies():
        response = Response("two cookies", status=201)
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    @app.get("/fails")
    def fails():
        raise ValueError("boom")

    return app


def _scope(method: str, path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None):
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"mlflow.example"), *(headers or [])],
        "client": ("10.0.0.7", 5123),
        "server": ("127.0.0.1", 5000),
    }


def _serve(app, scope, body: bytes = b"", pieces: int = 1) -> list[dict]:
    """Call the ASGI app with ``body`` in ``pieces`` messages, under a workspace bound by the caller."""
    sent: list[dict] = []
    size = max(1, -(-len(body) // pieces))
    messages = [
        {"type": "http.request", "body": body[i : i + size], "more_body": i + size < len(body)}
        for i in range(0, max(len(body), 1), size)
    ]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def call():
        WORKSPACE.set("team-a")
        await app(scope, receive, send)

    asyncio.run(call())
    return sent


def _answer(sent: list[dict]) -> tuple[int, list, bytes]:
    start, bodies = sent[0], sent[1:]
    assert start["type"] == "http.response.start"
    assert all(m["type"] == "http.response.body" for m in bodies)
    assert all(m.get("more_body") for m in bodies[:-1]) and not bodies[-1].get("more_body")
    return start["status"], start["headers"], b"".join(m["body"] for m in bodies)


@pytest.fixture
def bridges():
    flask_app = _flask()
    mlflows = _EfficientWSGIMiddleware(flask_app)
    return mlflows, wsgi_bridge.WsgiBridge(flask_app, fallback=mlflows)


CASES = [
    (
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        b"q=1",
        json.dumps({"run_id": "r", "value": 1.5}).encode(),
        3,
    ),
    ("GET", "/cookies", b"", b"", 1),
    ("GET", "/big", b"chunks=3", b"", 1),
    ("GET", "/big", b"chunks=40", b"", 1),  # past the buffer limit: streamed
    ("GET", "/fails", b"", b"", 1),
    ("GET", "/missing", b"", b"", 1),
    ("PUT", "/api/2.0/mlflow/runs/log-metric", b"", b"{}", 1),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "pieces"), CASES)
def test_the_answer_is_the_one_mlflows_bridge_gives(bridges, method, path, query, body, pieces):
    mlflows, ours = bridges
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = _scope(method, path, query, headers if body else None)
    assert _answer(_serve(ours, dict(scope), body, pieces)) == _answer(
        _serve(mlflows, dict(scope), body, pieces)
    )


def test_the_request_reaches_flask_whole_with_the_callers_context(bridges):
    _, ours = bridges
    body = json.dumps({"run_id": "r" * 300_000}).encode()  # several receive messages
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = _scope("POST", "/api/2.0/mlflow/runs/log-metric", b"q=x", headers)
    status, _, answer = _answer(_serve(ours, scope, body, pieces=7))
    got = json.loads(answer)
    assert status == 200
    assert got["got"] == {"run_id": "r" * 300_000}
    assert (got["query"], got["workspace"], got["remote"], got["host"]) == (
        "x",
        "team-a",
        "10.0.0.7",
        "mlflow.example",
    )


def test_a_small_answer_is_sent_in_one_body_message(bridges):
    _, ours = bridges
    sent = _serve(ours, _scope("GET", "/big", b"chunks=3"))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_a_large_answer_is_streamed_not_held_whole(bridges):
    _, ours = bridges
    chunks = 40
    sent = _serve(ours, _scope("GET", "/big", b"chunks=40"))
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    held = wsgi_bridge.BUFFER_LIMIT // CHUNK + 1  # chunks kept until the answer outgrew the limit
    assert [len(m["body"]) for m in bodies] == [held * CHUNK] + [CHUNK] * (chunks - held) + [0]


def test_the_iterable_is_closed_and_exc_info_is_raised_after_the_answer():
    closed: list[bool] = []

    class Body(list):
        def close(self):
            closed.append(True)

    def wsgi_app(environ, start_response):
        try:
            raise KeyError("late failure")
        except KeyError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return Body([b"failed"])

    bridge = wsgi_bridge.WsgiBridge(wsgi_app, fallback=_EfficientWSGIMiddleware(wsgi_app))
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    with pytest.raises(KeyError, match="late failure"):
        asyncio.run(bridge(_scope("GET", "/x"), receive, send))
    assert closed == [True]
    assert _answer(sent)[::2] == (500, b"failed")


def test_a_websocket_goes_to_mlflows_bridge(bridges):
    _, ours = bridges
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(ours({"type": "websocket", "path": "/ws"}, None, send))
    assert sent == [{"type": "websocket.close", "code": 1000}]


def test_install_replaces_mlflows_bridge_on_the_flask_mount_only():
    from fastapi import FastAPI

    flask_app = _flask()
    served = FastAPI()

    @served.get("/native")
    def native():
        return {"native": True}

    served.mount("/", _EfficientWSGIMiddleware(flask_app))
    assert wsgi_bridge.install(served, flask_app)
    mount = served.router.routes[-1]
    assert isinstance(mount.app, wsgi_bridge.WsgiBridge) and mount.app.app is flask_app
    assert not wsgi_bridge.install(served, flask_app)  # already replaced: nothing of MLflow's left to replace

    assert json.loads(_answer(_serve(served, _scope("GET", "/native")))[2]) == {"native": True}
    body = b'{"a": 1}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"8")]
    answer = _answer(_serve(served, _scope("POST", "/api/2.0/mlflow/runs/log-metric", b"", headers), body))
    assert json.loads(answer[2])["got"] == {"a": 1}
