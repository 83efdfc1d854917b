"""Secrets live in files only their service can read, and never on a command line."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_no_secret_on_any_command_line(secrets):
    """Every process's argv, read from /proc, is free of every generated secret and of the service token."""
    bridge_env = read_env_file(BRIDGE_ENV_FILE)
    secrets = {
        **secrets,
        "gocd_token": Path(GOCD_TOKEN_FILE).read_text(encoding="ascii").strip(),
        "bridge token": Path(BRIDGE_TOKEN_FILE).read_text(encoding="ascii").strip(),
        "bridge's GoCD token": bridge_env["MLFLOW_EXT_BRIDGE_GOCD_TOKEN"],
    }
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended
        found += [(cmdline.parent.name, name) for name, value in secrets.items() if value in argv]
    assert not found, f"secrets on command lines (pid, secret): {found}"
