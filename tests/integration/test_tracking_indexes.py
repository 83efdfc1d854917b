"""The tracking store's versioned indexes on a real PostgreSQL: ``migrate`` creates them once, the searches
they serve use them, and MLflow's own ``mlflow db upgrade`` still runs over a database that has them."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.pool import NullPool

from mlflow_ext import migrations, tracking_migrations
from tests.support.environ import patched_environ
from tests.support.services import VENV_BIN, Postgres, pgpass_file

pytestmark = pytest.mark.integration
DB_USER = "mlflow"
INDEXES = {
    "mlflow_ext_runs_experiment_start_time",
    "mlflow_ext_latest_metrics_key_value",
    "mlflow_ext_registered_model_tags_key_value",
}
# The MLflow revision before workspaces: its upgrade rebuilds the registry tables' keys.
OLD_MLFLOW_REVISION = "c8d9e0f1a2b3"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> Iterator[tuple[Postgres, str]]:
    pg = Postgres().start()
    try:
        password = secrets.token_hex(16)
        pg.psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{password}'")
        pgpass = pgpass_file(tmp_path_factory.mktemp("pgpass"), pg.port, DB_USER, password)
        with patched_environ({"PGPASSFILE": str(pgpass)}):
            yield pg, f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{pg.port}"
    finally:
        pg.stop()


def _database(postgres: tuple[Postgres, str], name: str) -> tuple[str, Engine]:
    pg, base = postgres
    pg.psql(f"CREATE DATABASE {name} OWNER {DB_USER}")
    uri = f"{base}/{name}"
    return uri, create_engine(uri, poolclass=NullPool)


def _indexes(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'mlflow_ext_%'")
        )
        return {row[0] for row in rows}


def _mlflow_schema(uri: str, tmp_path: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(uri, str(tmp_path / "artifacts")).engine.dispose()


def test_migrate_creates_the_indexes_and_a_second_run_changes_nothing(postgres, tmp_path):
    uri, engine = _database(postgres, "fresh")
    _mlflow_schema(uri, tmp_path)
    assert not _indexes(engine)
    first = tracking_migrations.migrate(engine)
    assert first["changed"] and first["after"] == migrations.head(tracking_migrations.SCHEMA)
    assert _indexes(engine) == INDEXES
    second = tracking_migrations.migrate(engine)
    assert not second["changed"] and second["before"] == second["after"] == first["after"]
    assert _indexes(engine) == INDEXES


def _seed(engine: Engine, runs: int, experiments: int) -> None:
    """Runs spread over experiments, 10 latest metrics each, written by SQL in one go."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
                "creation_time, last_update_time) SELECT e, 'exp-' || e, '/tmp/a', 'active', 0, 0 "
                "FROM generate_series(1, :n) e"
            ),
            {"n": experiments},
        )
        connection.execute(
            text(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                "SELECT md5(i::text), 'run-' || i, 'LOCAL', '', '', 'u', 'FINISHED', i, i + 1, '', 'active', "
                "'/tmp/a', 1 + i % :e FROM generate_series(1, :n) i"
            ),
            {"n": runs, "e": experiments},
        )
        connection.execute(
            text(
                "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "SELECT 'm' || k, random(), i, 0, false, md5(i::text) "
                "FROM generate_series(1, :n) i, generate_series(0, 9) k"
            ),
            {"n": runs},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


def _plans(uri: str, tmp_path: Path) -> dict[str, str]:
    """EXPLAIN of the statement that selects the runs, for a metric search and the UI's experiment page."""
    from mlflow.entities import ViewType
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(uri, str(tmp_path / "artifacts"))
    searches = {
        "metric": ("metrics.m3 > 0.5", ["metrics.m3 DESC"]),
        "experiment page": ("", ["attributes.start_time DESC"]),
    }
    plans = {}
    for name, (filter_string, order_by) in searches.items():
        seen: list[tuple[str, object]] = []

        def record(conn, cursor, statement, parameters, context, executemany, seen=seen) -> None:
            seen.append((statement, parameters))

        event.listen(store.engine, "before_cursor_execute", record)
        store.search_runs(["7"], filter_string, ViewType.ACTIVE_ONLY, 100, order_by)
        event.remove(store.engine, "before_cursor_execute", record)
        statement, parameters = next((s, p) for s, p in seen if "FROM runs" in s and "LIMIT" in s)
        connection = store.engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + statement, parameters)
                plans[name] = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            connection.close()
    store.engine.dispose()
    return plans


def test_searches_use_the_indexes_instead_of_scanning(postgres, tmp_path):
    uri, engine = _database(postgres, "searched")
    _mlflow_schema(uri, tmp_path)
    _seed(engine, runs=40_000, experiments=20)
    before = _plans(uri, tmp_path)
    assert "Seq Scan on runs" in before["experiment page"], before["experiment page"]
    tracking_migrations.migrate(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))
    after = _plans(uri, tmp_path)
    for name, plan in after.items():
        assert "Seq Scan on runs" not in plan, f"{name}:\n{plan}"
        assert "Seq Scan on latest_metrics" not in plan, f"{name}:\n{plan}"
        assert "mlflow_ext_" in plan, f"{name}:\n{plan}"


def test_mlflow_db_upgrade_runs_over_the_indexes(postgres, tmp_path):
    """A database at an older MLflow revision gets the indexes, then MLflow's own CLI upgrades it to head."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    from mlflow_ext import mlflow_internals

    uri, engine = _database(postgres, "old_schema")
    InitialBase.metadata.create_all(engine)  # what MLflow's revisions start from
    command.upgrade(_get_alembic_config(uri), OLD_MLFLOW_REVISION)
    tracking_migrations.migrate(engine)
    assert _indexes(engine) == INDEXES
    result = subprocess.run(
        [str(VENV_BIN / "mlflow"), "db", "upgrade", uri],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with engine.connect() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert revision == mlflow_internals.latest_tracking_revision()
    assert _indexes(engine) == INDEXES
    assert not tracking_migrations.migrate(engine)["changed"]
