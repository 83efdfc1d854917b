"""The log-batch fast path against MLflow's own handler, side by side on one database.

The session's platform serves log-batch with the fast path (on by default); a second server on the same
databases runs with ``MLFLOW_EXT_FAST_LOG_BATCH=false``, so MLflow's handler answers there. Every body,
well-formed or not, goes to both, each aimed at a fresh run of its own: the status, the answer and the
run's stored metrics (every value of every history), params and tags must be the same. Permission denials
too: a user without EDIT on the experiment gets the same 403 from both.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.integration.test_auth_tokens import TIMEOUT, Api, admin, new_user
from tests.support.services import MlflowServer, Platform

pytestmark = pytest.mark.integration

API = "/api/2.0/mlflow"
RUN = "<run>"  # replaced by each server's own run id
NOW = 1_700_000_000_000


@pytest.fixture(scope="module")
def handler_server(platform: Platform) -> Iterator[MlflowServer]:
    """A replica on the same databases that leaves log-batch to MLflow's handler."""
    replica = MlflowServer({**platform.server.env, "MLFLOW_EXT_FAST_LOG_BATCH": "false"}).start()
    try:
        yield replica
    finally:
        replica.stop()


@pytest.fixture(scope="module")
def experiment_id(platform: Platform) -> str:
    return str(
        admin(platform).ok(
            "POST", f"{API}/experiments/create", {"name": f"fastbatch-{secrets.token_hex(4)}"}
        )["experiment_id"]
    )


def _metrics(count: int, key: str = "m", **extra: Any) -> list[dict[str, Any]]:
    return [
        {"key": f"{key}{i % 7}", "value": i * 0.5 - 3, "timestamp": NOW + i, "step": i, **extra}
        for i in range(count)
    ]


def _well_formed() -> list[tuple[str, Any]]:
    return [
        (
            "metrics, params and tags",
            {
                "run_id": RUN,
                "metrics": _metrics(300),
                "params": [{"key": "lr", "value": "0.1"}, {"key": "empty", "value": ""}],
                "tags": [{"key": "team", "value": "vision"}, {"key": "note", "value": "ünïcødé ✓"}],
            },
        ),
        ("metrics only, no step", {"run_id": RUN, "metrics": [{"key": "a", "value": 1, "timestamp": 5}]}),
        ("empty lists", {"run_id": RUN, "metrics": [], "params": [], "tags": []}),
        ("run id only", {"run_id": RUN}),
        (
            "integers, zero, negatives",
            {
                "run_id": RUN,
                "metrics": [
                    {"key": "z", "value": 0, "timestamp": 0, "step": 0},
                    {"key": "neg", "value": -7, "timestamp": 1, "step": -5},
                    {"key": "int53", "value": 2**53, "timestamp": 1, "step": 2},
                ],
            },
        ),
        (
            "same key, same step: newest wins in latest_metrics",
            {
                "run_id": RUN,
                "metrics": [
                    {"key": "loss", "value": 2.0, "timestamp": NOW, "step": 3},
                    {"key": "loss", "value": 1.0, "timestamp": NOW + 1, "step": 3},
                    {"key": "loss", "value": 1.0, "timestamp": NOW + 1, "step": 3},
                    {"key": "loss", "value": 9.0, "timestamp": NOW, "step": 1},
                ],
            },
        ),
        ("the mlflow.runName tag", {"run_id": RUN, "tags": [{"key": "mlflow.runName", "value": "renamed"}]}),
        ("keys with / . - and spaces", {"run_id": RUN, "params": [{"key": "a/b.c-d e", "value": "x"}]}),
    ]


def _unusual() -> list[tuple[str, Any]]:
    """Bodies the fast path leaves to MLflow's handler (some MLflow accepts, some it refuses)."""
    one = {"key": "a", "value": 1.0, "timestamp": NOW, "step": 0}
    return [
        (
            "64-bit extremes",
            {
                "run_id": RUN,
                "metrics": [
                    {"key": "z", "value": 0, "timestamp": 0, "step": 0},
                    {"key": "neg", "value": -7, "timestamp": -1, "step": -(2**63)},
                    {"key": "big", "value": 1.5e308, "timestamp": 2**63 - 1, "step": 2**63 - 1},
                    {"key": "int53", "value": 2**53, "timestamp": 1, "step": 2},
                ],
            },
        ),
        ("no run_id", {"metrics": [one]}),
        ("run_id a number", {"run_id": 12, "metrics": [one]}),
        ("run_id empty", {"run_id": "", "metrics": [one]}),
        ("run_id in its JSON spelling", {"runId": RUN, "metrics": [one]}),
        ("run_uuid", {"run_uuid": RUN, "metrics": [one]}),
        ("unknown run", {"run_id": "0" * 32, "metrics": [one]}),
        ("unknown top-level field", {"run_id": RUN, "metrics": [one], "extra": 1}),
        ("metrics an object", {"run_id": RUN, "metrics": {"a": 1}}),
        ("metrics null", {"run_id": RUN, "metrics": None}),
        ("a metric a list", {"run_id": RUN, "metrics": [[1, 2]]}),
        ("value a numeric string", {"run_id": RUN, "metrics": [{**one, "value": "1.5"}]}),
        ("value NaN as a string", {"run_id": RUN, "metrics": [{**one, "value": "NaN"}]}),
        ("value null", {"run_id": RUN, "metrics": [{**one, "value": None}]}),
        ("value missing", {"run_id": RUN, "metrics": [{"key": "a", "timestamp": NOW}]}),
        ("value an integer beyond 2**53", {"run_id": RUN, "metrics": [{**one, "value": 2**64}]}),
        ("timestamp missing", {"run_id": RUN, "metrics": [{"key": "a", "value": 1.0}]}),
        ("timestamp a float", {"run_id": RUN, "metrics": [{**one, "timestamp": 1.5}]}),
        ("timestamp an integral float", {"run_id": RUN, "metrics": [{**one, "timestamp": 12.0}]}),
        ("timestamp a string", {"run_id": RUN, "metrics": [{**one, "timestamp": "12"}]}),
        ("step a string", {"run_id": RUN, "metrics": [{**one, "step": "3"}]}),
        ("step null", {"run_id": RUN, "metrics": [{**one, "step": None}]}),
        ("key empty", {"run_id": RUN, "metrics": [{**one, "key": ""}]}),
        ("key a number", {"run_id": RUN, "metrics": [{**one, "key": 5}]}),
        ("key a bad name", {"run_id": RUN, "metrics": [{**one, "key": "../up"}]}),
        ("model_id on a metric", {"run_id": RUN, "metrics": [{**one, "model_id": "m-1"}]}),
        (
            "dataset fields on a metric",
            {"run_id": RUN, "metrics": [{**one, "dataset_name": "d", "dataset_digest": "x"}]},
        ),
        ("unknown field on a metric", {"run_id": RUN, "metrics": [{**one, "unit": "s"}]}),
        ("param value a number", {"run_id": RUN, "params": [{"key": "p", "value": 3}]}),
        ("param value missing", {"run_id": RUN, "params": [{"key": "p"}]}),
        ("param key missing", {"run_id": RUN, "params": [{"value": "v"}]}),
        ("param value too long", {"run_id": RUN, "params": [{"key": "p", "value": "x" * 8001}]}),
        (
            "one param twice with two values",
            {"run_id": RUN, "params": [{"key": "p", "value": "1"}, {"key": "p", "value": "2"}]},
        ),
        ("tag value null", {"run_id": RUN, "tags": [{"key": "t", "value": None}]}),
        ("tag key empty", {"run_id": RUN, "tags": [{"key": "", "value": "v"}]}),
        ("a lone surrogate", {"run_id": RUN, "tags": [{"key": "t", "value": "\ud800"}]}),
        ("too many metrics", {"run_id": RUN, "metrics": _metrics(1001)}),
        ("body a JSON string", json.dumps({"run_id": RUN, "metrics": [one]})),
    ]


def _body(template: Any, run_id: str) -> bytes:
    text = json.dumps(template, allow_nan=True)
    return text.replace(RUN, run_id).encode("utf-8", errors="surrogatepass")


def _send(
    url: str, auth: tuple[str, str], body: bytes, content_type: str | None, prefix: str
) -> requests.Response:
    headers = {"X-Forwarded-For": "10.9.8.7"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(
        f"{url}{prefix}/2.0/mlflow/runs/log-batch", data=body, headers=headers, auth=auth, timeout=TIMEOUT
    )


def _normalised_answer(response: requests.Response, run_id: str) -> tuple[int, Any]:
    text = response.text.replace(run_id, RUN)
    try:
        return response.status_code, json.loads(text)
    except ValueError:
        return response.status_code, text


def _stored(api: Api, run_id: str) -> dict[str, Any]:
    """Everything log-batch writes to a run: each metric's history, latest values, params, tags."""
    run = api.ok("GET", f"{API}/runs/get", {"run_id": run_id})["run"]
    data = run["data"]
    histories = {}
    for metric in data.get("metrics", []):
        history = api.ok(
            "GET",
            f"{API}/metrics/get-history",
            {"run_id": run_id, "metric_key": metric["key"], "max_results": 25000},
        )["metrics"]
        histories[metric["key"]] = sorted(
            (
                m["step"],
                m["timestamp"],
                repr(float(m["value"])) if not isinstance(m["value"], str) else m["value"],
            )
            for m in history
        )
    latest = sorted((m["key"], m["value"], m["timestamp"], m["step"]) for m in data.get("metrics", []))
    return {
        "latest": latest,
        "history": histories,
        "params": sorted((p["key"], p["value"]) for p in data.get("params", [])),
        # The run name is the only tag whose value is per run (MLflow picks a random one at creation).
        "tags": sorted(
            (t["key"], t["value"])
            for t in data.get("tags", [])
            if t["key"] != "mlflow.runName" or t["value"] == "renamed"
        ),
        "name_renamed": run["info"].get("run_name") == "renamed",
    }


class Pair:
    """The same principal on both servers."""

    def __init__(self, platform: Platform, handler: MlflowServer, username: str, password: str) -> None:
        self.auth = (username, password)
        self.fast = Api(platform.tracking_uri, username, password)
        self.handler = Api(handler.url, username, password)

    def compare(
        self,
        experiment_id: str,
        template: Any,
        content_type: str | None = "application/json",
        prefix: str = "/api",
        creator: Api | None = None,
    ) -> tuple[int, Any]:
        answers, stored = [], []
        for api in (self.fast, self.handler):
            owner = creator or api
            run_id = owner.ok(
                "POST", f"{API}/runs/create", {"experiment_id": experiment_id, "start_time": NOW}
            )["run"]["info"]["run_id"]
            response = _send(api.url, self.auth, _body(template, run_id), content_type, prefix)
            answers.append(_normalised_answer(response, run_id))
            stored.append(_stored(owner, run_id))
        assert answers[0] == answers[1], f"fast path {answers[0]} != MLflow's handler {answers[1]}"
        assert stored[0] == stored[1], "the runs differ after the same request"
        return answers[0]


@pytest.fixture(scope="module")
def admins(platform: Platform, handler_server: MlflowServer) -> Pair:
    return Pair(platform, handler_server, platform.admin_username, platform.admin_password)


@pytest.mark.parametrize(("name", "template"), _well_formed(), ids=[name for name, _ in _well_formed()])
def test_well_formed_bodies_answer_and_store_as_mlflow(admins, experiment_id, name, template):
    status, answer = admins.compare(experiment_id, template)
    assert (status, answer) == (200, {}), name


def test_the_ajax_route_too(admins, experiment_id):
    status, answer = admins.compare(experiment_id, _well_formed()[0][1], prefix="/ajax-api")
    assert (status, answer) == (200, {})


def test_a_stored_batch_is_all_there(admins, experiment_id):
    """The differential compares the two servers; this checks the batch itself landed, value for value."""
    template = {"run_id": RUN, "metrics": _metrics(1000, "k")}
    run_id = admins.fast.ok("POST", f"{API}/runs/create", {"experiment_id": experiment_id})["run"]["info"][
        "run_id"
    ]
    response = _send(admins.fast.url, admins.auth, _body(template, run_id), "application/json", "/api")
    assert (response.status_code, response.json()) == (200, {})
    histories = _stored(admins.fast, run_id)["history"]
    expected: dict[str, list[tuple[int, int, str]]] = {}
    for metric in template["metrics"]:
        expected.setdefault(metric["key"], []).append(
            (metric["step"], metric["timestamp"], repr(float(metric["value"])))
        )
    assert histories == {key: sorted(rows) for key, rows in expected.items()}


@pytest.mark.parametrize(("name", "template"), _unusual(), ids=[name for name, _ in _unusual()])
def test_unusual_bodies_answer_and_store_as_mlflow(admins, experiment_id, name, template):
    admins.compare(experiment_id, template)


def test_errors_keep_mlflows_code_and_message(admins, experiment_id):
    """Some unusual bodies are refused: by both servers, with one answer (the differential says which)."""
    refused = [admins.compare(experiment_id, template)[0] for _, template in _unusual()]
    assert sum(status >= 400 for status in refused) >= 10


def test_a_subnormal_value(admins, experiment_id):
    """Whatever the database makes of it, both servers answer and store the same."""
    admins.compare(
        experiment_id, {"run_id": RUN, "metrics": [{"key": "tiny", "value": 5e-324, "timestamp": 1}]}
    )


def test_nan_and_infinity_literals(admins, experiment_id):
    template = {
        "run_id": RUN,
        "metrics": [
            {"key": "nan", "value": math.nan, "timestamp": NOW},
            {"key": "inf", "value": math.inf, "timestamp": NOW},
        ],
    }
    admins.compare(experiment_id, template)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/json; charset=utf-8", "application/JSON"]
)
def test_content_types(admins, experiment_id, content_type):
    admins.compare(experiment_id, {"run_id": RUN, "metrics": _metrics(3)}, content_type=content_type)


def test_a_deleted_run(admins, experiment_id):
    answers = []
    for api in (admins.fast, admins.handler):
        run_id = api.ok("POST", f"{API}/runs/create", {"experiment_id": experiment_id})["run"]["info"][
            "run_id"
        ]
        api.ok("POST", f"{API}/runs/delete", {"run_id": run_id})
        response = _send(
            api.url,
            admins.auth,
            _body({"run_id": RUN, "metrics": _metrics(2)}, run_id),
            "application/json",
            "/api",
        )
        answers.append(_normalised_answer(response, run_id))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400


def grant(platform, username: str, experiment_id: str, permission: str) -> None:
    admin(platform).ok(
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        {
            "username": username,
            "resource_type": "experiment",
            "resource_id": experiment_id,
            "permission": permission,
        },
    )


@pytest.mark.parametrize("permission", [None, "READ", "USE"])
def test_without_edit_the_same_403(platform, handler_server, experiment_id, permission):
    username, password = new_user(platform, "batchless")
    if permission is not None:
        grant(platform, username, experiment_id, permission)
    user = Pair(platform, handler_server, username, password)
    status, answer = user.compare(
        experiment_id, {"run_id": RUN, "metrics": _metrics(5)}, creator=admin(platform)
    )
    assert status == 403, answer
    assert answer["error_code"] == "PERMISSION_DENIED"


def test_with_edit_the_batch_is_written(platform, handler_server, experiment_id):
    username, password = new_user(platform, "batcher")
    grant(platform, username, experiment_id, "EDIT")
    user = Pair(platform, handler_server, username, password)
    assert user.compare(experiment_id, _well_formed()[0][1], creator=admin(platform)) == (200, {})


def test_no_credentials_the_same_401(platform, handler_server, experiment_id):
    answers = []
    for url in (platform.tracking_uri, handler_server.url):
        run_id = admin(platform).ok("POST", f"{API}/runs/create", {"experiment_id": experiment_id})["run"][
            "info"
        ]["run_id"]
        response = requests.post(
            f"{url}/api/2.0/mlflow/runs/log-batch",
            data=_body({"run_id": RUN, "metrics": _metrics(2)}, run_id),
            headers={"Content-Type": "application/json", "X-Forwarded-For": "10.9.8.6"},
            timeout=TIMEOUT,
        )
        answers.append((response.status_code, response.text))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401
