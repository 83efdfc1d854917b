"""Fixtures of the fault suite (`make chaos`): the provisioned platform as a client sees it, the table every
fault adds its row to (printed once, at the end of the session, and written to results/chaos.txt), the
platform's units, and a fake GoCD the provisioned bridge is pointed at for the session.

The suite restarts and kills the platform's services: it runs only when MLFLOW_PLATFORM_CHAOS=1 (the
Makefile sets it), and pyproject's testpaths leave tests/chaos out of `make test`. On a host shared with
other converges, hold /tmp/mlflow-platform-infra.lock for the whole run.
"""

from __future__ import annotations

import logging
import os
import secrets as random_secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mlflow_ext.routing import BRIDGE_VARIABLES
from tests.chaos import harness
from tests.infra.conftest import BRIDGE_ENV_FILE, BRIDGE_ROUTES, PLATFORM_VARS
from tests.support.environ import patched_environ
from tests.support.fake_gocd import FakeGoCD

RESULTS = Path(__file__).resolve().parents[2] / "results" / "chaos.txt"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: restarts and kills the provisioned platform's services")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("MLFLOW_PLATFORM_CHAOS") == "1":
        return
    skip = pytest.mark.skip(reason="restarts the platform's services: run with `make chaos`")
    for item in items:
        if "chaos" in item.keywords:
            item.add_marker(skip)


@dataclass
class Platform:
    experiment_id: str
    admin_password: str = field(repr=False)  # never in a traceback or CI log

    @property
    def auth(self) -> tuple[str, str]:
        return ("admin", self.admin_password)

    def probe_run(self) -> str:
        return harness.new_client().create_run(self.experiment_id).info.run_id


@pytest.fixture(scope="session")
def platform() -> Platform:
    """The provisioned platform through https://localhost, as its admin, with MLflow's client retrying
    for at most about 30 s per call so that every row stays bounded."""
    secrets_dir = Path(yaml.safe_load(PLATFORM_VARS.read_text(encoding="utf-8"))["platform_secrets_dir"])
    password = (secrets_dir / "mlflow_admin_password").read_text(encoding="utf-8").strip()
    env = {
        "MLFLOW_TRACKING_URI": harness.TRACKING_URI,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_TRACKING_SERVER_CERT_PATH": harness.CA_CERT,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "MLFLOW_HTTP_POOL_MAXSIZE": "64",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    import mlflow  # noqa: F401 (it sets its loggers up on import; quieten them after)

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # one INFO line per model version otherwise
    with patched_environ(env):
        if not harness.http_ok(f"{harness.TRACKING_URI}/health", verify=harness.CA_CERT):
            pytest.fail("https://localhost/health does not answer: provision the platform first (make up)")
        harness.install_retry_spy()
        experiment = harness.new_client().create_experiment(f"chaos-{time.strftime('%Y%m%d-%H%M%S')}")
        yield Platform(experiment, password)


class Table:
    def __init__(self) -> None:
        self.rows: list[harness.Row] = []
        self.footnotes: list[str] = []

    def add(self, fault: str, show_latency: bool = False) -> harness.Row:
        row = harness.Row(fault, show_latency=show_latency)
        self.rows.append(row)
        return row


@pytest.fixture(scope="session")
def table(request: pytest.FixtureRequest):
    """Every fault's row; the table is printed when the session ends, whatever failed."""
    started = time.monotonic()
    collected = Table()
    yield collected
    text = harness.format_table(collected.rows, collected.footnotes)
    text += f"\nsuite time: {time.monotonic() - started:.0f} s"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text + "\n", encoding="utf-8")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n\n== make chaos ==\n" + text, flush=True)


@pytest.fixture(scope="session")
def units(table: Table) -> harness.Units:
    found = harness.Units()
    if found.note:
        table.footnotes.append(found.note)
    return found


def _read(path: str) -> tuple[str, os.stat_result]:
    return Path(path).read_text(encoding="utf-8"), os.stat(path)


def _write(path: str, text: str, like: os.stat_result) -> None:
    Path(path).write_text(text, encoding="utf-8")
    os.chown(path, like.st_uid, like.st_gid)
    os.chmod(path, like.st_mode & 0o7777)


@pytest.fixture(scope="session")
def gocd_target(platform: Platform, units: harness.Units, table: Table):
    """A fake GoCD on a free loopback port, a pipeline and a route of this session's own, and the provisioned
    bridge pointed at them (its env file and routing file rewritten, the unit restarted); both files and the
    unit are restored afterwards. The pipeline is new to the bridge's outbox, so its first trigger takes the
    fake's empty history as its floor."""
    session = uuid.uuid4().hex[:8]
    token = "".join(random_secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
    target = harness.GoCDTarget(
        FakeGoCD(tokens={token: "mlflow-bridge"}), f"chaos-release-{session}", f"chaos-{session}-"
    )
    target.gocd.add_pipeline(target.pipeline, variables=BRIDGE_VARIABLES)
    healthy_before = harness.http_ok(harness.BRIDGE_HEALTH)
    env_text, env_stat = _read(BRIDGE_ENV_FILE)
    routes_text, routes_stat = _read(BRIDGE_ROUTES)
    target.gocd.start()
    try:
        replaced = {
            "MLFLOW_EXT_BRIDGE_GOCD_URL": target.gocd.url,
            "MLFLOW_EXT_BRIDGE_GOCD_USERNAME": "mlflow-bridge",
            "MLFLOW_EXT_BRIDGE_GOCD_TOKEN": token,
        }
        lines = [
            line
            for line in env_text.splitlines()
            if line.split("=", 1)[0] not in {*replaced, "MLFLOW_EXT_BRIDGE_GOCD_PASSWORD"}
        ]
        lines += [f"{k}={v}" for k, v in replaced.items()]
        _write(BRIDGE_ENV_FILE, "\n".join(lines) + "\n", env_stat)
        target.routes_path = Path(BRIDGE_ROUTES)
        target.write_routes()
        units.restart(harness.BRIDGE_UNIT)
        if not harness.wait_until(lambda: harness.http_ok(harness.BRIDGE_HEALTH), 60):
            pytest.fail("the GoCD bridge does not answer on 127.0.0.1:5100 after its restart")
        yield target
    finally:
        try:
            _write(BRIDGE_ENV_FILE, env_text, env_stat)
            _write(BRIDGE_ROUTES, routes_text, routes_stat)
            restarted = units.run("restart", harness.BRIDGE_UNIT)
            back = harness.wait_until(lambda: harness.http_ok(harness.BRIDGE_HEALTH), 60)
            if not back and healthy_before:
                pytest.fail(
                    f"the GoCD bridge does not answer after its settings were restored: {restarted.stderr}"
                )
            if not back:
                table.footnotes.append(
                    "the GoCD bridge was not answering before the suite pointed it at the fake GoCD, and "
                    "does not with its own settings restored either (see its journal)"
                )
        finally:
            target.gocd.stop()
