"""The per-request fast paths: the ASGI front of MLflow's permission middleware, the generation read."""

from __future__ import annotations

import asyncio

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
