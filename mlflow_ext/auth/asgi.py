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

MLflow's FastAPI app has two more ``BaseHTTPMiddleware`` dispatchers that every request goes through:
``workspace_context_middleware`` binds the request's workspace (None while workspaces are off) around
the call, and ``gateway_timing_middleware`` times the gateway's routes and only calls the next app for
any other. Together they cost about a fifth of a log-metric request in the server. ``DispatchFront``
takes each one's place and, on the fixed Flask paths, does what the dispatcher does around a plain call
of the next app, with MLflow's own functions: the same workspace resolved from the same path and header,
bound before and cleared after; the gateway's prefix computed as MLflow computes it. When the workspace
cannot be resolved, or the path is the gateway's, MLflow's dispatcher runs as before and answers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from mlflow_ext import mlflow_internals
from mlflow_ext.errors import MlflowInternalMissing

_logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
PERMISSION_MIDDLEWARE = "fastapi_permission_middleware"
WORKSPACE_MIDDLEWARE = "workspace_context_middleware"
GATEWAY_TIMING_MIDDLEWARE = "gateway_timing_middleware"
# What a dispatcher does around the next app for a request, or None when the dispatcher itself must run.
Around = Callable[[Scope], AbstractContextManager[Any] | None]


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


class DispatchFront:
    """ASGI middleware: one of MLflow's ``BaseHTTPMiddleware`` dispatchers, done around a plain call of the
    next app on the fixed Flask paths (``around``), and run as it is everywhere else."""

    def __init__(
        self, app: ASGIApp, guarded: Callable[[ASGIApp], ASGIApp], flask_paths: Iterable[str], around: Around
    ) -> None:
        self.app = app
        self.guarded = guarded(app)
        self.flask_paths = frozenset(flask_paths)
        self.around = around

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") in self.flask_paths:
            context = self.around(scope)
            if context is not None:
                with context:
                    await self.app(scope, receive, send)
                return
        await self.guarded(scope, receive, send)


@contextlib.contextmanager
def _bound_workspace(workspace: str | None) -> Iterator[None]:
    mlflow_internals.set_request_workspace(workspace)
    try:
        yield
    finally:
        mlflow_internals.clear_request_workspace()


def workspace_around(scope: Scope) -> AbstractContextManager[None] | None:
    """``workspace_context_middleware``'s work: the workspace MLflow resolves for the request's path and
    workspace header, bound for the call and cleared after. None when resolving fails: MLflow's
    dispatcher then resolves it again and answers the error as it does."""
    from starlette.datastructures import Headers

    header = Headers(scope=scope).get(mlflow_internals.workspace_header_name())
    try:
        workspace = mlflow_internals.request_workspace(scope["path"], header)
    except Exception:
        return None
    return _bound_workspace(workspace)


def gateway_timing_around(prefix: str) -> Around:
    """``gateway_timing_middleware``'s work: nothing around the call, except for the gateway's paths."""

    def around(scope: Scope) -> AbstractContextManager[None] | None:
        return None if scope["path"].startswith(prefix) else contextlib.nullcontext()

    return around


def fixed_flask_paths(flask_app: Any) -> list[str]:
    """The rules of the Flask app without path parameters (``/api/2.0/mlflow/runs/log-metric``)."""
    return [rule.rule for rule in flask_app.url_map.iter_rules() if not rule.arguments]


def _dispatchers(middleware: list[Any], name: str) -> list[int]:
    """Where MLflow's ``BaseHTTPMiddleware`` with the dispatch function ``name`` sits in the list."""
    from starlette.middleware.base import BaseHTTPMiddleware

    return [
        index
        for index, entry in enumerate(middleware)
        if entry.cls is BaseHTTPMiddleware and getattr(entry.kwargs.get("dispatch"), "__name__", "") == name
    ]


def _guarded(dispatch: Any) -> Callable[[ASGIApp], ASGIApp]:
    from starlette.middleware.base import BaseHTTPMiddleware

    def guarded(app: ASGIApp) -> ASGIApp:
        return BaseHTTPMiddleware(app, dispatch=dispatch)

    return guarded


def _install_dispatch_fronts(middleware: list[Any], flask_paths: list[str]) -> list[str]:
    """``DispatchFront`` in place of MLflow's workspace and gateway-timing dispatchers; the names replaced."""
    from starlette.middleware import Middleware

    try:
        arounds = {
            WORKSPACE_MIDDLEWARE: workspace_around,
            GATEWAY_TIMING_MIDDLEWARE: gateway_timing_around(mlflow_internals.gateway_path_prefix()),
        }
        mlflow_internals.workspace_header_name()
    except MlflowInternalMissing as exc:
        _logger.warning("MLflow's FastAPI dispatchers are served unchanged: %s", exc)
        return []
    replaced = []
    for name, around in arounds.items():
        found = _dispatchers(middleware, name)
        if len(found) != 1:
            _logger.warning("MLflow's FastAPI middleware %s not found once; serving it unchanged", name)
            continue
        dispatch = middleware[found[0]].kwargs["dispatch"]
        middleware[found[0]] = Middleware(
            DispatchFront, guarded=_guarded(dispatch), flask_paths=flask_paths, around=around
        )
        replaced.append(name)
    return replaced


def install(served: Any, flask_app: Any) -> bool:
    """Put ``PermissionFront`` in place of MLflow's permission middleware, and ``DispatchFront`` in place
    of its workspace and gateway-timing dispatchers; False if the permission middleware is not found."""
    from starlette.middleware import Middleware

    middleware = getattr(served, "user_middleware", None)
    if middleware is None or getattr(served, "middleware_stack", None) is not None:
        return False
    flask_paths = fixed_flask_paths(flask_app)
    _install_dispatch_fronts(middleware, flask_paths)
    found = _dispatchers(middleware, PERMISSION_MIDDLEWARE)
    if len(found) != 1:
        _logger.warning("MLflow's FastAPI permission middleware not found once; serving it unchanged")
        return False
    index = found[0]
    dispatch = middleware[index].kwargs["dispatch"]
    native_routes = mlflow_internals.native_fastapi_routes(served)

    def decide(scope: Scope) -> bool:
        return passes_to_flask(native_routes, scope)

    middleware[index] = Middleware(
        PermissionFront,
        guarded=_guarded(dispatch),
        flask_paths=flask_paths,
        decide=decide,
    )
    return True
