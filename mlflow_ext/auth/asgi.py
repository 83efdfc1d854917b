"""A pure-ASGI front for MLflow's FastAPI permission middleware.

MLflow guards the routes FastAPI serves itself (gateway, OTel traces, jobs, native artifact routes) with
``fastapi_permission_middleware``, a ``BaseHTTPMiddleware`` that every request goes through, including
the tracking calls it hands straight on to Flask (whose ``before_request`` hook authenticates and
authorizes them). For those, the middleware only decides "not mine" and calls the next app. But that
decision costs a task group, memory streams and, with ``MLFLOW_BASIC_AUTH_FAIL_CLOSED``, matching the
request against every native FastAPI route: about as much as the whole authentication.

``PermissionFront`` takes the middleware's place. For a path that is a fixed Flask rule (no path
parameters, so the set is small and bounded) it asks MLflow's own functions once per path and method
whether the middleware would just pass the request on. If so, it calls the next app directly. Any
other request goes through MLflow's middleware unchanged: no decision is made here that MLflow would
not make, and the Flask hook still authenticates and authorizes every request it passes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from mlflow_ext import mlflow_internals

_logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
PERMISSION_MIDDLEWARE = "fastapi_permission_middleware"


def passes_to_flask(native_routes: list[Any], scope: Scope) -> bool:
    """True when MLflow's permission middleware would only call the next app for this request.

    Mirrors the first steps of ``fastapi_permission_middleware`` (same functions, same order): an
    unprotected route, or a route with no FastAPI validator that the fail-closed net lets through.
    """
    path, method = scope["path"], scope["method"]
    if mlflow_internals.is_unprotected_route(path):
        return True
    if mlflow_internals.fastapi_validator(path, method) is not None:
        return False
    fail_closed = mlflow_internals.basic_auth_fail_closed()
    return not (
        fail_closed
        and mlflow_internals.matches_native_fastapi_route(native_routes, scope)
        and not any(marker in path for marker in mlflow_internals.ungated_fastapi_route_markers())
    )


class PermissionFront:
    """ASGI middleware: MLflow's permission middleware, skipped where it would only pass the call on."""

    def __init__(
        self,
        app: ASGIApp,
        guarded: Callable[[ASGIApp], ASGIApp],
        flask_paths: Iterable[str],
        decide: Callable[[Scope], bool],
    ) -> None:
        self.app = app
        self.guarded = guarded(app)
        self.flask_paths = frozenset(flask_paths)
        self.decide = decide
        # (path, method) -> decision; bounded by the fixed Flask rules times the HTTP methods.
        self.decisions: dict[tuple[str, str], bool] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope.get("path")
            if path in self.flask_paths:
                key = (path, scope["method"])
                passes = self.decisions.get(key)
                if passes is None:
                    passes = self.decisions[key] = bool(self.decide(scope))
                if passes:
                    await self.app(scope, receive, send)
                    return
        await self.guarded(scope, receive, send)


def fixed_flask_paths(flask_app: Any) -> list[str]:
    """The rules of the Flask app without path parameters (``/api/2.0/mlflow/runs/log-metric``)."""
    return [rule.rule for rule in flask_app.url_map.iter_rules() if not rule.arguments]


def install(served: Any, flask_app: Any) -> bool:
    """Put ``PermissionFront`` in place of MLflow's permission middleware; False if it is not found."""
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    middleware = getattr(served, "user_middleware", None)
    if middleware is None or getattr(served, "middleware_stack", None) is not None:
        return False
    found = [
        index
        for index, entry in enumerate(middleware)
        if entry.cls is BaseHTTPMiddleware
        and getattr(entry.kwargs.get("dispatch"), "__name__", "") == PERMISSION_MIDDLEWARE
    ]
    if len(found) != 1:
        _logger.warning("MLflow's FastAPI permission middleware not found once; serving it unchanged")
        return False
    index = found[0]
    dispatch = middleware[index].kwargs["dispatch"]
    native_routes = mlflow_internals.native_fastapi_routes(served)

    def guarded(app: ASGIApp) -> ASGIApp:
        return BaseHTTPMiddleware(app, dispatch=dispatch)

    def decide(scope: Scope) -> bool:
        return passes_to_flask(native_routes, scope)

    middleware[index] = Middleware(
        PermissionFront,
        guarded=guarded,
        flask_paths=fixed_flask_paths(flask_app),
        decide=decide,
    )
    return True
