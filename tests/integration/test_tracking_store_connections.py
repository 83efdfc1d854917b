"""The fast tracking store's own pool: no ping per write, writes that survive the database dropping every
pooled connection (what a PostgreSQL restart does) without an error reaching the client, and statements
prepared per connection that cost no write when the server's session does not hold them as the pool thinks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.services import SchemaCluster, mlflow_schema_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[SchemaCluster]:
    with mlflow_schema_cluster() as made:
        yield made


@pytest.fixture
def store(cluster: SchemaCluster, request) -> Iterator[Any]:
    from mlflow_ext.tracking_store import PostgresTrackingStore

    name = f"conn_{request.node.name[-20:].lower().replace('[', '_').replace(']', '')}"
    made = PostgresTrackingStore(cluster.copy(name), cluster.artifacts)
    made.database = name
    yield made
    made._hot_engine.dispose()
    made.engine.dispose()


def _drop_connections(cluster: SchemaCluster, database: str) -> int:
    """What a restart does to a pool: the server ends every session of ``database``."""
    assert database.isidentifier()  # the test's own name, safe in the statement
    out = cluster.pg.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    return int(out)


def test_the_hot_paths_pool_does_not_ping_mlflows_does(store):
    assert store._hot_engine is not store.engine
    assert store._hot_engine.pool._pre_ping is False
    assert store.engine.pool._pre_ping is True


def test_writes_after_the_database_dropped_every_pooled_connection_succeed_once(cluster, store):
    from mlflow.entities import Metric, Param, RunTag

    run_id = store.create_run(store.create_experiment("dropped"), "u", 0, [], "r").info.run_id
    # Several connections in the pool, as a busy worker has.
    barrier = threading.Barrier(3)

    def hold() -> None:
        with store._connection(autocommit=True) as (connection, _), connection.cursor() as cursor:
            barrier.wait(timeout=30)
            cursor.execute("SELECT 1")

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert store._hot_engine.pool.checkedin() >= 3

    writes = [
        lambda: store.log_metric(run_id, Metric("loss", 0.5, 1000, 1)),
        lambda: store.log_param(run_id, Param("lr", "0.1")),
        lambda: store.set_tag(run_id, RunTag("team", "a")),
        lambda: store.log_batch(run_id, [Metric("acc", 0.9, 1000, 1)], [Param("lr", "0.1")], []),
    ]
    for write in writes:
        assert _drop_connections(cluster, store.database) >= 1
        time.sleep(0.2)  # the sessions are gone before the write
        write()

    run = store.get_run(run_id)
    assert run.data.metrics == {"loss": 0.5, "acc": 0.9}
    assert run.data.params == {"lr": "0.1"}
    assert run.data.tags["team"] == "a"
    assert [m.value for m in store.get_metric_history(run_id, "loss")] == [0.5]  # written once


def _prepared_on_pool(store) -> set[str]:
    """The statements the server holds prepared for the (single) pooled connection of the hot paths."""
    with store._connection(autocommit=True) as (connection, _), connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {name for (name,) in cursor.fetchall()}


def test_single_writes_are_prepared_once_and_land_when_the_session_forgot_them(store):
    """log_metric, log_param and set_tag are prepared on each connection. A session that no longer holds
    them (a pooler's DISCARD ALL, a transaction pooler handing over another server) costs no write: it is
    run as plain SQL, and the store prepares no more."""
    from mlflow.entities import Metric, Param, RunTag

    run_id = store.create_run(store.create_experiment("prepared"), "u", 0, [], "r").info.run_id
    store.log_metric(run_id, Metric("loss", 0.5, 1000, 1))
    store.log_param(run_id, Param("lr", "0.1"))
    store.set_tag(run_id, RunTag("team", "a"))
    store.log_metric(run_id, Metric("loss", 0.4, 1001, 2))
    assert store._hot_engine.pool.checkedin() == 1
    assert {"mlflow_ext_log_metric", "mlflow_ext_log_param", "mlflow_ext_set_tag"} <= _prepared_on_pool(store)

    with store._connection(autocommit=True) as (connection, _), connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    store.log_metric(run_id, Metric("loss", 0.3, 1002, 3))
    store.log_param(run_id, Param("lr", "0.1"))
    store.set_tag(run_id, RunTag("team", "b"))

    assert store._prepares is False
    assert _prepared_on_pool(store) == set()
    run = store.get_run(run_id)
    assert run.data.metrics == {"loss": 0.3}
    assert run.data.params == {"lr": "0.1"}
    assert run.data.tags["team"] == "b"
    assert [m.value for m in store.get_metric_history(run_id, "loss")] == [0.5, 0.4, 0.3]


def test_a_session_that_already_holds_the_statement_costs_no_write(store):
    """Behind a transaction-pooling PgBouncer (with NullPool, each call a new client connection), a call
    can meet a server session where an earlier one prepared the statement: its PREPARE fails, nothing ran,
    and the write goes through as plain SQL."""
    from mlflow.entities import Metric

    run_id = store.create_run(store.create_experiment("held"), "u", 0, [], "r").info.run_id
    store.log_metric(run_id, Metric("loss", 0.5, 1000, 1))
    with store._connection(autocommit=True) as (_, prepared):
        prepared.clear()  # what a new client connection knows; the server session keeps its statement
    store.log_metric(run_id, Metric("loss", 0.4, 1001, 2))

    assert store._prepares is False
    assert [m.value for m in store.get_metric_history(run_id, "loss")] == [0.5, 0.4]
    assert store.get_run(run_id).data.metrics == {"loss": 0.4}


def test_the_generation_read_survives_the_database_dropping_its_pooled_connections(cluster):
    """The auth app's per-request read, on the driver's cursor: a dropped connection is read again once, on
    a fresh one; a second failure is raised (the request is refused, never served on a stale generation)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError

    from mlflow_ext.auth import store as auth_store

    name = "conn_generation"
    engine = create_engine(cluster.copy(name))
    auth_store.migrate(engine)
    ext = auth_store.ExtStore(engine, auth_store.generation_engine(engine))
    try:
        first = ext.generation()
        ext.bump_generation()
        # Several connections in the pool, as a busy worker has: after a restart, all of them are dead.
        held = [ext._generation_engine.raw_connection() for _ in range(3)]
        for connection in held:
            connection.close()
        assert ext._generation_engine.pool.checkedin() >= 3
        assert _drop_connections(cluster, name) >= 3
        time.sleep(0.2)
        assert ext.generation() == first + 1
        assert ext._generation_engine.pool.checkedin() >= 1  # the fresh connection went back to the pool

        # A database that refuses connections (down, restarting): raised as SQLAlchemy raises it, which
        # the app answers with a 503.
        down = auth_store.ExtStore(engine, create_engine(cluster.base.rsplit(":", 1)[0] + ":1/" + name))
        with pytest.raises(DBAPIError) as refused:
            down.generation()
        assert type(refused.value).__name__ == "OperationalError"

        cluster.pg.psql(f"ALTER TABLE {auth_store.state_table.name} RENAME TO moved", database=name)
        with pytest.raises(DBAPIError) as raised:
            ext.generation()
        assert not raised.value.connection_invalidated  # not a dropped connection: raised at once
    finally:
        engine.dispose()
        ext._generation_engine.dispose()
