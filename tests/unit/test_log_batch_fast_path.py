"""The log-batch fast path builds exactly MLflow's entities, or leaves the body to MLflow.

The reference is MLflow's own conversion, run here as its handler runs it: ``ParseDict`` into a
``LogBatch`` message, then ``Metric.from_proto``, ``Param.from_proto``, ``RunTag.from_proto``. For every
body the fast path accepts, MLflow's conversion must succeed and give equal entities; bodies are
hand-picked edge cases plus random ones mixing well-formed and wrong-typed fields.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from mlflow_ext.auth import log_batch

NOW = 1_700_000_000_000


def mlflow_entities(
    document: Any,
) -> tuple[str, list[Any], list[tuple[str, str]], list[tuple[str, str]]] | None:
    """What MLflow's handler hands the store, or None when it answers with an error."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.utils.proto_json_utils import parse_dict

    if not isinstance(document, dict):
        return None
    message = LogBatch()
    try:
        parse_dict(document, message)
    except Exception:
        return None
    if not message.run_id:
        return None
    for metric in document.get("metrics") or []:
        if any(metric.get(field) in (None, "") for field in ("key", "value", "timestamp")):
            return None
    for pair in (document.get("params") or []) + (document.get("tags") or []):
        if pair.get("key") in (None, ""):
            return None
    metrics = [Metric.from_proto(m) for m in message.metrics]
    params = [(p.key, p.value) for p in map(Param.from_proto, message.params)]
    tags = [(t.key, t.value) for t in map(RunTag.from_proto, message.tags)]
    return message.run_id, metrics, params, tags


def fast_entities(
    document: Any,
) -> tuple[str, list[Any], list[tuple[str, str]], list[tuple[str, str]]] | None:
    batch = log_batch.parse_batch(document)
    if batch is None:
        return None
    run_id, metrics, params, tags = batch
    return run_id, metrics, [(p.key, p.value) for p in params], [(t.key, t.value) for t in tags]


def assert_same_or_left_to_mlflow(document: Any) -> bool:
    """True when the fast path took the body (and then built MLflow's entities)."""
    fast = fast_entities(document)
    if fast is None:
        return False
    reference = mlflow_entities(document)
    assert reference is not None, f"the fast path accepted a body MLflow refuses: {document!r}"
    assert fast[0] == reference[0]
    assert [m.__dict__ for m in fast[1]] == [m.__dict__ for m in reference[1]]
    for ours, theirs in zip(fast[1], reference[1], strict=True):
        assert type(ours.value) is type(theirs.value) is float
        assert type(ours.timestamp) is type(theirs.timestamp) is int
        assert type(ours.step) is type(theirs.step) is int
    assert fast[2:] == reference[2:]
    return True


ONE = {"key": "a", "value": 1.5, "timestamp": NOW, "step": 2}

ACCEPTED: list[Any] = [
    {"run_id": "r1", "metrics": [ONE]},
    {"run_id": "r1", "metrics": [{"key": "a", "value": 3, "timestamp": 0}]},
    {"run_id": "r1", "metrics": [{**ONE, "value": -(2**53)}, {**ONE, "value": 2**53}]},
    {"run_id": "r1", "metrics": [{**ONE, "timestamp": 2**63 - 1, "step": -(2**63)}]},
    {"run_id": "r1", "params": [{"key": "p", "value": ""}], "tags": [{"key": "t", "value": "ü ✓"}]},
    {"run_id": "r1", "metrics": [], "params": [], "tags": []},
    {"run_id": "r1"},
]

REFUSED: list[Any] = [
    None,
    [],
    "a string",
    {"metrics": [ONE]},
    {"run_id": "", "metrics": [ONE]},
    {"run_id": 5},
    {"runId": "r1"},
    {"run_uuid": "r1"},
    {"run_id": "r1", "other": 1},
    {"run_id": "r1", "metrics": None},
    {"run_id": "r1", "metrics": {}},
    {"run_id": "r1", "metrics": [None]},
    {"run_id": "r1", "metrics": [{**ONE, "value": "1.5"}]},
    {"run_id": "r1", "metrics": [{**ONE, "value": True}]},
    {"run_id": "r1", "metrics": [{**ONE, "value": math.nan}]},
    {"run_id": "r1", "metrics": [{**ONE, "value": math.inf}]},
    {"run_id": "r1", "metrics": [{**ONE, "value": 2**53 + 1}]},
    {"run_id": "r1", "metrics": [{**ONE, "timestamp": 1.0}]},
    {"run_id": "r1", "metrics": [{**ONE, "timestamp": 2**63}]},
    {"run_id": "r1", "metrics": [{**ONE, "step": "1"}]},
    {"run_id": "r1", "metrics": [{**ONE, "step": None}]},
    {"run_id": "r1", "metrics": [{**ONE, "step": False}]},
    {"run_id": "r1", "metrics": [{**ONE, "key": ""}]},
    {"run_id": "r1", "metrics": [{**ONE, "key": "\ud800"}]},
    {"run_id": "r1", "metrics": [{**ONE, "model_id": "m-1"}]},
    {"run_id": "r1", "metrics": [{**ONE, "dataset_name": "d", "dataset_digest": "x"}]},
    {"run_id": "r1", "metrics": [{**ONE, "run_id": "r1"}]},
    {"run_id": "r1", "metrics": [{"key": "a", "value": 1.0}]},
    {"run_id": "r1", "params": [{"key": "p"}]},
    {"run_id": "r1", "params": [{"key": "p", "value": 1}]},
    {"run_id": "r1", "params": [{"key": "p", "value": "v", "x": 1}]},
    {"run_id": "r1", "tags": [{"key": "", "value": "v"}]},
    {"run_id": "r1", "tags": [{"key": "t", "value": None}]},
]


@pytest.mark.parametrize("document", ACCEPTED, ids=range(len(ACCEPTED)))
def test_well_formed_bodies_give_mlflows_entities(document):
    assert assert_same_or_left_to_mlflow(document)


@pytest.mark.parametrize("document", REFUSED, ids=range(len(REFUSED)))
def test_anything_unusual_is_left_to_mlflow(document):
    assert log_batch.parse_batch(document) is None


def _random_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            rng.uniform(-1e6, 1e6),
            rng.randint(-(2**60), 2**60),
            rng.randint(-10, 10),
            str(rng.random()),
            None,
            True,
            1e308,
            -0.0,
            [],
            {},
            "",
            "k",
        ]
    )


def _random_metric(rng: random.Random) -> Any:
    metric: dict[str, Any] = {"key": f"m{rng.randint(0, 3)}", "value": rng.random(), "timestamp": NOW}
    if rng.random() < 0.7:
        metric["step"] = rng.randint(0, 100)
    if rng.random() < 0.3:
        metric[rng.choice(["key", "value", "timestamp", "step", "model_id", "extra"])] = _random_value(rng)
    if rng.random() < 0.05:
        del metric[rng.choice(list(metric))]
    return metric


def test_random_bodies_are_taken_only_as_mlflow_would_take_them():
    rng = random.Random(20261204)
    taken = 0
    for _ in range(1500):
        document: dict[str, Any] = {"run_id": "r" + str(rng.randint(0, 9))}
        document["metrics"] = [_random_metric(rng) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.5:
            document["params"] = [
                {"key": f"p{i}", "value": rng.choice(["v", "", 1, None])} for i in range(rng.randint(0, 3))
            ]
        if rng.random() < 0.1:
            document[rng.choice(["run_id", "tags", "metrics"])] = _random_value(rng)
        # As the server sees it: through JSON.
        document = json.loads(json.dumps(document))
        taken += assert_same_or_left_to_mlflow(document)
    assert 100 < taken < 1500  # both branches exercised


def test_content_type_as_mlflows_handler_reads_it():
    assert log_batch.is_json("application/json")
    assert log_batch.is_json("application/json; charset=utf-8")
    assert not log_batch.is_json(None)
    assert not log_batch.is_json("text/plain")
    assert not log_batch.is_json("application/JSON")


def test_the_setting_turns_the_route_off():
    assert log_batch.enabled({})
    assert not log_batch.enabled({"MLFLOW_EXT_FAST_LOG_BATCH": "false"})


def test_install_replaces_mlflows_view_on_both_routes_only_when_on():
    from flask import Flask
    from mlflow.server import handlers

    def app_with_mlflows_route() -> Flask:
        app = Flask("probe")
        for path in log_batch.LOG_BATCH_PATHS:
            app.add_url_rule(path, handlers._log_batch.__name__, handlers._log_batch, methods=["POST"])
        return app

    on = app_with_mlflows_route()
    assert log_batch.install(on, {})
    assert on.before_request_funcs[None][0] is log_batch.seed_request_json
    view = on.view_functions[handlers._log_batch.__name__]
    assert view is not handlers._log_batch
    adapter = on.url_map.bind("localhost")
    for path in log_batch.LOG_BATCH_PATHS:
        assert adapter.match(path, method="POST")[0] == handlers._log_batch.__name__

    off = app_with_mlflows_route()
    assert not log_batch.install(off, {"MLFLOW_EXT_FAST_LOG_BATCH": "false"})
    assert off.view_functions[handlers._log_batch.__name__] is handlers._log_batch
    assert off.before_request_funcs[None][0] is log_batch.seed_request_json


def test_the_seeded_json_is_used_only_for_the_same_body():
    from flask import Flask, request

    from mlflow_ext.auth import guard

    app = Flask("probe")
    raw = b'{"run_id": "r1"}'
    document = {"run_id": "r1", "marker": True}  # not what Flask would decode: proves the seed is used
    token = guard._SHARED_BODY.set((raw, document))
    try:
        with app.test_request_context("/x", method="POST", data=raw, content_type="application/json"):
            log_batch.seed_request_json()
            assert request.get_json() is document
        with app.test_request_context(
            "/x", method="POST", data=b'{"run_id": "r2"}', content_type="application/json"
        ):
            log_batch.seed_request_json()
            assert request.get_json() == {"run_id": "r2"}
        with app.test_request_context("/x", method="POST", data=raw, content_type="text/plain"):
            log_batch.seed_request_json()
            assert request.get_json(silent=True) is None
    finally:
        guard._SHARED_BODY.reset(token)
