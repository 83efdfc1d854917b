"""The ``mlflow.app`` entry point ``mlflow-ext-auth``: ``mlflow server --app-name mlflow-ext-auth``.

``create_app`` is a factory: uvicorn calls it in every worker (``--factory``), and only then is any
configuration read. It builds on MLflow's basic-auth app instead of replacing it:

1. our REST routes are added to MLflow's Flask app, each with a validator in MLflow's table;
2. ``mlflow.server.auth.create_app`` does the rest as usual: user store, admin bootstrap, its
   before/after-request hooks, the FastAPI wrapper and its permission middleware (which guards the
   FastAPI-only routes through our ``authorization_function`` too);
3. the validators of the routes we tighten are wrapped (``policy``), and the shared state for
   authentication (``authn``) is built on the same database engine as MLflow's user store;
4. MLflow's auth store is wrapped so its writes bump the generation counter and its reads on the
   authorization path are memoised per generation, and runs' experiments are remembered (``memo``);
5. MLflow's FastAPI permission middleware is fronted by a pure-ASGI one (``asgi``) that hands the
   requests MLflow's middleware would only pass on straight to Flask, without its per-request cost,
   and Flask is served through a WSGI bridge that hands a small answer to the event loop once
   (``wsgi_bridge``);
6. ``GET /ready`` (``ready``) and ``GET /metrics`` (``metrics``) are answered in front of it all;
7. a new model version gets the authenticated user as its ``user_id`` (``registrant``).
8. the guard's decoded request body is Flask's request JSON, and well-formed log-batch bodies are
   turned into entities without MLflow's protobuf conversion (``log_batch``); a log-metric call whose
   every decision is already known is answered in front of the router and Flask (``log_metric``).
9. the routes of stock features the platform does not configure are refused unless turned on
   (``ui_features``).
10. with ``MLFLOW_EXT_OIDC_ISSUER``, single sign-on for people (``oidc``, ``group_mapping``).

The auth INI (rendered by ``mlflow-ext server run``) must name ``mlflow_ext.auth.authn:authenticate_request``
as its ``authorization_function``; ``MLFLOW_BASIC_AUTH_FAIL_CLOSED`` defaults to true, so a route
without an authorization decision is refused to non-admins instead of being allowed.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from mlflow_ext import artifact_access, mlflow_internals
from mlflow_ext.auth import (
    asgi,
    authn,
    config,
    guard,
    log_batch,
    log_metric,
    metrics,
    oidc,
    policy,
    ready,
    registrant,
    routes,
    ui_features,
    wsgi_bridge,
)
from mlflow_ext.auth.audit import AuditLog
from mlflow_ext.auth.cache import CredentialCache
from mlflow_ext.auth.memo import AuthMemo, RunExperiments, wrap_run_requirement, wrap_store
from mlflow_ext.auth.store import ExtStore, generation_engine

AUTHORIZATION_FUNCTION = "mlflow_ext.auth.authn:authenticate_request"


def create_app() -> Any:
    # Deny by default: a route no validator covers is refused (MLflow's opt-in fail-closed net).
    os.environ.setdefault("MLFLOW_BASIC_AUTH_FAIL_CLOSED", "true")

    # MLflow's server modules build their Flask app when imported: only here, in the worker.
    import mlflow.server.auth as auth_module
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_STATE
    from mlflow.server import app as flask_app

    if mlflow_internals.auth_config().authorization_function != AUTHORIZATION_FUNCTION:
        raise MlflowException(
            f"mlflow-ext-auth needs authorization_function = {AUTHORIZATION_FUNCTION} in the auth "
            "config (MLFLOW_AUTH_CONFIG_PATH); start the server with `mlflow-ext server run`.",
            INVALID_STATE,
        )
    settings = config.load(os.environ)
    routes.register(flask_app)
    served = auth_module.create_app(flask_app)

    users = mlflow_internals.auth_store()
    ext = ExtStore(users.engine, generation_engine(users.engine))
    try:
        ext.generation()
    except Exception as exc:
        raise MlflowException(
            "the mlflow-ext auth tables are missing or unreadable; run `mlflow-ext server migrate` "
            f"({type(exc).__name__})",
            INVALID_STATE,
        ) from None
    memo = AuthMemo()
    # Every write through MLflow's auth store (users, grants, roles; REST, FastAPI routes and the
    # after-request hooks that grant a creator MANAGE or sweep a deleted model's grants) bumps the
    # generation once committed; its reads on the authorization path are memoised per generation.
    wrap_store(users, memo, ext.bump_generation)
    wrap_run_requirement(RunExperiments())
    authn.install(
        authn.AuthState(
            settings=settings,
            ext=ext,
            users=users,
            audit=AuditLog(settings.audit_log),
            cache=CredentialCache(settings.cache_max_entries, settings.cache_ttl_seconds),
            memo=memo,
        )
    )
    # Single sign-on for people (off without MLFLOW_EXT_OIDC_ISSUER): its routes answer first.
    try:
        sso = oidc.install(flask_app, settings, users, ext, authn.state().audit)
    except ValueError as exc:
        raise MlflowException(str(exc), INVALID_STATE) from None
    policy.install(flask_app)
    registrant.install(flask_app)  # who registered a version: its user_id
    artifact_access.install(flask_app, os.environ)  # no presigned URLs of a store clients cannot reach
    asgi.install(served, flask_app)
    wsgi_bridge.install(served, flask_app)  # Flask's answers handed to the event loop once
    # Malformed requests and database failures: MLflow's error JSON, never a 500 page or a leak.
    guard.install(served, flask_app)
    # Stock features the platform does not configure (assistant, demo data, MCP registry): 404 when off;
    # with single sign-on, the UI gets a "Sign out" link.
    ui_features.install(served, os.environ, sign_out=oidc.LOGOUT_PATH if sso else None)
    # The guard's decoded body is Flask's request JSON; well-formed log-batch bodies skip protobuf.
    log_batch.install(flask_app)
    # Log-metric calls whose every decision is known are answered in front of the router and Flask.
    log_metric.install(served, flask_app)
    # Outermost, before authentication and the Host check: monitors need no credentials to ask.
    readiness = ready.Readiness(ready.checks_from(os.environ))
    metrics.install(served, readiness.states)
    ready.install(served, readiness)
    # The worker's app (MLflow, FastAPI, SQLAlchemy: some 400,000 objects) lives as long as the worker.
    # Frozen, it is left out of every later collection, each of which walked all of it (about 180 ms
    # here), paid by whichever request was allocating then: mostly a log-batch's JSON decode (8% of the
    # server's CPU). Not collected first: that one pass would delay every worker's start by as much.
    gc.freeze()
    return served
