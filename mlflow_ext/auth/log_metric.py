"""``POST /api/2.0/mlflow/runs/log-metric`` answered in front of Flask when every decision is already known.

A training job logs metric after metric to the same run, with the same credentials. Through MLflow's
stack each call crosses FastAPI's router, the WSGI bridge and a worker thread into Flask, runs the
before-request hooks (authentication, MLflow's permission check of the run's experiment), MLflow's
handler (the body through protobuf and a schema check) and the after-request hooks: about half of the
server's CPU for one metric (1.84 against 0.96 ms on loopback without them), for one statement in the
store.

``LogMetricFront`` sits innermost among the ASGI middlewares (the guard, the Host check, CORS, security
headers and workspace binding all still run), in front of the router. It answers a request itself only
when everything Flask would decide is known to come out the same:

- the body is plainly well-formed: ``run_id`` (and ``run_uuid`` the same, as MLflow's client sends it),
  ``key``, ``value`` (a finite number), ``timestamp`` and optionally ``step`` (64-bit integers), nothing
  else, sent as ``application/json``, as decoded by the guard (``log_batch.parse_metric`` builds the
  same ``Metric`` as MLflow's handler);
- the ``Authorization`` header is accepted from the credential cache alone (``authn.cached_user``):
  verified under the current generation, not locked out, a token not expired;
- MLflow's permission check has let this user log to this run under the current generation: recorded
  when Flask answered such a request 200. Every write that could change that answer (grants, roles,
  users, admin flags, passwords, tokens, lockouts) bumps the generation, which is read from the database
  for each request as the Flask path reads it, and a run never changes experiment;
- the store takes the metric without error.

The answer is then MLflow's (``{}``, status 200). In every other case (any error of the store included:
its writes are idempotent, and it wrote nothing) the request goes on to Flask unchanged, which answers
it as always. ``MLFLOW_EXT_FAST_LOG_METRIC=false`` turns the front off. It is not installed on a server
with workspaces or ``--artifacts-only``, whose checks it does not make.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from mlflow_ext import mlflow_internals, settings
from mlflow_ext.auth import authn, guard, lockout, log_batch
from mlflow_ext.auth.asgi import ASGIApp, Scope

_logger = logging.getLogger(__name__)

# (user, run) pairs remembered per generation, the oldest first out (a few MB at most per worker).
MAX_DECISIONS = 16384
_HEADERS = (b"authorization", b"content-type", b"x-forwarded-for")
# MLflow's client sends the run's id twice, as ``run_id`` and as its old name ``run_uuid``.
_RUN_FIELDS = ("run_id", "run_uuid")


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether known log-metric requests are answered in front of Flask (``MLFLOW_EXT_FAST_LOG_METRIC``)."""
    return bool(settings.get("MLFLOW_EXT_FAST_LOG_METRIC", os.environ if environ is None else environ))


def parse(document: Any) -> tuple[str, Any] | None:
    """(run_id, ``Metric``) as MLflow's log-metric handler builds them, or None to leave it to MLflow."""
    if type(document) is not dict:
        return None
    run_id = document.get("run_id")
    if type(run_id) is not str or not log_batch.text(run_id) or document.get("run_uuid", run_id) != run_id:
        return None
    fields = {k: v for k, v in document.items() if k not in _RUN_FIELDS}
    metric = log_batch.parse_metric(fields, run_id=run_id)
    return None if metric is None else (run_id, metric)


class Decisions:
    """Which (user, run) MLflow's permission check let log metrics, for one generation of the auth
    database: a newer generation forgets every older answer."""

    def __init__(self, limit: int = MAX_DECISIONS) -> None:
        self.limit = limit
        self.generation = -1
        self.allowed: dict[tuple[str, str], None] = {}
        self.lock = threading.Lock()

    def allows(self, generation: int, username: str, run_id: str) -> bool:
        return generation == self.generation and (username, run_id) in self.allowed

    def record(self, generation: int, username: str, run_id: str) -> None:
        with self.lock:
            if generation > self.generation:
                self.generation, self.allowed = generation, {}
            if generation != self.generation:
                return
            if len(self.allowed) >= self.limit:
                del self.allowed[next(iter(self.allowed))]
            self.allowed[(username, run_id)] = None


class _Request(NamedTuple):
    """What the front needs of an eligible request."""

    authorization: str
    address: str
    run_id: str
    metric: Any


def eligible(scope: Scope, trusted_proxies: Any) -> _Request | None:
    """The request's credentials, client address and metric, when its body and headers are plainly
    well-formed (each of the headers read at most once: Flask would see repeated ones joined)."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        name = name.lower()
        if name in _HEADERS:
            if name in found:
                return None
            found[name] = value.decode("latin-1")
    authorization = found.get(b"authorization")
    if authorization is None or not log_batch.is_json(found.get(b"content-type")):
        return None
    shared = guard.shared_body()
    parsed = None if shared is None else parse(shared[1])
    if parsed is None:
        return None
    client = scope.get("client")
    remote = client[0] if client else None
    address = lockout.client_address(remote, found.get(b"x-forwarded-for"), trusted_proxies)
    return _Request(authorization, address, *parsed)


class LogMetricFront:
    """ASGI middleware: log-metric requests whose every decision is known, answered here (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        paths: Iterable[str],
        store: Callable[[], Any],
        answer: bytes,
        decisions: Decisions | None = None,
    ) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.store = store
        self.answer = answer
        self.decisions = decisions or Decisions()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        request = eligible(scope, authn.state().settings.trusted_proxies)
        if request is None:
            await self.app(scope, receive, send)
            return
        import anyio.to_thread

        generation, logged = await anyio.to_thread.run_sync(self._log, request)
        if logged:
            await guard.send_json(send, 200, self.answer)
            return
        status = 0

        async def watched(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watched)
        if status == 200 and generation is not None:
            # Flask authenticated and authorized it under this generation or a later one; under a later
            # one, the record is never used (generations only grow).
            entry = authn.cached_user(request.authorization, request.address, generation, touch=False)
            if entry is not None:
                self.decisions.record(generation, entry.username, request.run_id)

    def _log(self, request: _Request) -> tuple[int | None, bool]:
        """In a worker thread: (the generation read, whether the metric was logged here)."""
        from mlflow.exceptions import MlflowException

        try:
            generation = authn.state().refresh()
        except Exception:
            return None, False  # Flask reads it again and answers the failure as always
        entry = authn.cached_user(request.authorization, request.address, generation)
        if entry is None or not self.decisions.allows(generation, entry.username, request.run_id):
            return generation, False
        try:
            self.store().log_metric(request.run_id, request.metric)
        except MlflowException:
            return generation, False  # MLflow's handler makes the same call and answers its error
        return generation, True


def _log_metric_paths(flask_app: Any) -> list[str]:
    """The POST rules whose view is MLflow's own log-metric handler (empty if it is not)."""
    from mlflow.server import handlers

    view = getattr(handlers, "_log_metric", None)
    return [
        rule.rule
        for rule in flask_app.url_map.iter_rules()
        if view is not None
        and flask_app.view_functions.get(rule.endpoint) is view
        and "POST" in (rule.methods or ())
        and not rule.arguments
    ]


def install(served: Any, flask_app: Any, environ: Mapping[str, str] | None = None) -> bool:
    """Put ``LogMetricFront`` innermost among the ASGI middlewares; True when it is in place."""
    environ = os.environ if environ is None else environ
    if not enabled(environ):
        return False
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.protos.service_pb2 import LogMetric
    from mlflow.server import ARTIFACTS_ONLY_ENV_VAR
    from mlflow.utils.proto_json_utils import message_to_json
    from starlette.middleware import Middleware

    if MLFLOW_ENABLE_WORKSPACES.get() or environ.get(ARTIFACTS_ONLY_ENV_VAR):
        return False
    middleware = getattr(served, "user_middleware", None)
    paths = _log_metric_paths(flask_app)
    if middleware is None or getattr(served, "middleware_stack", None) is not None or not paths:
        _logger.warning("MLflow's log-metric route not found as expected; Flask serves every log-metric call")
        return False
    answer = message_to_json(LogMetric.Response()).encode()
    middleware.append(
        Middleware(LogMetricFront, paths=paths, store=mlflow_internals.tracking_store, answer=answer)
    )
    return True
