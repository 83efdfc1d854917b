"""External mode of the postgresql and object_store roles, against throwaway servers.

Each test starts its own server on free loopback ports in a temporary directory (a private PostgreSQL 15
cluster with a non-default admin, or a `weed mini` with one S3 identity), converges the playbook with
`postgresql_install: false` / `object_store_install: false` pointed at it, checks that the application
role, its databases and the bucket exist there, that a second run and a check-mode run report changed=0,
and that nothing of the bundled installation was touched. It stops exactly the processes it started.
Secrets reach ansible-playbook through a 0600 vars file, never its command line.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ansible import ANSIBLE_PLAYBOOK, PlaybookRun, run_playbook
from tests.support.services import PG_BIN, Postgres, SeaweedS3

APP_USER = "mlflow"
DATABASES = ["mlflow", "mlflow_auth"]

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="starts PostgreSQL as the postgres user and converges as root"
    ),
    pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason=f"no {ANSIBLE_PLAYBOOK}"),
    pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason=f"no {PG_BIN / 'initdb'}"),
]


def _secret(length: int = 32) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _vars_file(directory: Path, values: dict) -> Path:
    path = directory / "vars.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(values, handle)
    return path


def _converge_three_times(label: str, playbook: str, vars_file: Path) -> tuple[PlaybookRun, ...]:
    runs = tuple(
        run_playbook(f"external-{label}-{step}", playbook, "-e", f"@{vars_file}", *extra)
        for step, extra in (("converge", ()), ("reconverge", ()), ("check", ("--check",)))
    )
    first = runs[0]
    assert first.returncode == 0 and first.failed == 0, first.output[-4000:]
    return runs


def _assert_idempotent(second: PlaybookRun, check: PlaybookRun) -> None:
    assert second.returncode == 0 and second.changed == 0, second.changed_tasks() or second.output[-4000:]
    assert check.returncode == 0 and check.changed == 0, check.changed_tasks() or check.output[-4000:]


@pytest.fixture(scope="module")
def external_postgres() -> Iterator[Postgres]:
    server = Postgres(superuser="extadmin", superuser_password=_secret())
    try:
        yield server.start()
    finally:
        server.stop()


def test_postgresql_external_mode(external_postgres: Postgres, tmp_path: Path) -> None:
    server = external_postgres
    app_password = _secret()
    vars_file = _vars_file(
        tmp_path,
        {
            "postgresql_install": False,
            "postgresql_host": "127.0.0.1",
            "postgresql_port": server.port,
            "postgresql_admin_user": server.superuser,
            "postgresql_admin_password": server.superuser_password,
            "postgresql_admin_ssl_mode": "disable",
            "postgresql_app_user": APP_USER,
            "postgresql_app_password": app_password,
            "postgresql_databases": DATABASES,
        },
    )
    first, second, check = _converge_three_times("postgresql", "postgresql.yml", vars_file)

    # The role logged in as the admin and made the application role and its databases.
    for database in DATABASES:
        assert server.psql("SELECT current_user", database, user=APP_USER, password=app_password) == APP_USER
    owners = server.psql(
        "SELECT string_agg(datname || '=' || pg_get_userbyid(datdba), ',' ORDER BY datname) FROM pg_database "
        "WHERE datname LIKE 'mlflow%'"
    )
    assert owners == ",".join(f"{d}={APP_USER}" for d in sorted(DATABASES))

    # Nothing of the bundled server was installed, configured or started.
    allowed = {
        "Create the secrets directory, readable by the controller's user only",
        "postgresql : Install the PostgreSQL packages",  # the python3-psycopg2 driver, on a fresh host
        f"postgresql : Ensure the application role {APP_USER}",
        f"postgresql : Ensure the databases owned by {APP_USER}",
    }
    assert set(first.changed_tasks()) <= allowed, first.changed_tasks()
    _assert_idempotent(second, check)


@pytest.fixture(scope="module")
def external_s3() -> Iterator[SeaweedS3]:
    store = SeaweedS3(access_key=_secret(20), secret_key=_secret(40))
    try:
        yield store.start()
    finally:
        store.stop()


def test_object_store_external_mode(external_s3: SeaweedS3, tmp_path: Path) -> None:
    store = external_s3
    bucket = "external-artifacts"
    vars_file = _vars_file(
        tmp_path,
        {
            "object_store_install": False,
            "object_store_endpoint_url": store.endpoint_url,
            "object_store_bucket": bucket,
            "object_store_access_key": store.access_key,
            "object_store_secret_key": store.secret_key,
        },
    )
    first, second, check = _converge_three_times("object_store", "object_store.yml", vars_file)

    assert bucket in [b["Name"] for b in store.client().list_buckets()["Buckets"]]

    # Only the bucket (and, on a fresh host, the S3 client venv) changed: no SeaweedFS was installed.
    allowed = {
        "Create the secrets directory, readable by the controller's user only",
        "object_store : Install the S3 client venv",
        f"object_store : Ensure the bucket {bucket}",
    }
    assert set(first.changed_tasks()) <= allowed, first.changed_tasks()
    assert f"object_store : Ensure the bucket {bucket}" in first.changed_tasks()
    assert "TASK [python_service" not in first.output
    _assert_idempotent(second, check)
