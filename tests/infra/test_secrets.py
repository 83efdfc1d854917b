"""Secrets live in files only their service can read, and never on a command line."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from mlflow_ext import settings
from mlflow_ext.settings import read_env_file
from tests.infra.conftest import (
    BRIDGE_ENV_FILE,
    BRIDGE_PGPASS,
    BRIDGE_ROUTES,
    BRIDGE_TOKEN_FILE,
    GOCD_TOKEN_FILE,
    MLFLOW_ENV_FILE,
    MLFLOW_PGPASS,
    SEAWEEDFS_IDENTITIES,
    TLS_CERT,
    TLS_KEY,
)

pytestmark = pytest.mark.usefixtures("converged")

# path, mode, owner, group
SECRET_FILES = [
    (MLFLOW_ENV_FILE, 0o640, "root", "mlflow"),
    (MLFLOW_PGPASS, 0o600, "mlflow", "mlflow"),
    ("/etc/mlflow/admin_password", 0o400, "mlflow", "mlflow"),
    (SEAWEEDFS_IDENTITIES, 0o600, "seaweedfs", "seaweedfs"),
    # JWT keys and the gRPC (mutual TLS) key of SeaweedFS.
    ("/etc/seaweedfs/security/security.toml", 0o600, "seaweedfs", "seaweedfs"),
    ("/etc/seaweedfs/security/grpc.key", 0o600, "seaweedfs", "seaweedfs"),
    (TLS_KEY, 0o600, "root", "root"),
    ("/run/mlflow-server/basic_auth.ini", 0o600, "mlflow", "mlflow"),
    # Written by the role on the server host, outside the generated secrets directory.
    (GOCD_TOKEN_FILE, 0o600, "root", "root"),
    (BRIDGE_ENV_FILE, 0o640, "root", "gocd-bridge"),
    (BRIDGE_PGPASS, 0o600, "gocd-bridge", "gocd-bridge"),
    (BRIDGE_ROUTES, 0o640, "root", "gocd-bridge"),
    # The bridge's MLflow token, written by the mlflow_server role on the server host.
    (BRIDGE_TOKEN_FILE, 0o600, "root", "root"),
]


@pytest.mark.parametrize(("path", "mode", "owner", "group"), SECRET_FILES)
def test_secret_file_mode_and_owner(host, path, mode, owner, group):
    f = host.file(path)
    assert f.is_file, path
    assert (f.mode, f.user, f.group) == (mode, owner, group), path


def test_config_dir_is_closed_to_others(host):
    d = host.file("/etc/mlflow")
    assert (d.mode, d.user, d.group) == (0o750, "root", "mlflow")


def test_certificate_is_public(host):
    f = host.file(TLS_CERT)
    assert (f.mode, f.user) == (0o644, "root")


def test_generated_secrets_dir(host, secrets_dir, secrets):
    d = host.file(str(secrets_dir))
    assert (d.mode, d.user) == (0o700, "root")
    for name in secrets:
        f = host.file(str(secrets_dir / name))
        assert (f.mode, f.user) == (0o600, "root"), name
    expected = {
        "postgresql_app_password",
        "object_store_access_key",
        "object_store_secret_key",
        "mlflow_admin_password",
        "mlflow_flask_secret_key",
        "mlflow_webhook_encryption_key",
    }
    assert expected <= set(secrets)
    assert all(value.isalnum() and len(value) >= 32 for value in secrets.values())


def test_pgpass_holds_the_password_and_the_uris_do_not(host, secrets):
    password = secrets["postgresql_app_password"]
    assert host.file(MLFLOW_PGPASS).content_string.splitlines()[-1] == f"127.0.0.1:5432:*:mlflow:{password}"
    for line in host.file(MLFLOW_ENV_FILE).content_string.splitlines():
        if "postgresql+psycopg2://" in line:
            assert password not in line


# Secrets a service's processes need while they serve requests, by service user and env var name: these may
# stay in that service's environment. Every other secret is read once at start (the admin password, from a
# file) or lives in a file only (the database passwords, SeaweedFS's keys), and must not be found there.
NEEDED_AT_REQUEST_TIME = {
    "mlflow": (
        MLFLOW_ENV_FILE,
        {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "MLFLOW_FLASK_SERVER_SECRET_KEY",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
        },
    ),
    "gocd-bridge": (
        BRIDGE_ENV_FILE,
        {"MLFLOW_EXT_BRIDGE_GOCD_TOKEN", "MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET", "MLFLOW_TRACKING_TOKEN"},
    ),
    "seaweedfs": (None, set()),
}


def _all_secrets(secrets: dict[str, str]) -> dict[str, str]:
    """Generated secrets, the service tokens and every secret value of the services' env files."""
    found = {
        **secrets,
        "gocd_token": Path(GOCD_TOKEN_FILE).read_text(encoding="ascii").strip(),
        "bridge token": Path(BRIDGE_TOKEN_FILE).read_text(encoding="ascii").strip(),
    }
    for env_file in (MLFLOW_ENV_FILE, BRIDGE_ENV_FILE):
        for name, value in read_env_file(env_file).items():
            setting = settings.BY_NAME.get(name)
            if value and setting is not None and setting.secret:
                found[f"{name} of {env_file}"] = value
    return found


def _process_owner(proc: Path) -> str:
    try:
        return pwd.getpwuid(proc.stat().st_uid).pw_name
    except (OSError, KeyError):
        return ""


def test_no_secret_on_any_command_line_or_in_a_service_environment(secrets):
    """Every process's argv, read from /proc, is free of every secret; so is the environment of every process
    of the services (the MLflow server's master and workers, the bridge, SeaweedFS), but for the few secrets
    that process needs while serving."""
    secrets = _all_secrets(secrets)
    services = {
        user: (path and read_env_file(path), names) for user, (path, names) in NEEDED_AT_REQUEST_TIME.items()
    }
    found, scanned = [], set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended
        found += [(proc.name, "command line", name) for name, value in secrets.items() if value in argv]
        user = _process_owner(proc)
        if user not in services:
            continue
        env_file, needed = services[user]
        allowed = {env_file[name] for name in needed if env_file and env_file.get(name)}
        try:
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        scanned.add(user)
        found += [
            (proc.name, f"environment of {user}", name)
            for name, value in secrets.items()
            # The generated webhook key is the env value without its final "=": part of a needed value.
            if value in environ and not any(value in needed_value for needed_value in allowed)
        ]
    assert scanned == set(services), f"no running process of {set(services) - scanned}"
    assert not found, f"secrets where they do not belong (pid, where, secret): {found}"
