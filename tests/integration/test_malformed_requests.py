"""Malformed requests, sent as an attacker would, to a real server (Postgres, S3, auth on).

Every malformed body is a 400 with MLflow's error JSON and a missing artifact a 404; no answer carries
SQL, a file path, the bucket, the database or a traceback, and no JSON shape makes the server fail.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
from typing import Any

import pytest
import requests

from mlflow_ext.auth import guard
from tests.integration.test_auth_tokens import TIMEOUT, Api, admin, new_user
from tests.support.services import Platform

pytestmark = pytest.mark.integration

API = "/api/2.0/mlflow"
JSON = {"Content-Type": "application/json"}
BAD_REQUEST_CODES = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"}
DEEP = 3000


def token(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def deep_array(levels: int = DEEP) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_object(levels: int = DEEP) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


class World:
    """An experiment, a run and a model to aim at, and two principals: the admin and a plain user."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.admin = admin(platform)
        username, password = new_user(platform, "malformed")
        self.admin.ok(
            "POST", "/api/2.0/mlflow-ext/rights/grant", {"username": username, "right": "create_experiment"}
        )
        self.user = Api(platform.tracking_uri, username, password)
        self.experiment_id = self.user.ok(
            "POST", f"{API}/experiments/create", {"name": f"mal-{secrets.token_hex(4)}"}
        )["experiment_id"]
        self.run_id = self.user.ok("POST", f"{API}/runs/create", {"experiment_id": self.experiment_id})[
            "run"
        ]["info"]["run_id"]

    def forbidden(self) -> list[str]:
        """Strings no error answer may carry."""
        pg = self.platform.postgres
        return [
            "SELECT",
            "INSERT",
            "psycopg2",
            "sqlalche",
            "Traceback",
            "/",
            self.platform.bucket,
            "mlflow_auth",
            '"mlflow"',
            f":{pg.port}",
            "127.0.0.1",
        ]


@pytest.fixture(scope="module")
def world(platform: Platform) -> World:
    return World(platform)


# (name, method, path, body) with {run} and {experiment} filled in; bytes are sent raw as JSON.
BAD_BODIES: list[tuple[str, str, str, Any]] = [
    # runs/create
    ("runs/create array root", "POST", f"{API}/runs/create", b"[1, 2, 3]"),
    ("runs/create deep array", "POST", f"{API}/runs/create", deep_array()),
    ("runs/create deep object", "POST", f"{API}/runs/create", deep_object()),
    ("runs/create broken json", "POST", f"{API}/runs/create", b'{"experiment_id": '),
    ("runs/create object experiment", "POST", f"{API}/runs/create", {"experiment_id": {"a": 1}}),
    ("runs/create empty experiment", "POST", f"{API}/runs/create", {"experiment_id": ""}),
    ("runs/create text experiment", "POST", f"{API}/runs/create", {"experiment_id": "abc"}),
    (
        "runs/create NUL name",
        "POST",
        f"{API}/runs/create",
        {"experiment_id": "{experiment}", "run_name": "a\x00b"},
    ),
    # runs/log-batch
    ("log-batch array root", "POST", f"{API}/runs/log-batch", b"[]"),
    (
        "log-batch deep",
        "POST",
        f"{API}/runs/log-batch",
        b'{"run_id": "{run}", "metrics": ' + deep_array() + b"}",
    ),
    (
        "log-batch object value",
        "POST",
        f"{API}/runs/log-batch",
        {"run_id": "{run}", "metrics": [{"key": "m", "value": {"x": 1}, "timestamp": 1, "step": 0}]},
    ),
    (
        "log-batch NUL key",
        "POST",
        f"{API}/runs/log-batch",
        {"run_id": "{run}", "metrics": [{"key": "m\x00", "value": 1, "timestamp": 1, "step": 0}]},
    ),
    (
        "log-batch NUL tag",
        "POST",
        f"{API}/runs/log-batch",
        {"run_id": "{run}", "tags": [{"key": "t", "value": "\x00"}]},
    ),
    (
        "log-batch metrics object",
        "POST",
        f"{API}/runs/log-batch",
        {"run_id": "{run}", "metrics": {"key": "m"}},
    ),
    # runs/log-metric
    (
        "log-metric object value",
        "POST",
        f"{API}/runs/log-metric",
        {"run_id": "{run}", "key": "m", "value": {"x": 1}, "timestamp": 1},
    ),
    (
        "log-metric list value",
        "POST",
        f"{API}/runs/log-metric",
        {"run_id": "{run}", "key": "m", "value": [1], "timestamp": 1},
    ),
    (
        "log-metric NUL key",
        "POST",
        f"{API}/runs/log-metric",
        {"run_id": "{run}", "key": "m\x00", "value": 1, "timestamp": 1},
    ),
    (
        "log-metric object run",
        "POST",
        f"{API}/runs/log-metric",
        {"run_id": {"a": 1}, "key": "m", "value": 1, "timestamp": 1},
    ),
    (
        "log-metric huge step",
        "POST",
        f"{API}/runs/log-metric",
        {"run_id": "{run}", "key": "m", "value": 1, "timestamp": 1, "step": 10**30},
    ),
    # experiments/create
    ("experiments/create NUL name", "POST", f"{API}/experiments/create", {"name": "bad\x00name"}),
    ("experiments/create array root", "POST", f"{API}/experiments/create", b'["name"]'),
    ("experiments/create deep", "POST", f"{API}/experiments/create", deep_object()),
    ("experiments/create object name", "POST", f"{API}/experiments/create", {"name": {"a": 1}}),
    (
        "experiments/create NUL tag",
        "POST",
        f"{API}/experiments/create",
        {"name": "x-" + secrets.token_hex(4), "tags": [{"key": "k", "value": "\x00"}]},
    ),
    # registered-models/create
    ("registered-models/create NUL name", "POST", f"{API}/registered-models/create", {"name": "bad\x00name"}),
    ("registered-models/create array root", "POST", f"{API}/registered-models/create", b"[{}]"),
    ("registered-models/create object name", "POST", f"{API}/registered-models/create", {"name": {"a": 1}}),
    # model-versions/search (GET, query string)
    ("model-versions/search NUL filter", "GET", f"{API}/model-versions/search", {"filter": "name='a\x00'"}),
    ("model-versions/search broken filter", "GET", f"{API}/model-versions/search", {"filter": "name='a"}),
    ("model-versions/search text max", "GET", f"{API}/model-versions/search", {"max_results": "many"}),
    (
        "model-versions/search bad token",
        "GET",
        f"{API}/model-versions/search",
        {"page_token": token({"offset": -100})},
    ),
    # runs/search with bad page tokens
    (
        "runs/search negative offset",
        "POST",
        f"{API}/runs/search",
        {"experiment_ids": ["{experiment}"], "page_token": token({"offset": -100})},
    ),
    (
        "runs/search text offset",
        "POST",
        f"{API}/runs/search",
        {"experiment_ids": ["{experiment}"], "page_token": token({"offset": "x"})},
    ),
    (
        "runs/search huge offset",
        "POST",
        f"{API}/runs/search",
        {"experiment_ids": ["{experiment}"], "page_token": token({"offset": 10**30})},
    ),
    (
        "runs/search array token",
        "POST",
        f"{API}/runs/search",
        {"experiment_ids": ["{experiment}"], "page_token": token([1])},
    ),
    (
        "runs/search garbage token",
        "POST",
        f"{API}/runs/search",
        {"experiment_ids": ["{experiment}"], "page_token": "!!!"},
    ),
    (
        "runs/search NUL filter",
        "POST",
        f"{API}/runs/search",
        {"experiment_ids": ["{experiment}"], "filter": "tags.a = '\x00'"},
    ),
    (
        "runs/search negative max",
        "POST",
        f"{API}/runs/search",
        {"experiment_ids": ["{experiment}"], "max_results": -1},
    ),
    # the auth app's own routes
    ("users/create NUL name", "POST", f"{API}/users/create", {"username": "u\x00", "password": "p" * 20}),
    ("users/create deep", "POST", f"{API}/users/create", deep_object()),
    ("users/create array root", "POST", f"{API}/users/create", b"[]"),
    ("tokens/create deep", "POST", "/api/2.0/mlflow-ext/tokens/create", deep_array()),
    (
        "rights/grant NUL model",
        "POST",
        "/api/2.0/mlflow-ext/rights/grant",
        {"username": "admin", "right": "promote", "resource": "m\x00"},
    ),
    (
        "permissions/grant NUL resource",
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        {"username": "admin", "resource_type": "experiment", "resource_id": "1\x00", "permission": "READ"},
    ),
]

MISSING: list[tuple[str, str, dict[str, str] | None]] = [
    ("get-artifact", "/get-artifact", {"run_uuid": "{run}", "path": "no/such/file.txt"}),
    (
        "ajax mlflow-artifacts download",
        "/ajax-api/2.0/mlflow-artifacts/artifacts/{experiment}/missing.txt",
        None,
    ),
    (
        "mlflow-artifacts download",
        "/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/missing.txt",
        None,
    ),
    (
        "mlflow-artifacts download, no such prefix",
        "/api/2.0/mlflow-artifacts/artifacts/nope/missing.txt",
        None,
    ),
]


def fill(value: Any, world: World) -> Any:
    if isinstance(value, bytes):
        return value.replace(b"{run}", world.run_id.encode()).replace(
            b"{experiment}", world.experiment_id.encode()
        )
    if isinstance(value, str):
        return value.replace("{run}", world.run_id).replace("{experiment}", world.experiment_id)
    if isinstance(value, list):
        return [fill(item, world) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, world) for key, item in value.items()}
    return value


def send(api: Api, method: str, path: str, body: Any) -> requests.Response:
    kwargs: dict[str, Any] = {"auth": api.auth, "headers": {**api.headers, **JSON}, "timeout": TIMEOUT}
    if method == "GET":
        kwargs["params"] = body
    elif isinstance(body, bytes):
        kwargs["data"] = body
    else:
        kwargs["data"] = json.dumps(body).encode()
    with requests.Session() as session:
        return session.request(method, api.url + path, **kwargs)


def assert_clean_error(
    world: World, response: requests.Response, statuses: set[int], codes: set[str]
) -> None:
    what = f"{response.status_code} {response.text[:400]!r}"
    assert response.status_code in statuses, what
    assert response.headers.get("Content-Type", "").startswith("application/json"), what
    error = response.json()
    assert error["error_code"] in codes, what
    assert isinstance(error["message"], str) and error["message"], what
    # MLflow's own rules name the slash as a character ("'/'", "(/)"): that is no path.
    text = response.text.replace("'/'", "").replace("(/)", "")
    for needle in world.forbidden():
        assert needle not in text, f"{needle!r} in {what}"


@pytest.mark.parametrize("who", ["admin", "user"])
@pytest.mark.parametrize(
    ("method", "path", "body"), [case[1:] for case in BAD_BODIES], ids=[c[0] for c in BAD_BODIES]
)
def test_malformed_bodies_get_a_clean_400(world, who, method, path, body):
    api = world.admin if who == "admin" else world.user
    response = send(api, method, path, fill(body, world))
    # A plain user may be refused before the body is read; the answer must still be clean.
    statuses = {400} if who == "admin" else {400, 403}
    codes = BAD_REQUEST_CODES if who == "admin" else BAD_REQUEST_CODES | {"PERMISSION_DENIED"}
    assert_clean_error(world, response, statuses, codes)


@pytest.mark.parametrize(("path", "params"), [case[1:] for case in MISSING], ids=[c[0] for c in MISSING])
def test_a_missing_artifact_is_a_clean_404(world, path, params):
    response = send(world.admin, "GET", fill(path, world), fill(params, world))
    assert_clean_error(world, response, {404}, {"RESOURCE_DOES_NOT_EXIST"})


def test_nul_in_a_path_or_query_is_a_clean_400(world):
    response = send(world.admin, "GET", f"{API}/experiments/get", {"experiment_id": "1\x00"})
    assert_clean_error(world, response, {400}, BAD_REQUEST_CODES)
    response = send(
        world.admin, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{world.experiment_id}/a%00b", None
    )
    assert_clean_error(world, response, {400}, BAD_REQUEST_CODES)


def test_a_workspace_header_gets_mlflow_s_answer_while_workspaces_are_off(world):
    """The platform does MLflow's workspace dispatcher's work itself on the Flask routes (``auth.asgi``);
    a request naming a workspace still gets the dispatcher's refusal (FEATURE_DISABLED, which MLflow
    answers with status 500, so the guard's plain 500), and logs nothing."""
    metric = {"run_id": world.run_id, "key": "ws", "value": 1.0, "timestamp": 1, "step": 0}
    for header in ("X-MLflow-Workspace", "x-mlflow-workspace"):
        named = Api(world.platform.tracking_uri, world.platform.admin_username, world.platform.admin_password)
        named.headers[header] = "team-a"
        response = named.call("POST", f"{API}/runs/log-metric", metric)
        assert response.status_code == 500, response.text
        assert response.json() == {"error_code": "INTERNAL_ERROR", "message": guard.MESSAGE_INTERNAL}
    world.admin.ok("POST", f"{API}/runs/log-metric", {**metric, "step": 1})
    history = world.admin.ok(
        "GET", f"{API}/metrics/get-history", {"run_id": world.run_id, "metric_key": "ws"}
    )
    assert [m["step"] for m in history["metrics"]] == [1]


# --- a bounded, seeded fuzz over JSON shapes --------------------------------------------------------

FUZZ_EXAMPLES = 120
FUZZ_SEED = 20261204
FIELDS = [
    "run_id",
    "experiment_id",
    "experiment_ids",
    "key",
    "value",
    "timestamp",
    "step",
    "name",
    "tags",
    "page_token",
    "max_results",
    "filter",
    "order_by",
    "run_view_type",
    "artifact_location",
    "zzz",
]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["null", "bool", "int", "float", "str", "nul", "big"] + (["list", "dict"] if depth < 5 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 1, 2**31, -(2**63), 2**64, rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e308, 1e-320])
    if kind == "str":
        return rng.choice(
            ["", "x", "é", "'", '"', "\\", "%", "1; DROP TABLE runs", "a" * 600, "\u202e", "😀"]
        )
    if kind == "nul":
        return "a\x00" * rng.randint(1, 3)
    if kind == "big":
        return "b" * rng.choice([1000, 9000])
    if kind == "list":
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(FIELDS): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def valid_body(path: str, world: World, example: int) -> dict[str, Any]:
    """A body the route accepts, so that a few changed fields reach the handler and the store."""
    if path.endswith("/runs/log-metric"):
        return {"run_id": world.run_id, "key": "m", "value": 1.5, "timestamp": 1, "step": example}
    if path.endswith("/experiments/create"):
        return {"name": f"fuzz-{FUZZ_SEED}-{example}-{secrets.token_hex(3)}"}
    return {"experiment_ids": [world.experiment_id], "max_results": 5}


def random_body(rng: random.Random, world: World, path: str, example: int) -> Any:
    roll = rng.random()
    if roll < 0.1:
        return random_json(rng)  # any root
    body = valid_body(path, world, example)
    # One to three fields changed or added: the route's own, or others MLflow reads elsewhere.
    names = list(body) * 3 + FIELDS
    for _ in range(rng.randint(1, 3)):
        body[rng.choice(names)] = random_json(rng, 3)
    return body


@pytest.mark.parametrize(
    "path", [f"{API}/runs/log-metric", f"{API}/experiments/create", f"{API}/runs/search"]
)
def test_random_json_shapes_never_get_a_5xx(world, path):
    rng = random.Random(f"{FUZZ_SEED}:{path}")
    seen: dict[int, int] = {}
    for example in range(FUZZ_EXAMPLES):
        body = random_body(rng, world, path, example)
        response = send(world.admin, "POST", path, body)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        what = (
            f"example {example}: {json.dumps(body)[:300]} -> {response.status_code} {response.text[:300]!r}"
        )
        assert response.status_code < 500, what
        if response.status_code >= 400:
            error = response.json()
            assert error["error_code"] and error["message"], what
            for needle in ("SELECT", "INSERT", "psycopg2", "sqlalche", "Traceback", world.platform.bucket):
                assert needle not in response.text, f"{needle!r}: {what}"
    print(f"{path}: statuses {dict(sorted(seen.items()))}")
