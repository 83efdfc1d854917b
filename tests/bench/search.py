"""Search and the registry at scale: the platform's stores and indexes against vanilla MLflow, same rows.

One private PostgreSQL 15 with MLflow's schema. A fixture writes, with ``COPY``, 100,000 runs in 20
experiments (10 metrics, 10 params and 2 tags each; 2% deleted) and 5,000 registered models with 4 versions,
2 aliases and 2 tags each, plus a tag per version. That database is then cloned (``CREATE DATABASE ...
TEMPLATE``): the clone gets the platform's versioned indexes (``mlflow_ext.tracking_migrations``), the
original keeps MLflow's own. Both are analysed, so the planner knows either one's rows.

Measured side by side in this process, each call alternating between the two, with varied arguments:

- ``search_runs``, metric filter and order by that metric, 100 results (one experiment);
- the UI's experiment page: ``search_runs`` by ``attributes.start_time DESC``, ACTIVE_ONLY, 100 results;
- ``get_run``;
- ``search_registered_models`` by tag (``tags.team = '...'``);
- ``get_model_version_by_alias``.

Platform: ``PostgresTrackingStore`` (mlflow_ext.tracking_store) and ``PostgresRegistryStore``
(mlflow_ext.registry_store) on the indexed database; vanilla: MLflow's ``SqlAlchemyStore`` and
``SqlAlchemyModelRegistryStore`` on the other. Stores are called directly (no HTTP). For each measure the
slowest SQL statement of one call (caught with SQLAlchemy's ``before_cursor_execute``) is run again under
``EXPLAIN (ANALYZE, BUFFERS)`` on either database and printed,
so where the time goes is visible, with a profile of one platform call.

Last, what the indexes cost: ``log_batch(1000)`` with 4 clients through the fast store on either database.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.bench.tracking_store import throughput
from tests.support.services import mlflow_schema_cluster

RUNS = int(os.environ.get("BENCH_SEARCH_RUNS", "100000"))
EXPERIMENTS = 20
KEYS = 10
MODELS = int(os.environ.get("BENCH_SEARCH_MODELS", "5000"))
VERSIONS = 4
TEAMS = 25
CALLS = int(os.environ.get("BENCH_SEARCH_CALLS", "40"))  # per search and side; lookups 5 times as many
WORKSPACE = "default"
NOTE = (
    "search: 100k runs (20 experiments, 10 metrics + 10 params each), 5,000 models x 4 versions, on one "
    "PostgreSQL 15; platform = fast store + versioned indexes, vanilla = MLflow's stores and indexes only"
)


# --- the data set ---------------------------------------------------------------------------------------


def _copy(dsn: str, table: str, columns: str, text: str) -> None:
    import psycopg2

    started = time.perf_counter()
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        # The rows are consistent by construction: skip the per-row foreign-key triggers (superuser only).
        cursor.execute("SET session_replication_role = replica")
        cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", io.StringIO(text))
        rows = cursor.rowcount
    connection.close()
    print(f"   {table}: {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)


def _copy_all(dsn: str, plan: Sequence[tuple[str, str, Iterator[str]]], parallel: int) -> None:
    """COPY each table on a connection of its own, ``parallel`` at a time (foreign keys: parents first)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(parallel) as pool:
        for future in [
            pool.submit(_copy, dsn, table, columns, "".join(lines)) for table, columns, lines in plan
        ]:
            future.result()


def seed(dsn: str, artifacts: str) -> dict[str, Any]:
    """Write the data set with COPY; return what the measures draw their arguments from."""
    import psycopg2

    rng = random.Random(15)
    now = int(time.time() * 1000)
    experiments = list(range(1, EXPERIMENTS + 1))
    run_ids = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(RUNS)]
    run_experiment = [experiments[i % EXPERIMENTS] for i in range(RUNS)]
    start = [now - (RUNS - i) * 1000 for i in range(RUNS)]
    deleted = {i for i in range(RUNS) if rng.random() < 0.02}
    values = [[rng.random() for _ in range(KEYS)] for _ in range(RUNS)]
    models = [f"model-{i:05d}" for i in range(MODELS)]
    ws = WORKSPACE
    parents: list[tuple[str, str, Iterator[str]]] = [
        (
            "experiments",
            "experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time, "
            "workspace",
            (f"{e}\tbench-{e}\t{artifacts}/{e}\tactive\t{now}\t{now}\t{ws}\n" for e in experiments),
        ),
        (
            "registered_models",
            "name, creation_time, last_updated_time, description, workspace",
            (f"{m}\t{now}\t{now}\tbench model\t{ws}\n" for m in models),
        ),
    ]
    runs = [
        (
            "runs",
            "run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time, "
            "end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time",
            (
                f"{r}\trun-{i}\tLOCAL\ttrain.py\t\tbench\tFINISHED\t{start[i]}\t{start[i] + 60000}\t\t"
                f"{'deleted' if i in deleted else 'active'}\t{artifacts}/{run_experiment[i]}/{r}/artifacts\t"
                f"{run_experiment[i]}\t{start[i] + 90000 if i in deleted else chr(92) + 'N'}\n"
                for i, r in enumerate(run_ids)
            ),
        ),
        (
            "model_versions",
            "name, version, creation_time, last_updated_time, description, user_id, current_stage, source, "
            "run_id, status, storage_location, workspace",
            (
                f"{m}\t{v}\t{now}\t{now}\t\tbench\tNone\truns:/{run_ids[(i * VERSIONS + v) % RUNS]}/model\t"
                f"{run_ids[(i * VERSIONS + v) % RUNS]}\tREADY\t{artifacts}/models/{m}/{v}\t{ws}\n"
                for i, m in enumerate(models)
                for v in range(1, VERSIONS + 1)
            ),
        ),
        (
            "registered_model_tags",
            "name, key, value, workspace",
            (
                line
                for i, m in enumerate(models)
                for line in (f"{m}\tteam\tteam-{i % TEAMS:02d}\t{ws}\n", f"{m}\towner\tu{i % 300}\t{ws}\n")
            ),
        ),
    ]
    children = [
        *(
            (
                table,
                "run_uuid, key, value, timestamp, step, is_nan",
                (
                    f"{r}\tm{k}\t{values[i][k]!r}\t{start[i] + 1000}\t0\tf\n"
                    for i, r in enumerate(run_ids)
                    for k in range(KEYS)
                ),
            )
            for table in ("metrics", "latest_metrics")
        ),
        (
            "params",
            "run_uuid, key, value",
            (f"{r}\tp{k}\t{(i * 7 + k) % 97}\n" for i, r in enumerate(run_ids) for k in range(KEYS)),
        ),
        (
            "tags",
            "run_uuid, key, value",
            (
                line
                for i, r in enumerate(run_ids)
                for line in (f"{r}\tmlflow.runName\trun-{i}\n", f"{r}\tmlflow.user\tbench\n")
            ),
        ),
        (
            "registered_model_aliases",
            "name, alias, version, workspace",
            (
                line
                for m in models
                for line in (f"{m}\tchampion\t{VERSIONS - 1}\t{ws}\n", f"{m}\tchallenger\t{VERSIONS}\t{ws}\n")
            ),
        ),
        (
            "model_version_tags",
            "name, version, key, value, workspace",
            (f"{m}\t{v}\tvalidation\tpassed\t{ws}\n" for m in models for v in range(1, VERSIONS + 1)),
        ),
    ]
    _copy_all(dsn, parents, 1)
    _copy_all(dsn, runs, 1)
    # The big tables side by side: each COPY is one backend, bound by index upkeep more than by parsing.
    _copy_all(dsn, children, 2)
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT setval('experiments_experiment_id_seq', %s)", (EXPERIMENTS,))
    connection.close()
    live = [r for i, r in enumerate(run_ids) if i not in deleted]
    return {"experiments": experiments, "runs": live, "models": models}


@contextlib.contextmanager
def seeded_databases(
    user: str = "bench",
) -> Iterator[tuple[dict[str, str], str, float, dict[str, Any]]]:
    """Two databases with the same rows: ``vanilla`` (MLflow's indexes), ``platform`` (plus ours)."""
    from sqlalchemy import create_engine

    from mlflow_ext import tracking_migrations

    with mlflow_schema_cluster(user) as cluster:
        started = time.perf_counter()
        picks = seed(cluster.superuser_uri(), cluster.artifacts)
        uris = {name: cluster.copy(name) for name in ("vanilla", "platform")}
        engine = create_engine(uris["platform"])
        report = tracking_migrations.migrate(engine)
        engine.dispose()
        for name in uris:
            cluster.pg.psql("VACUUM ANALYZE", database=name)
        seconds = time.perf_counter() - started
        print(f"   seeded both databases in {seconds:.1f} s; indexes: {report}", flush=True)
        yield uris, cluster.artifacts, seconds, picks


# --- the measures ---------------------------------------------------------------------------------------


class Statements:
    """Every SQL statement an engine runs while active, with its parameters and duration."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.seen: list[tuple[float, str, Any]] = []
        self.active = False

    def __enter__(self) -> Statements:
        from sqlalchemy import event

        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        self.seen = []
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._before)
        event.remove(self.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.seen.append((time.perf_counter() - conn.info.pop("bench_started"), statement, parameters))

    def slowest(self) -> tuple[float, str, Any]:
        return max(self.seen, key=lambda item: item[0])


def explain(engine: Any, statement: str, parameters: Any) -> list[str]:
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.rollback()
        connection.close()


def summary(plan: list[str]) -> str:
    """The plan in a line: execution time, scans and the nodes that matter."""
    scans = []
    for line in plan:
        text = line.strip().lstrip("-> ").strip()
        if text.startswith(
            ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Sort ", "Top-N")
        ):
            scans.append(text.split("  (")[0])
    total = next((line for line in plan if line.startswith("Execution Time")), "")
    return f"{total}; " + ", ".join(dict.fromkeys(scans))


def _profile(call: Callable[[random.Random], Any], seed_: int) -> str:
    """Where one call's time goes in Python (cumulative, top entries)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    call(random.Random(seed_))
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(14)
    return out.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    name: str, calls: dict[str, Callable[[random.Random], Any]], engines: dict[str, Any], count: int
) -> dict[str, Any]:
    """Alternate the sides on the same arguments; then one traced call per side and its slowest statement."""
    timings: dict[str, list[float]] = {side: [] for side in calls}
    for call in calls.values():  # warm: connections, caches
        for seed_ in range(3):
            call(random.Random(-seed_))
    for i in range(count):
        sides = list(calls) if i % 2 else list(reversed(calls))
        for side in sides:
            rng = random.Random(i)
            started = time.perf_counter()
            calls[side](rng)
            timings[side].append((time.perf_counter() - started) * 1000)
    out: dict[str, Any] = {"name": name, "profile": _profile(calls["platform"], count + 2)}
    for side, values in timings.items():
        out[side] = {"p50": statistics.median(values), "p95": percentile(values, 0.95)}
        with Statements(engines[side]) as statements:
            calls[side](random.Random(count + 1))
        seconds, statement, parameters = statements.slowest()
        plan = explain(engines[side], statement, parameters)
        out[side]["plan"] = plan
        out[side]["statements"] = len(statements.seen)
        out[side]["slowest_ms"] = seconds * 1000
        out[side]["summary"] = summary(plan)
    print(
        f"   {name}: platform p50 {out['platform']['p50']:.1f} ms p95 {out['platform']['p95']:.1f} ms; "
        f"vanilla p50 {out['vanilla']['p50']:.1f} ms p95 {out['vanilla']['p95']:.1f} ms",
        flush=True,
    )
    print("     where one platform call's time goes:", flush=True)
    print(out["profile"], flush=True)
    for side in calls:
        print(
            f"     {side}: {out[side]['statements']} statements, slowest {out[side]['slowest_ms']:.1f} ms; "
            "EXPLAIN (ANALYZE, BUFFERS):",
            flush=True,
        )
        for line in out[side]["plan"][:80]:
            print(f"       {line}", flush=True)
    return out


def run(results_dir: Path) -> list[dict]:
    from mlflow.entities import ViewType
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as SqlAlchemyModelRegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from mlflow_ext.registry_store import PostgresRegistryStore
    from mlflow_ext.tracking_store import PostgresTrackingStore

    with seeded_databases() as (uris, artifacts, seed_seconds, picks):
        tracking = {
            "platform": PostgresTrackingStore(uris["platform"], artifacts),
            "vanilla": SqlAlchemyStore(uris["vanilla"], artifacts),
        }
        registry = {
            "platform": PostgresRegistryStore(uris["platform"]),
            "vanilla": SqlAlchemyModelRegistryStore(uris["vanilla"]),
        }
        experiments = [str(e) for e in picks["experiments"]]

        def by_metric(store: Any) -> Callable[[random.Random], Any]:
            def call(rng: random.Random) -> Any:
                key, threshold = f"m{rng.randrange(KEYS)}", round(rng.uniform(0.1, 0.9), 2)
                return store.search_runs(
                    [rng.choice(experiments)],
                    f"metrics.{key} > {threshold}",
                    ViewType.ACTIVE_ONLY,
                    100,
                    [f"metrics.{key} DESC"],
                )

            return call

        def experiment_page(store: Any) -> Callable[[random.Random], Any]:
            def call(rng: random.Random) -> Any:
                return store.search_runs(
                    [rng.choice(experiments)], "", ViewType.ACTIVE_ONLY, 100, ["attributes.start_time DESC"]
                )

            return call

        def get_run(store: Any) -> Callable[[random.Random], Any]:
            return lambda rng: store.get_run(rng.choice(picks["runs"]))

        def by_tag(store: Any) -> Callable[[random.Random], Any]:
            return lambda rng: store.search_registered_models(
                f"tags.team = 'team-{rng.randrange(TEAMS):02d}'"
            )

        def by_alias(store: Any) -> Callable[[random.Random], Any]:
            return lambda rng: store.get_model_version_by_alias(
                rng.choice(picks["models"]), rng.choice(("champion", "challenger"))
            )

        tracking_engines = {side: store.engine for side, store in tracking.items()}
        registry_engines = {side: store.engine for side, store in registry.items()}
        measures = [
            (
                "search_runs, metric filter + order by metric, 100 results",
                "search",
                by_metric,
                tracking,
                tracking_engines,
            ),
            (
                "UI experiment page (search_runs by start_time DESC, 100)",
                "search",
                experiment_page,
                tracking,
                tracking_engines,
            ),
            ("get_run", "lookup", get_run, tracking, tracking_engines),
            ("search_registered_models by tag", "registry", by_tag, registry, registry_engines),
            ("get_model_version_by_alias", "registry", by_alias, registry, registry_engines),
        ]
        rows = []
        # The seed's and the imports' objects out of the collector's way, as a preloaded server would:
        # otherwise a full collection of the bench's own heap lands on a random call of either side.
        gc.collect()
        gc.freeze()
        for label, kind, make, stores, engines in measures:
            count = CALLS if kind == "search" else 5 * CALLS
            result = measure(label, {side: make(store) for side, store in stores.items()}, engines, count)
            target = "p95 <= 300 ms" if kind == "search" else "p95 <= 50 ms"
            platform, vanilla = result["platform"], result["vanilla"]
            rows.append(
                {
                    "section": "search",
                    "measure": f"{label}: p95 ms, platform vs vanilla (target {target}, >= 2x)",
                    "platform": platform["p95"],
                    "baseline": vanilla["p95"],
                    "ratio": vanilla["p95"] / platform["p95"],
                    "better": "lower",
                    "note": NOTE,
                }
            )
            print(
                f"     p50 {platform['p50']:.1f} vs {vanilla['p50']:.1f} ms; slowest statement: platform "
                f"{platform['summary']} | vanilla {vanilla['summary']}",
                flush=True,
            )
        for store in [*tracking.values(), *registry.values()]:
            store.engine.dispose()
        # What the indexes cost: the latest_metrics one turns each latest-value update into an index write.
        ingest = {side: throughput("fast", uri, artifacts) for side, uri in uris.items()}
        print(
            f"   log_batch(1000), 4 clients, fast store: {ingest['platform']:,.0f} metrics/s with the search "
            f"indexes, {ingest['vanilla']:,.0f} without",
            flush=True,
        )
        rows.append(
            {
                "section": "search",
                "measure": "log_batch(1000) metrics/s, 4 clients, fast store: search indexes vs none",
                "platform": ingest["platform"],
                "baseline": ingest["vanilla"],
                "ratio": ingest["platform"] / ingest["vanilla"],
                "better": "higher",
                "note": NOTE,
            }
        )
    print(f"   seed: {RUNS:,} runs and {MODELS:,} models in {seed_seconds:.1f} s", flush=True)
    return rows
