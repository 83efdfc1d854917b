"""Versioned schemas of mlflow_ext's own tables (auth, bridge outbox) on a real PostgreSQL: a fresh database
reaches head, a database made by the old ``create_all`` is adopted with its rows, the models and the
revisions agree, and two concurrent ``mlflow-ext server migrate`` calls migrate once."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.pool import NullPool

from mlflow_ext import migrations
from mlflow_ext.auth import store
from mlflow_ext.bridge import outbox
from mlflow_ext.pglock import advisory_lock
from mlflow_ext.server import MIGRATION_LOCK_ID
from tests.support.services import VENV_BIN, Postgres, pgpass_file

pytestmark = pytest.mark.integration
SCHEMAS = {"auth": store, "bridge": outbox}
DB_USER = "mlflow"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> Iterator[tuple[Postgres, Path]]:
    pg = Postgres().start()
    try:
        password = secrets.token_hex(16)
        pg.psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{password}'")
        yield pg, pgpass_file(tmp_path_factory.mktemp("pgpass"), pg.port, DB_USER, password)
    finally:
        pg.stop()


def _database(postgres: tuple[Postgres, Path], monkeypatch) -> tuple[str, Engine]:
    pg, pgpass = postgres
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    name = f"db_{secrets.token_hex(4)}"
    pg.psql(f"CREATE DATABASE {name} OWNER {DB_USER}")
    uri = f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{pg.port}/{name}"
    return uri, create_engine(uri, poolclass=NullPool)


def _rows(engine: Engine, module) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {
            table.name: sorted(tuple(row) for row in conn.execute(select(table)))
            for table in module.metadata.sorted_tables
        }


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_a_fresh_database_reaches_head_and_a_second_run_changes_nothing(postgres, monkeypatch, name):
    module = SCHEMAS[name]
    _, engine = _database(postgres, monkeypatch)
    first = module.migrate(engine)
    assert first == {
        "before": None,
        "after": migrations.head(module.SCHEMA),
        "stamped": False,
        "changed": True,
    }
    # The baseline also writes the one row the feature reads before anything else.
    assert len(_rows(engine, module)[module.metadata.sorted_tables[0].name]) <= 1
    state = store.state_table if module is store else outbox.meta_table
    with engine.connect() as conn:
        assert conn.execute(select(state.c.schema_version)).scalar() == module.SCHEMA_VERSION
    second = module.migrate(engine)
    assert second["changed"] is False and second["before"] == second["after"] == first["after"]


def _populate_the_old_way(engine: Engine, module) -> None:
    """What the releases before versioned schemas did (``create_all`` and the state row), plus user data."""
    module.metadata.create_all(engine)
    now = 1_700_000_000_000
    with engine.begin() as conn:
        if module is store:
            conn.execute(insert(store.state_table).values(id=1, generation=7, schema_version=1))
        else:
            conn.execute(insert(outbox.meta_table).values(id=1, schema_version=1, created_at=now))
    if module is store:
        ext = store.ExtStore(engine)
        ext.create_token("ci-bot", "deploy", "admin", None)
        ext.grant_right("alice", "promote", "fraud-model", "admin")
        ext.add_service_account("ci-bot", "admin", "CI")
        ext.record_failure("user:mallory", threshold=5, window_ms=60_000, lockout_ms=60_000, at_ms=now)
    else:
        with engine.begin() as conn:
            conn.execute(insert(outbox.deliveries_table).values(delivery_id="d-1", received_at=now))
            conn.execute(
                insert(outbox.subjects_table).values(
                    key='["alias","m","production"]', kind="alias", model="m", value="3", generation=1,
                    updated_at=now,
                )
            )  # fmt: skip
            conn.execute(
                insert(outbox.outbox_table).values(
                    idempotency_key="k#1@deploy-m", subject='["alias","m","production"]', generation=1,
                    event="model_version_alias.created", model="m", version="3", alias="production",
                    pipeline="deploy-m", variables="{}", source="webhook", created_at=now, updated_at=now,
                    status="parked", attempts=5, next_attempt_at=now, last_error="GoCD said 422",
                )
            )  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_a_database_made_by_create_all_is_stamped_with_every_row_kept(postgres, monkeypatch, name):
    module = SCHEMAS[name]
    _, engine = _database(postgres, monkeypatch)
    _populate_the_old_way(engine, module)
    before = _rows(engine, module)
    assert sum(len(rows) for rows in before.values()) >= 4

    report = module.migrate(engine)

    assert report["stamped"] is True and report["changed"] is True
    assert report["before"] is None and report["after"] == migrations.head(module.SCHEMA)
    assert _rows(engine, module) == before
    assert module.migrate(engine)["changed"] is False


def test_a_partial_schema_is_refused_without_touching_it(postgres, monkeypatch):
    _, engine = _database(postgres, monkeypatch)
    store.tokens_table.create(engine)
    with pytest.raises(Exception, match="mlflow_ext_auth_state") as refused:
        store.migrate(engine)
    assert "restore it from a backup" in str(refused.value)
    with engine.connect() as conn:
        tables = set(
            conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname='public'")).scalars()
        )
    assert tables == {"mlflow_ext_tokens"}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_models_and_the_revisions_agree(postgres, monkeypatch, name):
    """A model changed without a revision (or the reverse) shows as an autogenerate diff: it must be empty."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    module = SCHEMAS[name]
    _, engine = _database(postgres, monkeypatch)
    module.migrate(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_name": migrations.include_name(module.SCHEMA),
                "compare_type": True,
                "version_table": module.SCHEMA.version_table,
            },
        )
        assert compare_metadata(context, module.metadata) == []


def _server_env_file(directory: Path, tracking_uri: str, auth_uri: str, pgpass: Path) -> Path:
    path = directory / "server.env"
    values = {
        "MLFLOW_BACKEND_STORE_URI": tracking_uri,
        "MLFLOW_EXT_AUTH_DATABASE_URI": auth_uri,
        "PGPASSFILE": str(pgpass),
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://unused/",
        "MLFLOW_AUTH_ADMIN_PASSWORD": secrets.token_hex(12),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(24),
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def test_two_concurrent_migrate_calls_one_migrates_the_other_waits(postgres, monkeypatch, tmp_path):
    tracking_uri, tracking = _database(postgres, monkeypatch)
    auth_uri, _ = _database(postgres, monkeypatch)
    env_file = _server_env_file(tmp_path, tracking_uri, auth_uri, postgres[1])
    argv = [
        str(VENV_BIN / "mlflow-ext"),
        "server",
        "migrate",
        "--env-file",
        str(env_file),
        "--output",
        "json",
    ]
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"

    # A migration already running elsewhere (another host) holds the lock: both calls must queue behind it.
    with advisory_lock(tracking, MIGRATION_LOCK_ID), tracking.connect() as conn:
        calls = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while conn.execute(text(waiting)).scalar() < 2:
            assert all(c.poll() is None for c in calls), "a migrate call went on without the lock"
            assert time.monotonic() < deadline, "the migrate calls never reached the lock"
            time.sleep(0.05)
        assert conn.execute(select(text("count(*)")).select_from(text("pg_tables")).where(
            text("tablename = 'experiments'"))).scalar() == 0  # fmt: skip
    outputs = [call.communicate(timeout=120) for call in calls]
    for call, (_, stderr) in zip(calls, outputs, strict=True):
        assert call.returncode == 0, stderr
    reports = sorted((json.loads(stdout) for stdout, _ in outputs), key=lambda r: not r["changed"])

    # One migrated everything; the other found every schema where the first left it.
    assert reports[0]["changed"] is True
    assert reports[0]["tracking"]["before"] is None and reports[0]["auth_ext"]["before"] is None
    assert reports[1]["changed"] is False
    for part in ("tracking", "tracking_indexes", "auth", "auth_ext"):
        assert reports[1][part]["before"] == reports[1][part]["after"] == reports[0][part]["after"]
