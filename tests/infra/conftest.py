"""Converge site.yml on this host, prove it idempotent, then hand the converged host to the tests.

The session fixture `converged` runs ansible-playbook three times: a converge (it must succeed), a second
converge (it must report changed=0) and a check-mode run (changed=0 too). The tests read the results from
the fixture, so a non-idempotent task fails one named test instead of every test.

Set MLFLOW_PLATFORM_SKIP_CONVERGE=1 to test a host that is already converged (the idempotence tests then
skip).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
INVENTORY = ANSIBLE_DIR / "inventories" / "local"
PLATFORM_VARS = INVENTORY / "group_vars" / "all" / "platform.yml"
ANSIBLE_PLAYBOOK = REPO / ".venv" / "dev" / "bin" / "ansible-playbook"
LOG_DIR = REPO / "results" / "infra"

# What the roles provision on this host (role defaults; the local inventory keeps them).
MLFLOW_ENV_FILE = "/etc/mlflow/server.env"
MLFLOW_PGPASS = "/etc/mlflow/pgpass"
MLFLOW_UNIT = "/etc/systemd/system/mlflow-server.service"
MLFLOW_CLI = "/opt/mlflow/venv/bin/mlflow-ext"
TLS_CERT = "/etc/nginx/tls/mlflow-platform.crt"
TLS_KEY = "/etc/nginx/tls/mlflow-platform.key"
SEAWEEDFS_IDENTITIES = "/etc/seaweedfs/identities.json"
TRACKING_URI = "https://localhost"
S3_ENDPOINT = "http://127.0.0.1:8333"
BUCKET = "mlflow-artifacts"

_RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class PlaybookRun:
    """One ansible-playbook run: its exit code, per-host recap, duration and output."""

    label: str
    returncode: int
    recap: dict[str, dict[str, int]]
    seconds: float
    output: str
    log: Path

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap.values())

    @property
    def failed(self) -> int:
        return sum(host["failed"] + host["unreachable"] for host in self.recap.values())

    def changed_tasks(self) -> list[str]:
        """The tasks that reported a change, for assertion messages."""
        tasks, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                tasks.append(current)
        return tasks

    def summary(self) -> str:
        return f"{self.label}: rc={self.returncode} {self.recap} in {self.seconds:.0f}s (log: {self.log})"


def run_playbook(label: str, *extra: str) -> PlaybookRun:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    command = [str(ANSIBLE_PLAYBOOK), "-i", str(INVENTORY), str(ANSIBLE_DIR / "site.yml"), *extra]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    seconds = time.monotonic() - started
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{label}.log"
    log.write_text(result.stdout + result.stderr, encoding="utf-8")
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in _RECAP.finditer(result.stdout)
    }
    return PlaybookRun(label, result.returncode, recap, seconds, result.stdout + result.stderr, log)


@dataclass
class Convergence:
    first: PlaybookRun | None
    second: PlaybookRun | None
    check: PlaybookRun | None


@pytest.fixture(scope="session")
def convergence() -> Convergence:
    if os.environ.get("MLFLOW_PLATFORM_SKIP_CONVERGE") == "1":
        return Convergence(None, None, None)
    first = run_playbook("converge")
    if first.returncode != 0 or first.failed or not first.recap:
        pytest.fail(f"{first.summary()}\n{first.output[-4000:]}", pytrace=False)
    second = run_playbook("reconverge")
    check = run_playbook("check", "--check")
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
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=S3_ENDPOINT,
        aws_access_key_id=secrets["object_store_access_key"],
        aws_secret_access_key=secrets["object_store_secret_key"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
