"""The log-metric front's own pieces: the metric it builds is MLflow's, decisions live for one
generation, and only plainly well-formed requests are taken."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlflow_ext.auth import guard, log_metric

NOW = 1_700_000_000_000
WELL_FORMED = {"run_id": "r1", "key": "loss", "value": 0.5, "timestamp": NOW, "step": 3}


def mlflow_metric(document: dict[str, Any]) -> Any:
    """What MLflow's log-metric handler hands the store: ``ParseDict`` into ``LogMetric``, then ``Metric``."""
    from mlflow.entities import Metric
    from mlflow.protos.service_pb2 import LogMetric
    from mlflow.utils.proto_json_utils import parse_dict

    message = LogMetric()
    parse_dict(document, message)
    return Metric(message.key, message.value, message.timestamp, message.step, run_id=message.run_id or None)


@pytest.mark.parametrize(
    "document",
    [
        WELL_FORMED,
        {"run_id": "r1", "key": "acc", "value": 3, "timestamp": 0},
        {**WELL_FORMED, "value": -(2**53), "step": -(2**63)},
        {**WELL_FORMED, "key": "a/b.c-d e", "timestamp": 2**63 - 1},
        {**WELL_FORMED, "run_uuid": "r1"},  # as MLflow's client sends it
    ],
)
def test_a_well_formed_body_gives_mlflows_metric(document):
    run_id, metric = log_metric.parse(document)
    assert run_id == document["run_id"]
    assert metric == mlflow_metric(document)
    assert (metric.run_id, metric.model_id, metric.dataset_name) == (document["run_id"], None, None)


@pytest.mark.parametrize(
    "document",
    [
        [WELL_FORMED],
        {k: v for k, v in WELL_FORMED.items() if k != "run_id"},
        {**WELL_FORMED, "run_id": ""},
        {**WELL_FORMED, "run_id": 7},
        {k: v for k, v in WELL_FORMED.items() if k != "run_id"} | {"run_uuid": "r1"},
        {**WELL_FORMED, "run_uuid": "r2"},
        {**WELL_FORMED, "run_uuid": None},
        {**WELL_FORMED, "model_id": "m-1"},
        {**WELL_FORMED, "dataset_name": "d", "dataset_digest": "x"},
        {**WELL_FORMED, "unit": "s"},
        {**WELL_FORMED, "value": True},
        {**WELL_FORMED, "value": "NaN"},
        {**WELL_FORMED, "value": 2**64},
        {**WELL_FORMED, "timestamp": 1.0},
        {**WELL_FORMED, "step": 2**63},
        {**WELL_FORMED, "key": ""},
        {k: v for k, v in WELL_FORMED.items() if k != "timestamp"},
    ],
)
def test_anything_else_is_left_to_mlflow(document):
    assert log_metric.parse(document) is None


def test_a_decision_lives_for_its_generation_only():
    decisions = log_metric.Decisions()
    decisions.record(4, "ann", "r1")
    assert decisions.allows(4, "ann", "r1")
    assert not decisions.allows(4, "ann", "r2") and not decisions.allows(4, "bob", "r1")
    assert not decisions.allows(5, "ann", "r1")
    decisions.record(3, "bob", "r1")  # decided under an older generation: never used
    assert not decisions.allows(3, "bob", "r1") and not decisions.allows(4, "bob", "r1")
    decisions.record(5, "bob", "r1")
    assert decisions.allows(5, "bob", "r1") and not decisions.allows(5, "ann", "r1")


def test_decisions_are_bounded_oldest_first():
    decisions = log_metric.Decisions(limit=2)
    for run in ("r1", "r2", "r3"):
        decisions.record(1, "ann", run)
    assert [decisions.allows(1, "ann", run) for run in ("r1", "r2", "r3")] == [False, True, True]


def _scope(headers: list[tuple[bytes, bytes]], client: str = "127.0.0.1") -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/x", "headers": headers, "client": (client, 5000)}


BASIC = (b"authorization", b"Basic YW5uOnB3")
JSON = (b"content-type", b"application/json")


@pytest.fixture
def shared_body():
    token = guard._SHARED_BODY.set((json.dumps(WELL_FORMED).encode(), WELL_FORMED))
    yield
    guard._SHARED_BODY.reset(token)


def test_an_eligible_request_names_the_client_behind_a_trusted_proxy(shared_body):
    request = log_metric.eligible(_scope([BASIC, JSON, (b"x-forwarded-for", b"10.1.2.3")]), ["127.0.0.1"])
    assert request is not None
    assert (request.authorization, request.address, request.run_id) == ("Basic YW5uOnB3", "10.1.2.3", "r1")
    assert log_metric.eligible(_scope([BASIC, JSON], client="10.9.9.9"), ["127.0.0.1"]).address == "10.9.9.9"


@pytest.mark.parametrize(
    "headers",
    [
        [JSON],  # no credentials: Flask answers 401 (or single sign-on)
        [BASIC, BASIC, JSON],  # Flask would see the two joined
        [BASIC, JSON, JSON],
        [BASIC, JSON, (b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-for", b"10.0.0.2")],
        [BASIC, (b"content-type", b"text/plain")],
        [BASIC],
    ],
)
def test_other_headers_are_left_to_flask(shared_body, headers):
    assert log_metric.eligible(_scope(headers), ["127.0.0.1"]) is None


def test_without_the_guards_body_the_request_is_left_to_flask():
    assert log_metric.eligible(_scope([BASIC, JSON]), ["127.0.0.1"]) is None


def test_the_setting_turns_it_off():
    assert log_metric.enabled({})
    assert not log_metric.enabled({"MLFLOW_EXT_FAST_LOG_METRIC": "false"})
