"""Route coverage: every route of the pinned MLflow (Flask and FastAPI-only) has an authorization decision.

The app is built exactly as a server worker builds it (``create_app`` on the platform's Postgres auth
database, under uvicorn's flavour so the FastAPI-only routes exist), in a separate process, and each
route is classified the way the auth hooks classify a request. A route MLflow adds in an upgrade fails
this test until someone decides about it: give it a validator, or add it to ``ADMIN_ONLY`` below after
checking that refusing it to non-admins is right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from tests.integration.test_auth_tokens import Api, new_user
from tests.support.worker_app import WORKER_PRELUDE

pytestmark = pytest.mark.integration

DUMP = (
    WORKER_PRELUDE
    + r"""
import json, re
from mlflow_ext.auth.app import create_app
served = create_app()
import mlflow.server.auth as A
from flask import request
from mlflow.server import app as flask_app
from starlette.routing import Mount

def sample(rule):
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", "1", rule)

def walk(routes, prefix=""):
    for route in routes:
        if isinstance(route, Mount):
            continue
        if hasattr(route, "original_router"):  # FastAPI's included routers
            yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            continue
        yield prefix + route.path, route

rows = []
for rule in flask_app.url_map.iter_rules():
    for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
        path = sample(rule.rule)
        with flask_app.test_request_context(path, method=method):
            validator = A._find_validator(request)
            if A.is_unprotected_route(path):
                decision = "public"
            elif validator is not None:
                decision = "validator:" + getattr(validator, "__name__", "?")
            elif A._is_proxy_artifact_path(path) and A._get_proxy_artifact_validator(
                method, request.view_args
            ):
                decision = "artifact-proxy"
            elif A._authorized_outside_before_request(request):
                decision = "self-authorizing"
            else:
                decision = "none"
        rows.append({"kind": "flask", "rule": rule.rule, "method": method, "decision": decision})
for route_path, route in walk(served.routes):
    for method in sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD", "OPTIONS"}):
        path = sample(route_path.replace("{", "<").replace("}", ">"))
        if A.is_unprotected_route(path):
            decision = "public"
        elif A._find_fastapi_validator(path, method) is not None:
            decision = "validator"
        else:
            decision = "none"
        rows.append({"kind": "fastapi", "rule": route_path, "method": method, "decision": decision})
print(json.dumps({"rows": rows, "fail_closed": os.environ.get("MLFLOW_BASIC_AUTH_FAIL_CLOSED")}))
"""
)

# Routes MLflow 3.17.2 gives no validator. With MLFLOW_BASIC_AUTH_FAIL_CLOSED (on for this app) they
# are refused to every non-admin: reviewed, and right for a shared platform (workspace administration,
# prompt-optimization jobs and online-trace views are not used here; the UI's signup form is admin-only).
ADMIN_ONLY = {
    ("/build/<path:filename>", "GET"),
    ("/api/2.0mlflow/experiments/search-datasets", "POST"),
    ("/ajax-api/2.0mlflow/experiments/search-datasets", "POST"),
    ("/api/2.0/mlflow/unified-traces", "GET"),
    ("/ajax-api/2.0/mlflow/unified-traces", "GET"),
    ("/api/2.0/mlflow/get-online-trace-details", "GET"),
    ("/ajax-api/2.0/mlflow/get-online-trace-details", "GET"),
    ("/api/2.0/mlflow/users/create-ui", "POST"),
    *{
        (f"/{api}/3.0/mlflow/{route}", method)
        for api in ("api", "ajax-api")
        for route, methods in (
            ("workspaces/<workspace_name>", ("GET", "PATCH", "DELETE")),
            ("prompt-optimization/jobs/<job_id>", ("GET", "DELETE")),
            ("prompt-optimization/jobs/<job_id>/cancel", ("POST",)),
        )
        for method in methods
    },
}


# Routes of ADMIN_ONLY that another supported MLflow minor decides itself (the previous one, which
# `make upgrade` starts from).
DECIDED_BY_MINOR = {
    "3.16": {(f"/{api}/3.0/mlflow/workspaces/<workspace_name>", "DELETE") for api in ("api", "ajax-api")},
}


def _installed_minor() -> str:
    from mlflow.version import VERSION

    return ".".join(VERSION.split(".")[:2])


@pytest.fixture(scope="module")
def decisions(platform) -> dict:
    with tempfile.TemporaryDirectory() as runtime:
        result = subprocess.run(
            [sys.executable, "-c", DUMP, str(platform.server.env_file), runtime],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_route_has_an_authorization_decision(decisions):
    rows = decisions["rows"]
    assert len(rows) > 400  # the whole pinned API, Flask and FastAPI
    undecided = sorted(
        (r["kind"], r["rule"], r["method"])
        for r in rows
        if r["decision"] == "none" and (r["rule"], r["method"]) not in ADMIN_ONLY
    )
    assert undecided == [], f"routes without an authorization decision: {undecided}"
    # The reviewed list stays exact: a route MLflow starts covering leaves it.
    still_admin_only = {(r["rule"], r["method"]) for r in rows if r["decision"] == "none"}
    assert still_admin_only == ADMIN_ONLY - DECIDED_BY_MINOR.get(_installed_minor(), set())


def test_fail_closed_is_on(decisions):
    assert decisions["fail_closed"] == "true"


def test_the_tightened_routes_carry_our_checks(decisions):
    by_route = {(r["rule"], r["method"]): r["decision"] for r in decisions["rows"]}
    for rule, method in (
        ("/api/2.0/mlflow/experiments/create", "POST"),
        ("/api/2.0/mlflow/registered-models/create", "POST"),
        ("/api/2.0/mlflow/users/list", "GET"),
        ("/ajax-api/2.0/mlflow/users/list", "GET"),
        ("/api/2.0/mlflow/registered-models/alias", "POST"),
        ("/api/2.0/mlflow/registered-models/alias", "DELETE"),
        ("/api/2.0/mlflow/model-versions/delete", "DELETE"),
        ("/api/2.0/mlflow/registered-models/delete", "DELETE"),
        ("/api/2.0/mlflow/registered-models/rename", "POST"),
    ):
        assert by_route[(rule, method)].startswith("validator:mlflow_ext_"), (rule, method)
    for rule, method in (
        ("/api/2.0/mlflow-ext/tokens/create", "POST"),
        ("/api/2.0/mlflow-ext/rights/grant", "POST"),
    ):
        assert by_route[(rule, method)].startswith("validator:"), (rule, method)


def test_admin_only_routes_are_refused_to_users_on_the_real_server(platform):
    username, password = new_user(platform, "nosy")
    api = Api(platform.tracking_uri, username, password)
    for rule, method in sorted(ADMIN_ONLY - DECIDED_BY_MINOR.get(_installed_minor(), set())):
        if rule.startswith("/build/") or "create-ui" in rule:
            continue  # UI asset and form routes: not API calls
        path = rule.replace("<workspace_name>", "default").replace("<job_id>", "1")
        status = api.call(method, path, {}).status_code
        assert status == 403, (method, path, status)
