"""Converge site.yml on this host, prove it idempotent, then hand the converged host to the tests.

The session fixture `converged` runs ansible-playbook three times: a converge (it must succeed), a second
converge (it must report changed=0) and a check-mode run (changed=0 too). The tests read the results from
the fixture, so a non-idempotent task fails one named test instead of every test.

Set MLFLOW_PLATFORM_SKIP_CONVERGE=1 to test a host that is already converged (the idempotence tests then
skip).

The converges point the GoCD bridge at a fake GoCD on 127.0.0.1:FAKE_GOCD_PORT (tests/support/fake_gocd.py,
started by the bridge's end-to-end test) with a token made up for the session and one route; these extra vars
reach ansible-playbook through a 0600 vars file, never its command line. Without a converge, the token is read
back from the bridge's env file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets as random_secrets
import shutil
import ssl
import string
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.support.ansible import INVENTORY, REPO, PlaybookRun, run_playbook
from tests.support.services import s3_client as make_s3_client

PLATFORM_VARS = INVENTORY / "group_vars" / "all" / "platform.yml"

# What the roles provision on this host (role defaults; the local inventory keeps them).
MLFLOW_ENV_FILE = "/etc/mlflow/server.env"
MLFLOW_PGPASS = "/etc/mlflow/pgpass"
MLFLOW_UNIT = "/etc/systemd/system/mlflow-server.service"
MLFLOW_CLI = "/opt/mlflow/venv/bin/mlflow-ext"
GOCD_TOKEN_FILE = "/etc/mlflow/gocd_token"
BRIDGE_TOKEN_FILE = "/etc/mlflow/gocd_bridge_token"
BRIDGE_ENV_FILE = "/etc/gocd-bridge/bridge.env"
BRIDGE_PGPASS = "/etc/gocd-bridge/pgpass"
BRIDGE_ROUTES = "/etc/gocd-bridge/routes.yaml"
FAKE_GOCD_PORT = 18153
TLS_CERT = "/etc/nginx/tls/mlflow-platform.crt"
TLS_KEY = "/etc/nginx/tls/mlflow-platform.key"
SEAWEEDFS_IDENTITIES = "/etc/seaweedfs/identities.json"
TRACKING_URI = "https://localhost"
S3_ENDPOINT = "http://127.0.0.1:8333"
BUCKET = "mlflow-artifacts"


@dataclass(frozen=True)
class BridgeSetup:
    """Where the converge points the GoCD bridge: a fake GoCD, its token, one route."""

    gocd_token: str
    gocd_port: int = FAKE_GOCD_PORT
    gocd_username: str = "mlflow-bridge"
    pipeline: str = "infra-bridge-release"
    alias: str = "production"
    model_prefix: str = "infra-bridge-"
    route_variables: dict[str, str] = field(default_factory=lambda: {"DEPLOY_TARGET": "infra"})

    @property
    def gocd_url(self) -> str:
        return f"http://127.0.0.1:{self.gocd_port}"

    def extra_vars(self) -> dict:
        return {
            "gocd_bridge_gocd_url": self.gocd_url,
            "gocd_bridge_gocd_username": self.gocd_username,
            "gocd_bridge_gocd_token": self.gocd_token,
            "gocd_bridge_routes": [
                {
                    "model": self.model_prefix + "*",
                    "alias": self.alias,
                    "pipeline": self.pipeline,
                    "variables": self.route_variables,
                }
            ],
            # GoCD is down between test sessions: retry soon once it is back.
            "gocd_bridge_extra_env": {"MLFLOW_EXT_BRIDGE_RETRY_MAX_SECONDS": "2"},
        }


def _converged_bridge() -> BridgeSetup:
    """The setup of a host converged earlier: the token is in the bridge's env file."""
    with open(BRIDGE_ENV_FILE, encoding="utf-8") as handle:
        env = dict(line.split("=", 1) for line in handle.read().splitlines() if "=" in line)
    return BridgeSetup(gocd_token=env.get("MLFLOW_EXT_BRIDGE_GOCD_TOKEN", ""))


def _vars_file(directory: Path, values: dict) -> Path:
    path = directory / "vars.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(values, handle)
    return path


@contextlib.contextmanager
def checkout_used() -> Iterator[None]:
    """Leave in the checkout what `make test` and `make bench` leave: fresh bytecode caches (every source
    touched, then compiled), build output and egg-info, a stray cache file in the package. The sources'
    contents stay as they are; what this created is removed afterwards."""
    package = REPO / "mlflow_ext"
    for path in package.rglob("*.py"):
        os.utime(path)
    compile_all = [sys.executable, "-m", "compileall", "-q", "-f", str(package)]
    subprocess.run(compile_all, check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", "import mlflow_ext.cli"], check=True, cwd=REPO, capture_output=True)
    created = []
    for path, content in [
        (REPO / "build" / "converge-probe" / "lib" / "mlflow_ext" / "__init__.py", b"# build output\n"),
        (REPO / "dist" / "converge-probe" / "mlflow_ext-0-py3-none-any.whl", b"not a wheel\n"),
        (package / "converge_probe.egg-info" / "PKG-INFO", b"Name: converge-probe\n"),
        (package / "__pycache__" / "converge_probe.cpython-311.pyc", os.urandom(64)),
    ]:
        candidates = [*reversed(path.relative_to(REPO).parents), path.relative_to(REPO)]
        top = next((p for p in candidates if not (REPO / p).exists()), path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        created.append(REPO / top)
    try:
        yield
    finally:
        for path in created:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


@dataclass
class Convergence:
    first: PlaybookRun | None
    second: PlaybookRun | None
    check: PlaybookRun | None
    bridge: BridgeSetup


@pytest.fixture(scope="session")
def convergence(tmp_path_factory: pytest.TempPathFactory) -> Convergence:
    if os.environ.get("MLFLOW_PLATFORM_SKIP_CONVERGE") == "1":
        return Convergence(None, None, None, _converged_bridge())
    alphabet = string.ascii_letters + string.digits
    bridge = BridgeSetup(gocd_token="".join(random_secrets.choice(alphabet) for _ in range(40)))
    extra = ("-e", f"@{_vars_file(tmp_path_factory.mktemp('converge'), bridge.extra_vars())}")
    first = run_playbook("converge", "site.yml", *extra)
    if first.returncode != 0 or first.failed or not first.recap:
        pytest.fail(f"{first.summary()}\n{first.output[-4000:]}", pytrace=False)
    # What `make test` and `make bench` leave in the checkout must not count as a change of the sources.
    with checkout_used():
        second = run_playbook("reconverge", "site.yml", *extra)
        check = run_playbook("check", "site.yml", "--check", *extra)
    print(f"\n{first.summary()}\n{second.summary()}\n{check.summary()}")
    return Convergence(first, second, check, bridge)


@pytest.fixture(scope="session")
def converged(convergence: Convergence) -> Convergence:
    """The converged host; test modules of site.yml use it with pytest.mark.usefixtures("converged")."""
    return convergence


@pytest.fixture(scope="session")
def bridge(converged: Convergence) -> BridgeSetup:
    """Where the GoCD bridge of the converged host delivers (tests/infra/test_gocd_bridge.py)."""
    return converged.bridge


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


def platform_call(method: str, path: str, authorization: str, body: dict | None = None) -> tuple[int, dict]:
    """One call of the platform's API through https://localhost: (status, JSON answer, {} on an error)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(TRACKING_URI + path, data=data, method=method)
    request.add_header("Authorization", authorization)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    context = ssl.create_default_context(cafile=TLS_CERT)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}
