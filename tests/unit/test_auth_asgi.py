"""The per-request fast paths: the ASGI fronts of MLflow's permission, workspace and gateway-timing
middlewares, the generation read."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from mlflow_ext import mlflow_internals
from mlflow_ext.auth import asgi, store


def _scope(path: str, method: str = "POST", kind: str = "http") -> dict:
    return {"type": kind, "path": path, "method": method}


class _Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    async def __call__(self, scope, receive, send) -> None:
        self.calls.append(f"{self.name} {scope.get('method', '')} {scope['path']}")


def _front(decisions: dict[tuple[str, str], bool]) -> tuple[asgi.PermissionFront, list[str], list[str]]:
    calls: list[str] = []
    asked: list[str] = []

    def decide(scope) -> bool:
        asked.append(f"{scope['method']} {scope['path']}")
        return decisions[(scope["path"], scope["method"])]

    front = asgi.PermissionFront(
        _Recorder("app", calls),
        guarded=lambda app: _Recorder("mlflow-middleware", calls),
        flask_paths=["/api/2.0/mlflow/runs/log-metric", "/api/2.0/mlflow/gateway-ish"],
        decide=decide,
    )
    return front, calls, asked


def _run(front, scope) -> None:
    asyncio.run(front(scope, None, None))


def test_flask_routes_mlflow_would_pass_on_skip_its_middleware_and_are_decided_once():
    front, calls, asked = _front({("/api/2.0/mlflow/runs/log-metric", "POST"): True})
    for _ in range(3):
        _run(front, _scope("/api/2.0/mlflow/runs/log-metric"))
    assert calls == ["app POST /api/2.0/mlflow/runs/log-metric"] * 3
    assert asked == ["POST /api/2.0/mlflow/runs/log-metric"]


def test_everything_else_goes_through_mlflows_middleware():
    front, calls, asked = _front({("/api/2.0/mlflow/gateway-ish", "POST"): False})
    _run(front, _scope("/api/2.0/mlflow/gateway-ish"))  # MLflow's middleware has a say
    _run(front, _scope("/gateway/chat/invocations"))  # not a fixed Flask rule: never decided here
    _run(front, _scope("/api/2.0/mlflow-artifacts/artifacts/a/b", "PUT"))
    _run(front, _scope("/api/2.0/mlflow/runs/log-metric", kind="websocket"))
    assert calls == [
        "mlflow-middleware POST /api/2.0/mlflow/gateway-ish",
        "mlflow-middleware POST /gateway/chat/invocations",
        "mlflow-middleware PUT /api/2.0/mlflow-artifacts/artifacts/a/b",
        "mlflow-middleware POST /api/2.0/mlflow/runs/log-metric",
    ]
    assert asked == ["POST /api/2.0/mlflow/gateway-ish"]


def _dispatch_front(around) -> tuple[asgi.DispatchFront, list[str]]:
    calls: list[str] = []
    front = asgi.DispatchFront(
        _Recorder("app", calls),
        guarded=lambda app: _Recorder("mlflow-dispatcher", calls),
        flask_paths=["/api/2.0/mlflow/runs/log-metric"],
        around=around,
    )
    return front, calls


def test_a_dispatcher_s_work_is_done_around_a_plain_call_on_fixed_flask_paths():
    events: list[str] = []

    @contextlib.contextmanager
    def around_call():
        events.append("before")
        yield
        events.append("after")

    front, calls = _dispatch_front(lambda scope: around_call())
    _run(front, _scope("/api/2.0/mlflow/runs/log-metric"))
    assert calls == ["app POST /api/2.0/mlflow/runs/log-metric"]
    assert events == ["before", "after"]


def test_the_dispatcher_itself_runs_when_it_has_a_say_or_the_path_is_not_a_fixed_flask_rule():
    asked: list[str] = []

    def around(scope):
        asked.append(scope["path"])
        return None  # e.g. a workspace that cannot be resolved: MLflow's dispatcher answers

    front, calls = _dispatch_front(around)
    _run(front, _scope("/api/2.0/mlflow/runs/log-metric"))
    _run(front, _scope("/gateway/chat/invocations"))
    _run(front, _scope("/api/2.0/mlflow/runs/log-metric", kind="websocket"))
    assert calls == [
        "mlflow-dispatcher POST /api/2.0/mlflow/runs/log-metric",
        "mlflow-dispatcher POST /gateway/chat/invocations",
        "mlflow-dispatcher POST /api/2.0/mlflow/runs/log-metric",
    ]
    assert asked == ["/api/2.0/mlflow/runs/log-metric"]


def test_the_workspace_is_bound_for_the_call_and_cleared_after_as_mlflow_does(monkeypatch):
    from mlflow.utils import workspace_context

    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES", raising=False)
    seen: list[tuple[bool, str | None]] = []

    async def app(scope, receive, send) -> None:
        seen.append(
            (workspace_context.is_request_workspace_resolved(), workspace_context.get_request_workspace())
        )

    front = asgi.DispatchFront(
        app,
        guarded=lambda inner: inner,
        flask_paths=["/api/2.0/mlflow/runs/log-metric"],
        around=asgi.workspace_around,
    )
    _run(front, {**_scope("/api/2.0/mlflow/runs/log-metric"), "headers": []})
    assert seen == [(True, None)]
    assert not workspace_context.is_request_workspace_resolved()


def test_a_workspace_header_while_workspaces_are_off_is_left_to_mlflow_s_dispatcher(monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES", raising=False)
    header = mlflow_internals.workspace_header_name().lower().encode()
    scope = {**_scope("/api/2.0/mlflow/runs/log-metric"), "headers": [(header, b"team-a")]}
    assert asgi.workspace_around(scope) is None
    assert asgi.workspace_around({**scope, "headers": [(header, b"  ")]}) is not None


def test_only_the_gateway_s_paths_are_left_to_the_timing_dispatcher():
    around = asgi.gateway_timing_around("/gateway/")
    assert around(_scope("/gateway/chat/mlflow/invocations")) is None
    assert around(_scope("/api/2.0/mlflow/runs/log-metric")) is not None


def test_install_puts_the_fronts_in_place_of_mlflow_s_dispatchers(monkeypatch):
    from fastapi import FastAPI
    from flask import Flask
    from starlette.middleware.base import BaseHTTPMiddleware

    served = FastAPI()
    names = (asgi.WORKSPACE_MIDDLEWARE, asgi.GATEWAY_TIMING_MIDDLEWARE, asgi.PERMISSION_MIDDLEWARE, "other")
    for name in names:

        async def dispatch(request, call_next):
            return await call_next(request)

        dispatch.__name__ = name
        served.add_middleware(BaseHTTPMiddleware, dispatch=dispatch)
    flask_app = Flask(__name__)
    flask_app.add_url_rule("/api/2.0/mlflow/runs/log-metric", "log_metric", lambda: "", methods=["POST"])
    monkeypatch.setattr(mlflow_internals, "native_fastapi_routes", lambda app: [])
    assert asgi.install(served, flask_app)
    kinds = [entry.cls.__name__ for entry in served.user_middleware]
    # Starlette keeps the last added first.
    assert kinds == ["BaseHTTPMiddleware", "PermissionFront", "DispatchFront", "DispatchFront"]
    fronts = [entry for entry in served.user_middleware if entry.cls is asgi.DispatchFront]
    assert [f.kwargs["around"] is asgi.workspace_around for f in fronts] == [False, True]
    assert all(f.kwargs["flask_paths"] == ["/api/2.0/mlflow/runs/log-metric"] for f in fronts)
    # Behind every front, MLflow's dispatch, streamed on uploads.
    permission = next(entry for entry in served.user_middleware if entry.cls is asgi.PermissionFront)
    for entry in [permission, *fronts]:
        behind = entry.kwargs["guarded"](_Recorder("app", []))
        assert isinstance(behind, asgi.StreamFront) and behind.streamed is asgi.streams_upload


def _upload_scope(path: str = "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/m.bin", method: str = "PUT"):
    return {**_scope(path, method), "headers": [], "query_string": b""}


def test_uploads_to_mlflow_s_native_route_are_streamed_unless_mlflow_reads_their_body(monkeypatch):
    assert asgi.streams_upload(_upload_scope())
    assert asgi.streams_upload(_upload_scope("/ajax-api/2.0/mlflow-artifacts/artifacts/1/m.bin"))
    assert not asgi.streams_upload(_upload_scope(method="GET"))  # downloads stream their answer: not here
    assert not asgi.streams_upload(_upload_scope("/api/2.0/mlflow/runs/log-metric"))
    monkeypatch.setattr(mlflow_internals, "fastapi_after_request_handler", lambda path, method: print)
    assert not asgi.streams_upload(_upload_scope())


class _Client:
    """An ASGI server's side of one request: the body in chunks, and what was sent back."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.sent: list[dict] = []
        self.answered: asyncio.Event | None = None

    async def receive(self) -> dict:
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}
        self.answered = self.answered or asyncio.Event()
        await self.answered.wait()  # as uvicorn: nothing more until the client goes
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.answered = self.answered or asyncio.Event()
            self.answered.set()


def _upload_route(received: list[bytes], seen: list):
    async def route(scope, receive, send) -> None:
        seen.append(receive)
        more = True
        while more:
            message = await receive()
            received.append(message["body"])
            more = message["more_body"]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-route", b"1")]})
        await send({"type": "http.response.body", "body": b"stored"})

    return route


def test_a_streamed_dispatch_hands_the_route_the_request_s_own_receive_and_gets_its_answer():
    received: list[bytes] = []
    seen: list = []
    answers: list = []

    async def dispatch(request, call_next):
        response = await call_next(request)
        answers.append((response.status_code, response.headers["x-route"]))
        response.headers["x-dispatch"] = "1"
        return response

    client = _Client([b"a" * 70_000, b"b", b"c" * 10])
    front = asgi.StreamFront(_upload_route(received, seen), dispatch, asgi.streams_upload)
    asyncio.run(front(_upload_scope(), client.receive, client.send))
    assert seen == [client.receive]  # no wrapping per chunk
    assert received == [b"a" * 70_000, b"b", b"c" * 10]
    assert answers == [(200, "1")]
    start, *body = client.sent
    assert start["status"] == 200
    assert (b"x-route", b"1") in start["headers"] and (b"x-dispatch", b"1") in start["headers"]
    assert b"".join(message.get("body", b"") for message in body) == b"stored"


def test_a_dispatch_that_refuses_answers_and_the_route_never_runs():
    from starlette.responses import PlainTextResponse

    received: list[bytes] = []

    async def dispatch(request, call_next):
        return PlainTextResponse("Permission denied", status_code=403)

    client = _Client([b"body"])
    front = asgi.StreamFront(_upload_route(received, []), dispatch, asgi.streams_upload)
    asyncio.run(front(_upload_scope(), client.receive, client.send))
    assert received == []
    assert client.sent[0]["status"] == 403
    assert client.sent[1]["body"] == b"Permission denied"


def test_a_dispatch_that_reads_the_body_fails_before_the_route_runs():
    received: list[bytes] = []

    async def dispatch(request, call_next):
        await request.body()
        return await call_next(request)

    client = _Client([b"body"])
    front = asgi.StreamFront(_upload_route(received, []), dispatch, asgi.streams_upload)
    with pytest.raises(RuntimeError, match="must not read it"):
        asyncio.run(front(_upload_scope(), client.receive, client.send))
    assert received == [] and client.sent == [] and client.chunks == [b"body"]


def test_other_requests_go_through_base_http_middleware():
    received: list[bytes] = []
    seen: list = []

    async def dispatch(request, call_next):
        return await call_next(request)

    client = _Client([b"body"])
    front = asgi.StreamFront(_upload_route(received, seen), dispatch, lambda scope: False)
    asyncio.run(front(_upload_scope(), client.receive, client.send))
    assert received == [b"body"]
    assert seen != [client.receive]  # Starlette's wrapped receive


class _FakeAuth:
    """What ``passes_to_flask`` asks of MLflow (through mlflow_internals), with chosen answers."""

    def __init__(self, unprotected=False, validator=None, fail_closed=True, native=False, markers=()):
        self.answers = {
            "is_unprotected_route": lambda path: unprotected,
            "fastapi_validator": lambda path, method: validator,
            "basic_auth_fail_closed": lambda: fail_closed,
            "matches_native_fastapi_route": lambda routes, scope: native,
            "ungated_fastapi_route_markers": lambda: markers,
        }

    def install(self, monkeypatch) -> None:
        for name, answer in self.answers.items():
            monkeypatch.setattr(mlflow_internals, name, answer)


@pytest.mark.parametrize(
    ("auth", "passes"),
    [
        (_FakeAuth(unprotected=True, validator=object()), True),
        (_FakeAuth(), True),  # no FastAPI validator, not a native route: Flask decides
        (_FakeAuth(validator=object()), False),  # MLflow's middleware authorizes it
        (_FakeAuth(native=True), False),  # the fail-closed net refuses it
        (_FakeAuth(native=True, fail_closed=False), True),
        (_FakeAuth(native=True, markers=("/log-metric",)), True),
    ],
)
def test_the_decision_is_mlflows_middleware_s(auth, passes, monkeypatch):
    auth.install(monkeypatch)
    assert asgi.passes_to_flask([], _scope("/api/2.0/mlflow/runs/log-metric")) is passes


@pytest.fixture
def ext(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    store.migrate(engine)
    assert store.generation_engine(engine) is engine  # a dedicated pool only for PostgreSQL
    yield store.ExtStore(engine)
    engine.dispose()


def _dropped(invalidated: bool) -> OperationalError:
    error = OperationalError("SELECT generation", {}, Exception("server closed the connection"))
    error.connection_invalidated = invalidated
    return error


def test_a_connection_dropped_while_idle_is_read_again_once(ext, monkeypatch):
    read = ext._read_generation
    outcomes: list = [_dropped(True)]

    def flaky():
        if outcomes:
            raise outcomes.pop()
        return read()

    monkeypatch.setattr(ext, "_read_generation", flaky)
    assert ext.generation() == 0


@pytest.mark.parametrize("first_invalidated", [True, False])
def test_a_generation_that_cannot_be_read_refuses_the_request(ext, monkeypatch, first_invalidated):
    failures = [_dropped(False), _dropped(first_invalidated)]

    def failing():
        raise failures.pop()

    monkeypatch.setattr(ext, "_read_generation", failing)
    with pytest.raises(OperationalError):
        ext.generation()
