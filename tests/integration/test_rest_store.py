"""The client's REST store through a real platform server: MLflow picks it for http URIs, and a batch and
single metrics logged through it store the same rows as the same logged through MLflow's own RestStore
(``MLFLOW_EXT_FAST_CLIENT=false``), each into a run of its own."""

from __future__ import annotations

import math
import secrets
from typing import Any

import pytest

from mlflow_ext import rest_store
from tests.support.environ import patched_environ
from tests.support.services import Platform

pytestmark = pytest.mark.integration

NOW = 1_700_000_000_000
# Metrics logged one by one (log_metric): the edges a value can take.
SINGLES = [0.5, -0.0, 1e308, 5e-324, 7, 2**53, math.nan, math.inf, -math.inf, 1 / 3]


def _batch() -> tuple[list[Any], list[Any], list[Any]]:
    from mlflow.entities import Metric, Param, RunTag

    values = [0.5, -0.0, 1e308, 5e-324, 7, 2**53, math.nan, math.inf, -math.inf]
    metrics = [
        Metric(f"m{i % 4}-ключ", values[i % len(values)] if i % 3 else float(i) / 7, NOW + i, i // 4)
        for i in range(200)
    ]
    metrics.append(Metric("edge-ts", 1.25, 2**62, -(2**40)))
    params = [Param(f"p{i}", f"value {i} é") for i in range(10)] + [Param("empty", "")]
    tags = [RunTag("team", "🔑"), RunTag("t", "x" * 500)]
    return metrics, params, tags


def _stored(client: Any, run_id: str, keys: set[str]) -> dict[str, Any]:
    run = client.get_run(run_id)
    history = {
        key: sorted(
            ((m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run_id, key)),
        )
        for key in keys
    }
    latest = {key: repr(value) for key, value in run.data.metrics.items()}
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith(("mlflow.", "lineage."))}
    return {"history": history, "latest": latest, "params": run.data.params, "tags": tags}


def test_mlflow_picks_it_and_it_stores_what_mlflow_stores(platform: Platform) -> None:
    from mlflow.entities import Metric
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.tracking import MlflowClient

    with patched_environ({**platform.client_env(), "MLFLOW_EXT_FAST_CLIENT": "true"}):
        client = MlflowClient(tracking_uri=platform.tracking_uri)
        fast = client._tracking_client.store
        assert type(fast) is rest_store.FastRestStore
        experiment = client.create_experiment(f"fast-client-{secrets.token_hex(4)}")
        run_fast = client.create_run(experiment).info.run_id
        run_mlflow = client.create_run(experiment).info.run_id
        metrics, params, tags = _batch()
        assert rest_store.log_batch_body(run_fast, metrics, params, tags) is not None  # the fast path

        fast.log_batch(run_fast, metrics, params, tags)
        with patched_environ({"MLFLOW_EXT_FAST_CLIENT": "false"}):
            mlflow_store = rest_store.build(platform.tracking_uri)
        assert type(mlflow_store) is RestStore
        mlflow_store.log_batch(run_mlflow, metrics, params, tags)
        singles = [Metric(f"single-{i % 3}", value, NOW + i, i) for i, value in enumerate(SINGLES)]
        for metric in singles:
            assert rest_store.log_metric_body(run_fast, metric) is not None  # the fast path
            fast.log_metric(run_fast, metric)
            mlflow_store.log_metric(run_mlflow, metric)

        keys = {m.key for m in metrics + singles}
        ours, theirs = _stored(client, run_fast, keys), _stored(client, run_mlflow, keys)
    assert ours == theirs
    assert len(ours["history"]["m1-ключ"]) == 50
    assert ours["params"]["empty"] == "" and ours["tags"]["team"] == "🔑"
