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

Uploads to MLflow's native artifact route (``PUT /api/2.0/mlflow-artifacts/artifacts/{path}``) go
through all three dispatchers, and ``BaseHTTPMiddleware`` hands the route every chunk of the body through
a task group of its own, in each of them: for a 256 MiB model, a third of the server's CPU (most of
what the event loop did besides parsing HTTP and cutting parts). ``StreamFront`` runs MLflow's dispatch
function itself there, with a ``call_next`` that calls the next app with the request's own ``receive``
(the body goes straight to the route) and collects its answer, which the dispatch then gets as it gets
it from Starlette: status, headers and body. That holds as long as the dispatch reads no body, which
MLflow's dispatchers only do for an after-request handler (asked of MLflow for each request: none for
uploads); the request the dispatch sees refuses to be read, so a later MLflow that did read it would
fail loudly instead of robbing the route of its body.
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


def streams_upload(scope: Scope) -> bool:
    """True for a request MLflow's native upload route takes, whose body no dispatcher of MLflow reads."""
    path, method = scope["path"], scope["method"]
    return (
        method == "PUT"
        and mlflow_internals.is_native_artifact_path(path, method)
        and mlflow_internals.fastapi_after_request_handler(path, method) is None
    )


async def _no_body() -> Any:
    raise RuntimeError("the request body goes to the artifact route; MLflow's dispatcher must not read it")


async def dispatch_streamed(dispatch: Any, app: ASGIApp, scope: Scope, receive: Any, send: Any) -> None:
    """MLflow's dispatch function, with a ``call_next`` that calls ``app`` with the request's own receive
    and answers what ``app`` sent (status, headers, body), as ``BaseHTTPMiddleware``'s does."""
    from starlette.requests import Request
    from starlette.responses import StreamingResponse

    async def call_next(request: Any) -> Any:
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def collect(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await app(scope, receive, collect)
        if not start:
            raise RuntimeError("No response returned.")  # Starlette's words for the same case

        async def content() -> Any:
            for chunk in body:
                yield chunk

        response = StreamingResponse(content(), status_code=start["status"])
        response.raw_headers = list(start.get("headers", []))
        return response

    response = await dispatch(Request(scope, _no_body), call_next)
    await response(scope, receive, send)


class StreamFront:
    """ASGI middleware: one of MLflow's ``BaseHTTPMiddleware`` dispatch functions, run by
    ``dispatch_streamed`` on uploads to MLflow's native artifact route (``streamed``), and by Starlette's
    ``BaseHTTPMiddleware`` everywhere else."""

    def __init__(self, app: ASGIApp, dispatch: Any, streamed: Callable[[Scope], bool]) -> None:
        from starlette.middleware.base import BaseHTTPMiddleware

        self.app = app
        self.dispatch = dispatch
        self.streamed = streamed
        self.guarded = BaseHTTPMiddleware(app, dispatch=dispatch)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.streamed(scope):
            await dispatch_streamed(self.dispatch, self.app, scope, receive, send)
            return
        await self.guarded(scope, receive, send)


def _guarded(dispatch: Any, streamed: Callable[[Scope], bool] | None) -> Callable[[ASGIApp], ASGIApp]:
    from starlette.middleware.base import BaseHTTPMiddleware

    def guarded(app: ASGIApp) -> ASGIApp:
        if streamed is None:
            return BaseHTTPMiddleware(app, dispatch=dispatch)
        return StreamFront(app, dispatch, streamed)

    return guarded


def _streamed() -> Callable[[Scope], bool] | None:
    """``streams_upload`` if this MLflow has what it asks; None (MLflow's middleware throughout) if not."""
    try:
        mlflow_internals.resolve(mlflow_internals.NATIVE_ARTIFACT_PATH)
        mlflow_internals.resolve(mlflow_internals.FIND_FASTAPI_AFTER_REQUEST_HANDLER)
    except MlflowInternalMissing as exc:
        _logger.warning("Artifact uploads go through MLflow's FastAPI dispatchers unchanged: %s", exc)
        return None
    return streams_upload


def _install_dispatch_fronts(
    middleware: list[Any], flask_paths: list[str], streamed: Callable[[Scope], bool] | None
) -> list[str]:
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
            DispatchFront, guarded=_guarded(dispatch, streamed), flask_paths=flask_paths, around=around
        )
        replaced.append(name)
    return replaced


def install(served: Any, flask_app: Any) -> bool:
    """Put ``PermissionFront`` in place of MLflow's permission middleware, and ``DispatchFront`` in place
    of its workspace and gateway-timing dispatchers, each with MLflow's dispatch behind it in a
    ``StreamFront``; False if the permission middleware is not found."""
    from starlette.middleware import Middleware

    middleware = getattr(served, "user_middleware", None)
    if middleware is None or getattr(served, "middleware_stack", None) is not None:
        return False
    flask_paths = fixed_flask_paths(flask_app)
    streamed = _streamed()
    _install_dispatch_fronts(middleware, flask_paths, streamed)
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
        guarded=_guarded(dispatch, streamed),
        flask_paths=flask_paths,
        decide=decide,
    )
    return True
