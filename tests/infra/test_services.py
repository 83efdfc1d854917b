"""The platform's services run, start at boot, listen where they should and run hardened."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest

from tests.infra.conftest import MLFLOW_CLI, MLFLOW_ENV_FILE, MLFLOW_UNIT

pytestmark = pytest.mark.usefixtures("converged")

SERVICES = ["postgresql@15-main", "seaweedfs", "mlflow-server", "nginx"]
# Users whose processes make up the platform (nginx's master runs as root and is matched by name).
SERVICE_USERS = {"postgres", "seaweedfs", "mlflow", "www-data"}


@pytest.mark.parametrize("name", SERVICES)
def test_service_running_and_enabled(host, name):
    service = host.service(name)
    assert service.is_running, name
    assert service.is_enabled, name


def _platform_pids(host) -> set[int]:
    pids = set()
    for line in host.check_output("ps -eo pid=,user=,comm=").splitlines():
        pid, user, comm = line.split(None, 2)
        if user in SERVICE_USERS or comm == "nginx":
            pids.add(int(pid))
    return pids


def _listeners(host) -> list[tuple[str, int, set[int]]]:
    """(address, port, pids) of every listening TCP and UDP socket."""
    listeners = []
    for line in host.check_output("ss -Hlntup").splitlines():
        fields = line.split()
        local = fields[4]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        listeners.append((address, int(port), pids))
    return listeners


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # "*" and names: every interface


def test_only_https_and_its_redirect_listen_beyond_loopback(host):
    platform = _platform_pids(host)
    listeners = _listeners(host)
    exposed = sorted({(a, port) for a, port, pids in listeners if pids & platform and not _is_loopback(a)})
    assert exposed, "nginx listens nowhere beyond loopback"
    assert {port for _, port in exposed} == {80, 443}, exposed


@pytest.mark.parametrize("port", [5000, 5432, 8333])
def test_backends_listen_on_loopback_only(host, port):
    addresses = {address for address, p, _ in _listeners(host) if p == port}
    assert addresses, f"nothing listens on {port}"
    assert all(_is_loopback(a) for a in addresses), addresses


def test_server_runs_as_its_own_user(host):
    processes = host.process.filter(user="mlflow")
    assert any("mlflow" in p.args for p in processes), "no server process owned by mlflow"
    assert not [p for p in host.process.filter(user="root") if "/opt/mlflow/venv" in p.args]


def test_server_does_not_run_in_the_callers_directory(host):
    # A server started in the directory of whoever ran the playbook breaks (500s) once it is deleted.
    pid = host.check_output("pgrep -o -u mlflow -f 'mlflow server'")
    assert host.check_output(f"readlink /proc/{pid}/cwd") == "/"


def test_unit_is_hardened(host):
    unit = host.file(MLFLOW_UNIT)
    lines = set(unit.content_string.splitlines())
    for expected in [
        "User=mlflow",
        "Group=mlflow",
        f"EnvironmentFile={MLFLOW_ENV_FILE}",
        f"ExecStart={MLFLOW_CLI} server run",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RuntimeDirectory=mlflow-server",
        "StateDirectory=mlflow-server",
        "ReadWritePaths=/var/lib/mlflow-server",
        "Environment=TMPDIR=/var/lib/mlflow-server/tmp",
        "WorkingDirectory=/",
    ]:
        assert expected in lines, expected
    after = next(line for line in lines if line.startswith("After=")).split("=", 1)[1].split()
    assert {"postgresql.service", "seaweedfs.service"} <= set(after), after
    assert unit.user == "root" and unit.mode == 0o644


def _settings(host) -> dict:
    command = f"{MLFLOW_CLI} server check --output json --env-file {MLFLOW_ENV_FILE}"
    return json.loads(host.check_output(command))


def test_env_file_names_come_from_the_registry(host):
    listing = host.check_output(f"{MLFLOW_CLI} server settings --format json")
    registry = {s["name"] for s in json.loads(listing)}
    names = set()
    for line in host.file(MLFLOW_ENV_FILE).content_string.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert not re.search(r"[\s\"'$#`\\]", value), f"{name} is quoted or unsafe"
            names.add(name)
    assert names <= registry, names - registry


def test_resolved_server_settings(host):
    settings = _settings(host)
    assert settings["MLFLOW_EXT_APP_NAME"] == "mlflow-ext-auth"
    assert settings["MLFLOW_EXT_AUTH_DEFAULT_PERMISSION"] == "NO_PERMISSIONS"
    assert settings["MLFLOW_EXT_PROTECTED_ALIASES"] == ["production"]
    assert settings["MLFLOW_EXT_PROMOTION_POLICY"] == "/etc/mlflow/promotion-policy.yaml"
    assert settings["MLFLOW_EXT_AUDIT_LOG"] == "stderr"
    assert settings["MLFLOW_EXT_AUTH_TRUSTED_PROXIES"] == ["127.0.0.1", "::1"]
    assert settings["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] is False
    assert settings["MLFLOW_DISABLE_TELEMETRY"] is True
    assert settings["MLFLOW_EXT_MIGRATE_ON_START"] is False
    assert settings["MLFLOW_EXT_FAST_TRACKING_STORE"] is True
    assert settings["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://mlflow-artifacts/"
    assert settings["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert settings["MLFLOW_HOST"] == "127.0.0.1"
    assert settings["PGPASSFILE"] == "/etc/mlflow/pgpass"
    for uri in (settings["MLFLOW_BACKEND_STORE_URI"], settings["MLFLOW_EXT_AUTH_DATABASE_URI"]):
        assert uri.startswith("postgresql+psycopg2://mlflow@127.0.0.1:5432/"), uri
    allowed = settings["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"} <= set(allowed)
    # The admin password is in a file the entrypoint reads once, not in the environment.
    assert settings["MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE"] == "/etc/mlflow/admin_password"
    assert settings["MLFLOW_AUTH_ADMIN_PASSWORD"] is None
    for secret in (
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
        "AWS_SECRET_ACCESS_KEY",
    ):
        assert settings[secret] == "***", secret


def test_health_on_loopback(host):
    assert host.check_output("curl -fsS http://127.0.0.1:5000/health") == "OK"


def test_nginx_configuration_is_valid(host):
    assert host.run("nginx -t").rc == 0
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_promotion_policy_is_readable_by_the_server_only(host):
    policy = host.file("/etc/mlflow/promotion-policy.yaml")
    assert policy.user == "root" and policy.group == "mlflow" and policy.mode == 0o640
    assert "training_data" in policy.content_string


def test_the_server_builds_the_fast_tracking_store_for_postgresql(host):
    """The provisioned install registers mlflow_ext's store for MLflow's postgresql scheme (entry point)."""
    python = MLFLOW_CLI.rsplit("/", 1)[0] + "/python"
    script = (
        "from mlflow.server.handlers import TrackingStoreRegistryWrapper as R; "
        "b = R().get_store_builder('postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow'); "
        "print(b.__module__ + ':' + b.__name__)"
    )
    assert (
        host.check_output(f'MLFLOW_DISABLE_TELEMETRY=true {python} -c "{script}"').splitlines()[-1]
        == "mlflow_ext.tracking_store:build"
    )
