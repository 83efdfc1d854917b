"""The client's REST store sends the log-batch body MLflow's RestStore sends, or leaves it to MLflow.

The reference is MLflow's own ``RestStore`` built by MLflow's builder. Both stores send the same random
batches to a small HTTP server on 127.0.0.1 started here, which records each request body; the parsed
bodies must be equal, and a batch one store refuses the other must refuse with the same error. The body
built here is also compared with ``message_to_json`` of the same ``LogBatch`` message directly, and the
fast path must really be the one taken for the batches it is meant for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlflow_ext import mlflow_internals, rest_store
from tests.support.environ import patched_environ
from tests.support.recording_http import RecordingServer, Request

LOG_BATCH_PATH = "/api/2.0/mlflow/runs/log-batch"
LOG_METRIC_PATH = "/api/2.0/mlflow/runs/log-metric"
NOW = 1_700_000_000_000
INT64 = st.integers(min_value=rest_store.INT64_MIN, max_value=rest_store.INT64_MAX)


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[str, list[Request]]]:
    """The recording server's URL and every request it got, in order."""
    with RecordingServer() as server:
        yield server.url, server.requests


@pytest.fixture(scope="module")
def server_url(recorder: tuple[str, list[Request]]) -> str:
    return recorder[0]


@pytest.fixture(scope="module")
def stores(recorder: tuple[str, list[Request]]) -> tuple[Any, Any, list[Request]]:
    url, bodies = recorder
    with patched_environ({"MLFLOW_EXT_FAST_CLIENT": "true"}):
        fast = rest_store.build(url)
    assert type(fast) is rest_store.FastRestStore
    return fast, mlflow_internals.mlflow_rest_store(url), bodies


def _outcome(store: Any, bodies: list[Request], batch: tuple[Any, ...], method: str = "log_batch") -> tuple:
    """What the store sent for ``batch`` (the arguments of ``method``: the parsed body), or the error it
    raised."""
    before = len(bodies)
    try:
        getattr(store, method)(*batch)
    except Exception as exc:
        assert len(bodies) == before, "a refused call was sent"
        return ("error", type(exc).__name__, str(exc))
    assert len(bodies) == before + 1
    request = bodies[-1]
    assert request.path == (LOG_BATCH_PATH if method == "log_batch" else LOG_METRIC_PATH)
    return ("sent", json.loads(request.body))


def _message_to_json(run_id: Any, metrics: Any, params: Any, tags: Any) -> Any:
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.utils.proto_json_utils import message_to_json

    message = LogBatch(
        metrics=[m.to_proto() for m in metrics],
        params=[p.to_proto() for p in params],
        tags=[t.to_proto() for t in tags],
        run_id=run_id,
    )
    return json.loads(message_to_json(message))


def _same_json(a: Any, b: Any) -> bool:
    """Equal JSON documents; -0.0 and 0.0 told apart, as a float's text tells them apart."""
    if isinstance(a, float) and isinstance(b, float):
        return (a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _metric(key: str, value: Any, timestamp: Any = NOW, step: Any = 0, **extra: Any) -> Any:
    from mlflow.entities import Metric

    return Metric(key, value, timestamp, step, **extra)


def _param(key: Any, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, value)


def _tag(key: Any, value: Any) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value)


VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),  # what metric functions return
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]),
    st.integers(min_value=-(2**53), max_value=2**53),
)
TEXT = st.text(max_size=12)  # any unicode but lone surrogates (those are in the unusual cases below)
METRICS = st.lists(st.builds(_metric, TEXT, VALUES, INT64, INT64), max_size=30)
PAIRS = st.lists(st.tuples(TEXT, TEXT), max_size=8)
BATCHES = st.tuples(
    TEXT,
    METRICS,
    PAIRS.map(lambda pairs: [_param(k, v) for k, v in pairs]),
    PAIRS.map(lambda pairs: [_tag(k, v) for k, v in pairs]),
)


@settings(max_examples=400, deadline=None)
@given(BATCHES)
def test_the_body_is_message_to_json_for_ordinary_batches(batch: tuple[Any, ...]) -> None:
    body = rest_store.log_batch_body(*batch)
    assert body is not None, "an ordinary batch left the fast path"
    assert _same_json(json.loads(body), _message_to_json(*batch))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=BATCHES)
def test_both_stores_send_the_same_body(stores: tuple[Any, Any, Any], batch: tuple[Any, ...]) -> None:
    fast, mlflow_store, bodies = stores
    ours, theirs = _outcome(fast, bodies, batch), _outcome(mlflow_store, bodies, batch)
    assert ours[0] == "sent"
    assert _same_json(ours, theirs), (ours, theirs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run_id=TEXT, metric=st.builds(_metric, TEXT, VALUES, INT64, INT64))
def test_both_stores_send_the_same_log_metric(stores: tuple[Any, Any, Any], run_id: str, metric: Any) -> None:
    fast, mlflow_store, bodies = stores
    assert rest_store.log_metric_body(run_id, metric) is not None, "an ordinary metric left the fast path"
    ours = _outcome(fast, bodies, (run_id, metric), "log_metric")
    theirs = _outcome(mlflow_store, bodies, (run_id, metric), "log_metric")
    assert ours[0] == "sent"
    assert _same_json(ours, theirs), (ours, theirs)


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        ("a string value", _metric("m", "1.5")),
        ("a boolean value", _metric("m", True)),
        ("a None step", _metric("m", 1.0, step=None)),
        ("a timestamp past int64", _metric("m", 1.0, timestamp=2**63)),
        ("a model id", _metric("m", 1.0, model_id="m-123")),
        ("a dataset", _metric("m", 1.0, dataset_name="d", dataset_digest="abc")),
        ("a lone surrogate in a key", _metric("m\ud800", 1.0)),
    ],
)
def test_unusual_metrics_go_to_mlflow(stores: tuple[Any, Any, Any], name: str, metric: Any) -> None:
    fast, mlflow_store, bodies = stores
    assert rest_store.log_metric_body("r" * 32, metric) is None
    ours = _outcome(fast, bodies, ("r" * 32, metric), "log_metric")
    assert _same_json(ours, _outcome(mlflow_store, bodies, ("r" * 32, metric), "log_metric")), name


def _unusual() -> list[tuple[str, tuple[Any, ...]]]:
    run = "r" * 32
    return [
        ("a value above 2**53", (run, [_metric("m", 2**53 + 1)], [], [])),
        ("a huge integer value", (run, [_metric("m", 10**400)], [], [])),
        ("a boolean value", (run, [_metric("m", True)], [], [])),
        ("a numpy float32", (run, [_metric("m", np.float32(0.1))], [], [])),
        ("a string value", (run, [_metric("m", "1.5")], [], [])),
        ("a None value", (run, [_metric("m", None)], [], [])),
        ("a float timestamp", (run, [_metric("m", 1.0, timestamp=1.5)], [], [])),
        ("a timestamp past int64", (run, [_metric("m", 1.0, timestamp=2**63)], [], [])),
        ("a step below int64", (run, [_metric("m", 1.0, step=-(2**63) - 1)], [], [])),
        ("a numpy int64 step", (run, [_metric("m", 1.0, step=np.int64(3))], [], [])),
        ("a None step", (run, [_metric("m", 1.0, step=None)], [], [])),
        ("a model id", (run, [_metric("m", 1.0, model_id="m-123")], [], [])),
        ("a dataset", (run, [_metric("m", 1.0, dataset_name="d", dataset_digest="abc")], [], [])),
        ("a metric's run id", (run, [_metric("m", 1.0, run_id=run)], [], [])),
        ("a None key", (run, [_metric(None, 1.0)], [], [])),  # type: ignore[arg-type]
        ("a lone surrogate in a key", (run, [_metric("m\ud800", 1.0)], [], [])),
        ("a lone surrogate in a param", (run, [], [_param("p", "\udfff")], [])),
        ("an integer param", (run, [], [_param("p", 1)], [])),
        ("a bytes tag", (run, [], [], [_tag("t", b"v")])),
        ("a param as a tag", (run, [], [], [_param("t", "v")])),
        ("a None run id", (None, [_metric("m", 1.0)], [], [])),
        ("metrics in a generator", (run, (m for m in [_metric("m", 1.0)]), [], [])),
    ]


@pytest.mark.parametrize(("name", "batch"), _unusual(), ids=[name for name, _ in _unusual()])
def test_unusual_batches_go_to_mlflow(
    stores: tuple[Any, Any, Any], name: str, batch: tuple[Any, ...]
) -> None:
    fast, mlflow_store, bodies = stores
    if name == "metrics in a generator":  # one pass each
        assert rest_store.log_batch_body(*batch) is None
        batch = (batch[0], [_metric("m", 1.0)], [], [])
        assert rest_store.log_batch_body(*batch) is not None
    else:
        assert rest_store.log_batch_body(*batch) is None
    assert _same_json(_outcome(fast, bodies, batch), _outcome(mlflow_store, bodies, batch))


def test_edges_are_rendered_as_mlflow_renders_them(stores: tuple[Any, Any, Any]) -> None:
    fast, mlflow_store, bodies = stores
    batch: tuple[Any, ...] = (
        "run-é",
        [
            _metric("nan", math.nan),
            _metric("inf", math.inf),
            _metric("-inf", -math.inf),
            _metric("zero", -0.0, timestamp=rest_store.INT64_MIN, step=rest_store.INT64_MAX),
            _metric("int", 2**53, timestamp=0, step=-1),
            _metric("ключ 🔑", 1e-320),
            _metric("", 0.1),
        ],
        [],
        [_tag("t", ""), _tag("é", '\x00\n"\\')],
    )
    body = rest_store.log_batch_body(*batch)
    assert body is not None
    sent = _outcome(fast, bodies, batch)
    assert _same_json(sent, _outcome(mlflow_store, bodies, batch))
    values = [m["value"] for m in sent[1]["metrics"]]
    assert values[:3] == ["NaN", "Infinity", "-Infinity"]
    assert sent[1]["metrics"][3]["timestamp"] == rest_store.INT64_MIN
    assert "params" not in sent[1]
    empty: tuple[Any, ...] = ("r", [], [], [])
    assert _same_json(_outcome(fast, bodies, empty), _outcome(mlflow_store, bodies, empty))
    assert json.loads(rest_store.log_batch_body(*empty) or "") == {"run_id": "r"}


def test_the_setting_turns_it_off(server_url: str) -> None:
    from mlflow.store.tracking.rest_store import RestStore

    with patched_environ({"MLFLOW_EXT_FAST_CLIENT": "false"}):
        store = rest_store.build(server_url)
    assert type(store) is RestStore
    with patched_environ({"MLFLOW_EXT_FAST_CLIENT": ""}):  # unset: on
        store = rest_store.build(server_url)
    assert type(store) is rest_store.FastRestStore
    assert rest_store.enabled({}) and not rest_store.enabled({"MLFLOW_EXT_FAST_CLIENT": "false"})


def test_built_as_mlflow_builds_its_store(server_url: str) -> None:
    env = {
        "MLFLOW_TRACKING_USERNAME": "u",
        "MLFLOW_TRACKING_PASSWORD": "p",
        "MLFLOW_TRACKING_INSECURE_TLS": "true",
    }
    with patched_environ(env):
        ours = rest_store.build(server_url).get_host_creds()
        theirs = mlflow_internals.mlflow_rest_store(server_url).get_host_creds()
    assert vars(ours) == vars(theirs)
    assert (ours.host, ours.username, ours.ignore_tls_verification) == (server_url, "u", True)


def test_mlflow_picks_it_for_http_and_https_only() -> None:
    from mlflow.tracking._tracking_service import utils

    registry = utils._tracking_store_registry._registry
    assert registry["http"] is rest_store.build
    assert registry["https"] is rest_store.build
    assert registry["databricks"].__module__.startswith("mlflow.")
    assert registry["file"].__module__.startswith("mlflow.")
