"""The PostgreSQL tracking store: log_batch(1000) with 4 clients, against MLflow's store and raw COPY.

One private PostgreSQL 15, three databases with MLflow's schema (copies of one template). Four client
processes, each with its own store and run (four training jobs), log batches of 1000 metrics (100 keys,
10 steps each) as fast as they can:

- ``PostgresTrackingStore`` (mlflow_ext.tracking_store, what the platform's server uses);
- MLflow's ``SqlAlchemyStore`` (what ``MLFLOW_EXT_FAST_TRACKING_STORE=false`` or a vanilla server uses);
- raw ``COPY`` of the same rows into ``metrics`` (no ``latest_metrics``, no checks): the physical limit.

Stores are called directly (no HTTP), so the ratios are the store's alone. Where the fast store's time goes
is printed from ``cProfile`` (one client, a few batches). Also the median latency of one ``log_metric``
(one client) through either store.
"""

from __future__ import annotations

import cProfile
import io
import multiprocessing
import os
import pstats
import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.services import mlflow_schema_databases

CLIENTS = 4
BATCH = 1000
KEYS = 100
BATCHES = int(os.environ.get("BENCH_TRACKING_STORE_BATCHES", "30"))  # per client
NOTE = (
    "tracking store: log_batch(1000), 4 client processes calling the store directly on one PostgreSQL 15; "
    "raw COPY writes the same metrics rows only (no latest_metrics, no checks)"
)


def _batch(index: int) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    steps = BATCH // KEYS
    return [
        Metric(f"metric_{k}", float(k * index) + 0.5, now, index * steps + s)
        for s in range(steps)
        for k in range(KEYS)
    ]


def _store(kind: str, uri: str, artifacts: str) -> Any:
    if kind == "mlflow":
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        return SqlAlchemyStore(uri, artifacts)
    from mlflow_ext.tracking_store import PostgresTrackingStore

    return PostgresTrackingStore(uri, artifacts)


def _copy(connection: Any, run_id: str, metrics: list[Any]) -> None:
    lines = "".join(f"{run_id}\t{m.key}\t{m.value}\t{m.timestamp}\t{m.step}\tf\n" for m in metrics)
    with connection.cursor() as cursor:
        cursor.copy_expert(
            "COPY metrics (run_uuid, key, value, timestamp, step, is_nan) FROM STDIN", io.StringIO(lines)
        )
    connection.commit()


def _client(kind: str, uri: str, artifacts: str, run_id: str, barrier: Any, results: Any) -> None:
    import gc

    gc.freeze()  # a client process of its own heap, as the server bench's clients (see _batch_client there)
    batches = [_batch(i) for i in range(BATCHES + 1)]
    if kind == "copy":
        import psycopg2

        connection = psycopg2.connect(uri.replace("postgresql+psycopg2://", "postgresql://"))

        def log(metrics: list[Any]) -> None:
            _copy(connection, run_id, metrics)
    else:
        store = _store(kind, uri, artifacts)

        def log(metrics: list[Any]) -> None:
            store.log_batch(run_id, metrics, [], [])

    log(batches[0])  # warm: connection, caches
    barrier.wait()
    started = time.perf_counter()
    for metrics in batches[1:]:
        log(metrics)
    results.put(time.perf_counter() - started)


def throughput(kind: str, uri: str, artifacts: str) -> float:
    """Metrics per second of CLIENTS processes, each on its own run."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    setup = SqlAlchemyStore(uri, artifacts)
    experiment = setup.create_experiment(f"bench-{kind}-{uuid.uuid4().hex[:8]}")
    runs = [setup.create_run(experiment, "bench", 0, [], f"client-{i}").info.run_id for i in range(CLIENTS)]
    setup.engine.dispose()
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(CLIENTS + 1), context.Queue()
    processes = [
        context.Process(target=_client, args=(kind, uri, artifacts, run, barrier, results)) for run in runs
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=300)
    started = time.perf_counter()
    for _ in processes:
        results.get(timeout=900)
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join(timeout=60)
    return CLIENTS * BATCHES * BATCH / elapsed


def _log_metric_p50_ms(kind: str, uri: str, artifacts: str, calls: int = 300) -> float:
    """Median latency of one log_metric, one client, on a run of its own."""
    import statistics

    from mlflow.entities import Metric

    store = _store(kind, uri, artifacts)
    run_id = store.create_run(
        store.create_experiment(f"latency-{kind}"), "bench", 0, [], "latency"
    ).info.run_id
    timings = []
    for i in range(calls + 10):
        started = time.perf_counter()
        store.log_metric(run_id, Metric("loss", 1.0 / (i + 1), int(time.time() * 1000), i))
        timings.append(time.perf_counter() - started)
    store.engine.dispose()
    return statistics.median(timings[10:]) * 1000


def _profile(uri: str, artifacts: str) -> str:
    """Where one client's time goes in the fast store (cumulative, top entries)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    setup = SqlAlchemyStore(uri, artifacts)
    run_id = setup.create_run(setup.create_experiment("bench-profile"), "bench", 0, [], "profile").info.run_id
    setup.engine.dispose()
    store = _store("fast", uri, artifacts)
    batches = [_batch(i) for i in range(5)]
    store.log_batch(run_id, batches[0], [], [])
    profiler = cProfile.Profile()
    profiler.enable()
    for metrics in batches[1:]:
        store.log_batch(run_id, metrics, [], [])
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(12)
    store.engine.dispose()
    return out.getvalue()


def run(results_dir: Path) -> list[dict]:
    kinds = ("fast", "mlflow", "copy")
    with mlflow_schema_databases(tuple(f"db_{kind}" for kind in kinds), "bench") as (uris, artifacts):
        measured: dict[str, float] = {}
        for kind in kinds:
            measured[kind] = throughput(kind, uris[f"db_{kind}"], artifacts)
            print(f"   {kind}: {measured[kind]:,.0f} metrics/s", flush=True)
        latency = {
            kind: _log_metric_p50_ms(kind, uris[f"db_{kind}"], artifacts) for kind in ("fast", "mlflow")
        }
        print(
            f"   log_metric p50: fast {latency['fast']:.2f} ms, MLflow's {latency['mlflow']:.2f} ms",
            flush=True,
        )
        print("   where the fast store's time goes (one client, 4 batches):", flush=True)
        print(_profile(uris["db_fast"], artifacts), flush=True)
    row = {"section": "tracking_store", "better": "higher", "note": NOTE}
    return [
        {
            **row,
            "measure": "log_batch(1000) metrics/s, 4 clients: fast store vs MLflow's SqlAlchemyStore",
            "platform": measured["fast"],
            "baseline": measured["mlflow"],
            "ratio": measured["fast"] / measured["mlflow"],
        },
        {
            **row,
            "measure": "log_batch(1000) metrics/s, 4 clients: fast store vs raw COPY (target >= 0.5x)",
            "platform": measured["fast"],
            "baseline": measured["copy"],
            "ratio": measured["fast"] / measured["copy"],
        },
        {
            **row,
            "measure": "log_metric p50 latency (ms), 1 client: fast store vs MLflow's SqlAlchemyStore",
            "platform": latency["fast"],
            "baseline": latency["mlflow"],
            "ratio": latency["mlflow"] / latency["fast"],
            "better": "lower",
        },
        {
            **row,
            "measure": "log_batch(1000) metrics/s, 4 clients: MLflow's SqlAlchemyStore vs raw COPY",
            "platform": measured["mlflow"],
            "baseline": measured["copy"],
            "ratio": measured["mlflow"] / measured["copy"],
        },
    ]
