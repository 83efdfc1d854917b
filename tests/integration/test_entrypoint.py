"""The server entrypoint on real Postgres: migrations that report truthfully, clear config errors,
no secret on any command line, the admin created from a password file that no server process keeps."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.environ import patched_environ
from tests.support.services import VENV_BIN, MlflowServer

pytestmark = pytest.mark.integration
MLFLOW_EXT = str(VENV_BIN / "mlflow-ext")


def _migrate(env_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MLFLOW_EXT, "server", "migrate", "--env-file", str(env_file), "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_migrate_reports_changed_only_when_a_migration_ran(platform, tmp_path):
    platform.postgres.psql("CREATE DATABASE fresh_tracking OWNER mlflow")
    platform.postgres.psql("CREATE DATABASE fresh_auth OWNER mlflow")
    port = platform.postgres.port
    env = platform.server.env_file.read_text()
    env = env.replace(f"{port}/mlflow\n", f"{port}/fresh_tracking\n").replace(
        f"{port}/mlflow_auth\n", f"{port}/fresh_auth\n"
    )
    env_file = tmp_path / "fresh.env"
    env_file.write_text(env)

    first = _migrate(env_file)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["changed"] is True
    assert report["tracking"]["before"] is None and report["tracking"]["after"]
    assert report["auth"]["before"] is None and report["auth"]["after"]

    second = json.loads(_migrate(env_file).stdout)
    assert second["changed"] is False
    assert second["tracking"]["after"] == report["tracking"]["after"]


def test_unreachable_database_is_a_clear_migration_error(tmp_path, platform):
    env = platform.server.env_file.read_text().replace(f":{platform.postgres.port}/", ":1/")
    env_file = tmp_path / "bad.env"
    env_file.write_text(env)
    result = _migrate(env_file)
    assert result.returncode == 12  # migration failed (docs/cli.md)
    assert "schema migration failed" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_configuration_stops_the_server_before_it_starts(tmp_path):
    secret = "Sh0rtPw"
    env_file = tmp_path / "server.env"
    env_file.write_text(
        "MLFLOW_BACKEND_STORE_URI=postgresql://mlflow@127.0.0.1/mlflow\n"
        f"MLFLOW_AUTH_ADMIN_PASSWORD={secret}\n"
    )
    result = subprocess.run(
        [MLFLOW_EXT, "server", "run", "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )
    assert result.returncode == 3  # config (docs/cli.md)
    for expected in (
        "MLFLOW_BACKEND_STORE_URI must name the driver",
        "MLFLOW_ARTIFACTS_DESTINATION is required",
        "MLFLOW_AUTH_ADMIN_PASSWORD must be at least 12",
    ):
        assert expected in result.stderr
    assert secret not in result.stderr + result.stdout


def test_check_masks_secrets(platform):
    result = subprocess.run(
        [MLFLOW_EXT, "server", "check", "--env-file", str(platform.server.env_file), "--output", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    shown = json.loads(result.stdout)
    assert shown["MLFLOW_AUTH_ADMIN_PASSWORD"] == "***"
    assert shown["AWS_SECRET_ACCESS_KEY"] == "***"
    assert platform.admin_password not in result.stdout


def _descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid] + [d for child in children for d in _descendants(int(child))]


def test_no_secret_on_any_server_command_line(platform):
    secrets = [platform.admin_password, platform.s3.secret_key, platform.postgres.superuser_password]
    secrets += [
        line.split("=", 1)[1]
        for line in platform.server.env_file.read_text().splitlines()
        if line.startswith("MLFLOW_FLASK_SERVER_SECRET_KEY=")
    ]
    pids = _descendants(platform.server.process.pid)
    assert len(pids) >= 3, "expected the server and its uvicorn workers"
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert sys.executable in cmdline or "mlflow" in cmdline
        for secret in secrets:
            assert secret not in cmdline, f"a secret is visible in the command line of pid {pid}"


def _environ(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode(errors="replace")


def _status(url: str, username: str, password: str) -> int:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    request = urllib.request.Request(
        url + "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Authorization": f"Basic {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_no_admin_password_in_any_server_environment(platform):
    """The session's server read MLFLOW_AUTH_ADMIN_PASSWORD from its env file: no process of it keeps it."""
    pids = _descendants(platform.server.process.pid)
    assert len(pids) >= 3, "expected the server and its uvicorn workers"
    for pid in pids:
        environ = _environ(pid)
        assert platform.admin_password not in environ, (
            f"the admin password is in the environment of pid {pid}"
        )
        assert "MLFLOW_AUTH_ADMIN_PASSWORD=" not in environ


def test_first_start_creates_the_admin_from_the_password_file(platform):
    """An empty auth database, the password only in a 0400 file: the admin exists and logs in; no process
    of the server has the password in its environment."""
    auth_db = f"fresh_auth_{secrets.token_hex(4)}"
    platform.postgres.psql(f"CREATE DATABASE {auth_db} OWNER mlflow")
    password = secrets.token_hex(12)
    directory = Path(tempfile.mkdtemp(prefix="adminfile-"))
    password_file = directory / "admin_password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o400)
    env = {k: v for k, v in platform.server.env.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    env["MLFLOW_EXT_AUTH_DATABASE_URI"] = (
        env["MLFLOW_EXT_AUTH_DATABASE_URI"].rsplit("/", 1)[0] + "/" + auth_db
    )
    env["MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE"] = str(password_file)
    server = MlflowServer(env)
    try:
        server.start()
        assert _status(server.url, "admin", password) == 200
        assert _status(server.url, "admin", password + "x") == 401
        pids = _descendants(server.process.pid)
        assert len(pids) >= 3, "expected the server and its uvicorn workers"
        for pid in pids:
            assert password not in _environ(pid), f"the admin password is in the environment of pid {pid}"
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("problem", ["missing", "world-readable"])
def test_a_bad_password_file_stops_the_server_naming_the_setting(platform, tmp_path, problem):
    password = secrets.token_hex(12)
    password_file = tmp_path / "admin_password"
    password_file.write_text(password)
    password_file.chmod(0o644 if problem == "world-readable" else 0o600)
    if problem == "missing":
        password_file.unlink()
    env = {k: v for k, v in platform.server.env.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    env["MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE"] = str(password_file)
    env["MLFLOW_EXT_RUNTIME_DIR"] = str(tmp_path / "run")
    env_file = tmp_path / "server.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = subprocess.run(
        [MLFLOW_EXT, "server", "run", "--env-file", str(env_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )
    assert result.returncode != 0
    assert "MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE" in result.stderr
    assert password not in result.stderr + result.stdout


_BOOTSTRAP = """
import json, sys
from mlflow_ext import server
values = server.resolve(dict(__import__("os").environ))
created = server.bootstrap_admin(values, sys.argv[1])
print(json.dumps({"created": created, "mlflow_loaded": "mlflow.server.auth" in sys.modules}))
"""


def test_a_restart_finds_the_admin_without_loading_mlflow(platform):
    """The first start creates the admin through MLflow's auth store; every later start asks the database
    in plain SQL, without loading all of MLflow (about 2 s of each restart)."""
    auth_db = f"fresh_auth_{secrets.token_hex(4)}"
    platform.postgres.psql(f"CREATE DATABASE {auth_db} OWNER mlflow")
    env = dict(platform.server.env)
    uri = env["MLFLOW_EXT_AUTH_DATABASE_URI"].rsplit("/", 1)[0] + "/" + auth_db
    env["MLFLOW_EXT_AUTH_DATABASE_URI"] = uri

    def bootstrap() -> dict:
        result = subprocess.run(
            [sys.executable, "-c", _BOOTSTRAP, secrets.token_hex(12)],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": os.environ["PATH"], **env},
            check=True,
        )
        return json.loads(result.stdout.splitlines()[-1])

    assert bootstrap() == {"created": True, "mlflow_loaded": True}
    assert bootstrap() == {"created": False, "mlflow_loaded": False}

    from mlflow_ext import server

    with patched_environ({"PGPASSFILE": env["PGPASSFILE"]}):
        assert server.admin_exists(uri, "admin")
        assert not server.admin_exists(uri, "someone-else")
        closed = uri.replace(f":{platform.postgres.port}/", ":1/")
        assert not server.admin_exists(closed, "admin"), "an unreachable database is a no, not an error"


def test_the_server_leaves_request_lines_to_the_proxy_unless_asked(platform):
    """The proxy logs every request; the server's own access line is off by default and back with
    MLFLOW_EXT_SERVER_ACCESS_LOG=true."""
    marker = f"marker-{secrets.token_hex(6)}"

    def logged(server: MlflowServer) -> bool:
        with urllib.request.urlopen(f"{server.url}/health?{marker}", timeout=30):
            pass
        return marker in server.log()

    assert not logged(platform.server)
    server = MlflowServer({**platform.server.env, "MLFLOW_EXT_SERVER_ACCESS_LOG": "true"})
    try:
        server.start()
        assert logged(server)
    finally:
        server.stop()
