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
