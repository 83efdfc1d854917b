"""The PostgreSQL tracking store against MLflow's own, differentially (hypothesis).

Two databases on one real PostgreSQL: MLflow's ``SqlAlchemyStore`` on one, ``PostgresTrackingStore`` on
the other. Each example creates the same runs in both, then runs the same random sequence of calls:
``log_metric``, ``log_param``, ``set_tag``, ``log_batch`` with valid and invalid values (bad names, NaN and
infinities, negative timestamps, too-long values, over-limit batches, duplicate params, a param logged
again with another value, the run-name tag), on active, finished, deleted and missing runs. Every answer
and every error (type, code, message) must match, and so must the rows of ``metrics``,
``latest_metrics``, ``params``, ``tags`` and ``runs`` and what ``get_run`` reads back. Then the same random
searches (``search_runs`` with metric, param, tag, attribute and dataset filters, orders, view types and
page sizes, paged to the end, bad ones too) must answer the same runs in the same order, the same page
tokens and the same errors. Run ids differ between the stores; they are compared through the run's index.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.support.services import mlflow_schema_databases

pytestmark = pytest.mark.integration
DB_USER = "mlflow"
EXAMPLES = int(os.environ.get("TRACKING_STORE_DIFF_EXAMPLES", "60"))
RUNS = 3  # per example: active, then finished or deleted as the sequence goes

KEYS = ["loss", "acc", "a/b", "x.y", "sp ace", "bad*key", "../up", "k" * 251, "mlflow.runName"]
PARAM_VALUES = ["1", "2", "", "v" * 6001, "élan"]
TAG_VALUES = ["t", "u", "", "w" * 8001, "run-name"]
FLOATS = [0.0, -0.0, 1.5, -2.0, 1e308, math.nan, math.inf, -math.inf, 3.0]
TIMESTAMPS = [0, 1, 2, 1_700_000_000_000, -1, 1.5]
STEPS = [0, 1, 2, -3]

# Mostly valid values on few keys, steps and timestamps, so that latest_metrics ties and overtakes often (NaN
# is stored as 0.0); any value (bad names, types, lengths) now and then, which fails the whole call.
valid_metric_st = st.tuples(
    st.sampled_from(["loss", "acc"]),
    st.sampled_from([0.0, math.nan, 1.5, -0.0, math.inf, -math.inf]),
    st.sampled_from([0, 1]),
    st.sampled_from([0, 1]),
)
metric_st = st.one_of(
    valid_metric_st,
    st.tuples(
        st.sampled_from(KEYS[:-1]),
        st.sampled_from([*FLOATS, "x", None, True]),
        st.sampled_from(TIMESTAMPS),
        st.sampled_from(STEPS),
    ),
)
valid_param_st = st.tuples(st.sampled_from(["lr", "depth"]), st.sampled_from(["1", "2"]))
param_st = st.one_of(valid_param_st, st.tuples(st.sampled_from(KEYS), st.sampled_from(PARAM_VALUES)))
valid_tag_st = st.tuples(st.sampled_from(["team", "note"]), st.sampled_from(["t", "u"]))
tag_st = st.one_of(valid_tag_st, st.tuples(st.sampled_from(KEYS), st.sampled_from(TAG_VALUES)))
run_st = st.one_of(st.just(0), st.integers(0, RUNS))  # RUNS: a run id no store knows


def _mostly_valid(valid: st.SearchStrategy, any_value: st.SearchStrategy, size: int) -> st.SearchStrategy:
    """Up to ``size`` valid entities, then at most one of any kind (which fails the whole batch)."""
    return st.lists(valid, max_size=size).flatmap(lambda ok: st.lists(any_value, max_size=1).map(ok.__add__))


batch_st = st.tuples(
    st.just("log_batch"),
    run_st,
    st.tuples(
        _mostly_valid(valid_metric_st, metric_st, 10),
        _mostly_valid(valid_param_st, param_st, 3),
        _mostly_valid(valid_tag_st, tag_st, 3),
    ),
)
# Writes weigh most; state changes and oversized batches come now and then.
operation_st = st.one_of(
    batch_st,
    batch_st,
    batch_st,
    st.tuples(st.just("log_metric"), run_st, valid_metric_st),
    st.tuples(st.just("log_metric"), run_st, metric_st),
    st.tuples(st.just("log_param"), run_st, param_st),
    st.tuples(st.just("set_tag"), run_st, tag_st),
    st.tuples(st.just("log_batch_over_limit"), run_st, st.sampled_from(["metrics", "params", "tags"])),
    st.tuples(st.just("finish"), run_st, st.none()),
    st.tuples(st.just("delete"), run_st, st.none()),
    st.tuples(st.just("restore"), run_st, st.none()),
)


FILTERS = [
    "",
    "metrics.loss > 0",
    "metrics.loss != 1.5",
    "metrics.acc <= 1.5 and params.lr = '1'",
    "params.lr = '1'",
    "tags.team = 't'",
    "tags.team LIKE 't%'",
    "attributes.status = 'FINISHED'",
    "attributes.run_name = 'run-1'",
    "attributes.start_time > 1000",
    "datasets.name = 'd'",
    "metrics.loss >",
]
ORDERS = [
    None,
    ["metrics.loss DESC"],
    ["metrics.acc"],
    ["params.lr DESC"],
    ["tags.team"],
    ["attributes.start_time"],
    ["attributes.run_name DESC"],
    ["metrics.loss", "params.depth DESC"],
    ["metrics.loss", "metrics.loss"],
    ["bogus.key"],
]
search_st = st.tuples(
    st.sampled_from(FILTERS),
    st.sampled_from(ORDERS),
    st.sampled_from([1, 2, 1000, 0]),
    st.sampled_from(["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]),
    st.booleans(),  # a bad experiment id along
)


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[Any, Any, Any, Any]]:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from mlflow_ext.tracking_store import PostgresTrackingStore

    with mlflow_schema_databases(("mlflow_ref", "mlflow_fast"), DB_USER) as (uris, artifacts):
        reference = SqlAlchemyStore(uris["mlflow_ref"], artifacts)
        fast = PostgresTrackingStore(uris["mlflow_fast"], artifacts)
        engines = (
            create_engine(uris["mlflow_ref"], poolclass=NullPool),
            create_engine(uris["mlflow_fast"], poolclass=NullPool),
        )
        yield reference, fast, *engines
        reference.engine.dispose()
        fast.engine.dispose()


def _entities(kind: str, items: list[tuple]) -> list[Any]:
    from mlflow.entities import Metric, Param, RunTag

    if kind == "metrics":
        return [Metric(key, value, timestamp, step) for key, value, timestamp, step in items]
    return [(Param if kind == "params" else RunTag)(key, value) for key, value in items]


def _call(store: Any, run_ids: list[str], operation: tuple) -> Any:
    from mlflow.entities import Metric, Param, RunStatus, RunTag

    name, index, args = operation
    run_id = run_ids[index]
    if name == "log_metric":
        return store.log_metric(run_id, Metric(*args))
    if name == "log_param":
        return store.log_param(run_id, Param(*args))
    if name == "set_tag":
        return store.set_tag(run_id, RunTag(*args))
    if name == "log_batch":
        metrics, params, tags = args
        return store.log_batch(
            run_id, _entities("metrics", metrics), _entities("params", params), _entities("tags", tags)
        )
    if name == "log_batch_over_limit":
        count = 1001 if args == "metrics" else 101
        many = [(f"k{i}", "v") for i in range(count)]
        entities = {"metrics": [], "params": [], "tags": []}
        entities[args] = (
            [Metric(f"m{i}", 1.0, 1, 0) for i in range(count)] if args == "metrics" else _entities(args, many)
        )
        return store.log_batch(run_id, entities["metrics"], entities["params"], entities["tags"])
    if name == "finish":
        return store.update_run_info(run_id, RunStatus.FINISHED, 5, None).status
    if name == "delete":
        return store.delete_run(run_id)
    if name == "restore":
        return store.restore_run(run_id)
    raise AssertionError(name)


def _outcome(store: Any, run_ids: list[str], operation: tuple) -> tuple:
    """What the call answered or raised, with run ids replaced by their index."""
    from mlflow.exceptions import MlflowException

    try:
        result: tuple = ("ok", _call(store, run_ids, operation))
    except MlflowException as exc:
        result = ("error", type(exc).__name__, exc.error_code, exc.message)
    except Exception as exc:  # any other failure must match too
        result = ("raised", type(exc).__name__, str(exc))
    return _normalized(result, run_ids)


def _normalized(value: Any, run_ids: list[str]) -> Any:
    if isinstance(value, str):
        for index, run_id in enumerate(run_ids):
            value = value.replace(run_id, f"<run {index}>")
        return value
    if isinstance(value, tuple | list):
        return type(value)(_normalized(item, run_ids) for item in value)
    return value


def _tables(engine: Any, run_ids: list[str]) -> dict[str, list[tuple]]:
    queries = {
        "metrics": "SELECT run_uuid, key, value, timestamp, step, is_nan FROM metrics",
        "latest_metrics": "SELECT run_uuid, key, value, timestamp, step, is_nan FROM latest_metrics",
        "params": "SELECT run_uuid, key, value FROM params",
        "tags": "SELECT run_uuid, key, value FROM tags",
        "runs": "SELECT run_uuid, name, status, end_time, lifecycle_stage FROM runs",
    }
    with engine.connect() as connection:
        return {
            table: sorted(
                _normalized(tuple(row), run_ids)
                for row in connection.execute(text(f"{sql} WHERE run_uuid = ANY(:ids)"), {"ids": run_ids})
            )
            for table, sql in queries.items()
        }


def _run_view(store: Any, run_id: str, run_ids: list[str]) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        run = store.get_run(run_id)
    except MlflowException as exc:
        return ("error", exc.error_code, _normalized(exc.message, run_ids))
    return (
        run.info.status,
        run.info.lifecycle_stage,
        _normalized(run.info.run_name, run_ids),
        sorted(
            (m.key, m.value if not math.isnan(m.value) else "nan", m.timestamp, m.step)
            for m in run.data._metric_objs
        ),
        sorted(run.data.params.items()),
        sorted((k, v) for k, v in run.data.tags.items()),
    )


def _searched(store: Any, experiment_id: str, search: tuple, run_ids: list[str]) -> list[Any]:
    """Every page of one search (at most 8), each as its runs (as ``_run_view`` sees them) and whether a
    next page token came; or the error."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    filter_string, order_by, max_results, view, bad_id = search
    experiments = [experiment_id, "not-an-id"] if bad_id else [experiment_id]
    pages: list[Any] = []
    token = None
    try:
        for _ in range(8):
            runs = store.search_runs(
                experiments, filter_string, getattr(ViewType, view), max_results, order_by, token
            )
            pages.append(([_entity_view(run, run_ids) for run in runs], runs.token))
            token = runs.token
            if token is None:
                break
    except MlflowException as exc:
        pages.append(("error", exc.error_code, _normalized(exc.message, run_ids)))
    return pages


def _entity_view(run: Any, run_ids: list[str]) -> Any:
    return (
        _normalized(run.info.run_id, run_ids),
        run.info.experiment_id is not None,
        run.info.user_id,
        run.info.start_time,
        run.info.end_time,
        run.info.artifact_uri.replace(run.info.run_id, "<run>").rsplit("/", 3)[-2:],
        run.info.status,
        run.info.lifecycle_stage,
        _normalized(run.info.run_name, run_ids),
        sorted(
            (m.key, m.value if not math.isnan(m.value) else "nan", m.timestamp, m.step)
            for m in run.data._metric_objs
        ),
        sorted(run.data.params.items()),
        sorted(_normalized(item, run_ids) for item in run.data.tags.items()),
        run.inputs.dataset_inputs,
        run.outputs.model_outputs if run.outputs else None,
    )


def _new_runs(store: Any, experiment_id: str) -> list[str]:
    runs = [
        store.create_run(experiment_id, "user", 1_000 + i, [], f"run-{i}").info.run_id for i in range(RUNS)
    ]
    return [*runs, uuid.uuid4().hex]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    operations=st.lists(operation_st, min_size=1, max_size=16),
    searches=st.lists(search_st, min_size=1, max_size=4),
)
# Ties on (step, timestamp, value) keep the stored latest metric: NaN is stored as 0.0, and -0.0 == 0.0.
@example(
    operations=[
        ("log_batch", 0, ([("loss", 0.0, 1, 1)], [], [])),
        ("log_batch", 0, ([("loss", math.nan, 1, 1), ("loss", -0.0, 1, 1)], [], [])),
        ("log_metric", 0, ("acc", math.nan, 1, 1)),
        ("log_batch", 0, ([("acc", 0.0, 1, 1), ("acc", 1.5, 0, 1)], [("lr", "1")], [("team", "t")])),
        ("log_batch", 0, ([("acc", 1.5, 0, 1)], [("lr", "2")], [("team", "u")])),
        ("log_batch", 1, ([("loss", 1.5, 1, 1)], [("lr", "1")], [("team", "t")])),
    ],
    searches=[
        ("metrics.loss != 1.5", ["metrics.loss DESC"], 1, "ALL", False),
        ("", ["metrics.acc"], 2, "ACTIVE_ONLY", False),
        ("datasets.name = 'd'", None, 1000, "ALL", False),
    ],
)
def test_the_fast_store_answers_and_writes_as_mlflow_does(stores, operations, searches):
    reference, fast, reference_engine, fast_engine = stores
    name = f"exp-{uuid.uuid4().hex}"
    reference_experiment = reference.create_experiment(name)
    fast_experiment = fast.create_experiment(name)
    reference_runs = _new_runs(reference, reference_experiment)
    fast_runs = _new_runs(fast, fast_experiment)
    fast_runs[-1] = reference_runs[-1]  # the same unknown id in both

    for step, operation in enumerate(operations):
        expected = _outcome(reference, reference_runs, operation)
        got = _outcome(fast, fast_runs, operation)
        assert got == expected, f"call {step}: {operation!r}"

    assert _tables(fast_engine, fast_runs) == _tables(reference_engine, reference_runs)
    for index in range(RUNS + 1):
        assert _run_view(fast, fast_runs[index], fast_runs) == _run_view(
            reference, reference_runs[index], reference_runs
        )
    for search in searches:
        assert _searched(fast, fast_experiment, search, fast_runs) == _searched(
            reference, reference_experiment, search, reference_runs
        ), f"search {search!r}"


def test_the_fast_store_is_the_servers_store_for_postgresql_unless_turned_off(stores, monkeypatch):
    """MLflow's server registry builds it for a postgresql URI; MLFLOW_EXT_FAST_TRACKING_STORE=false gives
    MLflow's own store."""
    from mlflow.server.handlers import TrackingStoreRegistryWrapper
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from mlflow_ext.tracking_store import PostgresTrackingStore

    _, fast, *_ = stores
    uri = fast.db_uri
    monkeypatch.delenv("MLFLOW_EXT_FAST_TRACKING_STORE", raising=False)
    built = TrackingStoreRegistryWrapper().get_store_builder(uri)(store_uri=uri, artifact_uri="/tmp/a")
    assert type(built) is PostgresTrackingStore
    built.engine.dispose()
    monkeypatch.setenv("MLFLOW_EXT_FAST_TRACKING_STORE", "false")
    built = TrackingStoreRegistryWrapper().get_store_builder(uri)(store_uri=uri, artifact_uri="/tmp/a")
    assert type(built) is SqlAlchemyStore
    built.engine.dispose()
