"""Converge site.yml on this host, prove it idempotent, then hand the converged host to the tests.

The session fixture `converged` runs ansible-playbook three times: a converge (it must succeed), a second
converge (it must report changed=0) and a check-mode run (changed=0 too). The tests read the results from
the fixture, so a non-idempotent task fails one named test instead of every test.

Set MLFLOW_PLATFORM_SKIP_CONVERGE=1 to test a host that is already converged (the idempotence tests then
skip).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.ansible import INVENTORY, PlaybookRun, run_playbook
from tests.support.services import s3_client as make_s3_client

PLATFORM_VARS = INVENTORY / "group_vars" / "all" / "platform.yml"

# What the roles provision on this host (role defaults; the local inventory keeps them).
MLFLOW_ENV_FILE = "/etc/mlflow/server.env"
MLFLOW_PGPASS = "/etc/mlflow/pgpass"
MLFLOW_UNIT = "/etc/systemd/system/mlflow-server.service"
MLFLOW_CLI = "/opt/mlflow/venv/bin/mlflow-ext"
GOCD_TOKEN_FILE = "/etc/mlflow/gocd_token"
TLS_CERT = "/etc/nginx/tls/mlflow-platform.crt"
TLS_KEY = "/etc/nginx/tls/mlflow-platform.key"
SEAWEEDFS_IDENTITIES = "/etc/seaweedfs/identities.json"
TRACKING_URI = "https://localhost"
S3_ENDPOINT = "http://127.0.0.1:8333"
BUCKET = "mlflow-artifacts"


@dataclass
class Convergence:
    first: PlaybookRun | None
    second: PlaybookRun | None
    check: PlaybookRun | None


@pytest.fixture(scope="session")
def convergence() -> Convergence:
    if os.environ.get("MLFLOW_PLATFORM_SKIP_CONVERGE") == "1":
        return Convergence(None, None, None)
    first = run_playbook("converge", "site.yml")
    if first.returncode != 0 or first.failed or not first.recap:
        pytest.fail(f"{first.summary()}\n{first.output[-4000:]}", pytrace=False)
    second = run_playbook("reconverge", "site.yml")
    check = run_playbook("check", "site.yml", "--check")
    print(f"\n{first.summary()}\n{second.summary()}\n{check.summary()}")
    return Convergence(first, second, check)


@pytest.fixture(scope="session")
def converged(convergence: Convergence) -> Convergence:
    """The converged host; test modules of site.yml use it with pytest.mark.usefixtures("converged")."""
    return convergence


@pytest.fixture(scope="session")
def host():
    import testinfra

    return testinfra.get_host("local://")


@pytest.fixture(scope="session")
def secrets_dir() -> Path:
    platform_vars = yaml.safe_load(PLATFORM_VARS.read_text(encoding="utf-8"))
    return Path(platform_vars["platform_secrets_dir"])


@pytest.fixture(scope="session")
def secrets(secrets_dir: Path) -> dict[str, str]:
    """Every generated secret, by file name."""
    values = {path.name: path.read_text(encoding="utf-8").strip() for path in sorted(secrets_dir.iterdir())}
    assert values, f"no secrets under {secrets_dir}"
    return values


@pytest.fixture(scope="session")
def admin_env(secrets: dict[str, str]) -> dict[str, str]:
    """Client environment of the admin, through the proxy, trusting the proxy's certificate."""
    return {
        "MLFLOW_TRACKING_URI": TRACKING_URI,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": secrets["mlflow_admin_password"],
        "MLFLOW_TRACKING_SERVER_CERT_PATH": TLS_CERT,
    }


@pytest.fixture(scope="session")
def s3_client(secrets: dict[str, str]):
    return make_s3_client(S3_ENDPOINT, secrets["object_store_access_key"], secrets["object_store_secret_key"])
