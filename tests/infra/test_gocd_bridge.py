"""The GoCD bridge as gocd_bridge.yml leaves it: a hardened service on loopback, its secrets in files only it
can read, its outbox migrated, the MLflow webhook registered once; and, end to end through https://localhost,
a protected alias set by the admin schedules exactly one GoCD pipeline run with the right variables.

The converge (conftest) points the bridge at a fake GoCD on 127.0.0.1:FAKE_GOCD_PORT with a token of its own
and one route; the end-to-end test starts tests/support/fake_gocd.py on that port with that token, so the
real bridge delivers to it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_ext.routing import BRIDGE_VARIABLES
from mlflow_ext.run_context import CODE_COMMIT, DATA_PREFIX
from mlflow_ext.settings import read_env_file
from tests.infra.conftest import (
    BRIDGE_ENV_FILE,
    BRIDGE_PGPASS,
    BRIDGE_ROUTES,
    BRIDGE_TOKEN_FILE,
    MLFLOW_CLI,
    MLFLOW_ENV_FILE,
    TRACKING_URI,
    BridgeSetup,
)
from tests.support.environ import patched_environ
from tests.support.fake_gocd import FakeGoCD

pytestmark = pytest.mark.usefixtures("converged")

ENV_FILE = BRIDGE_ENV_FILE
UNIT = "/etc/systemd/system/gocd-bridge.service"
CLI = "/opt/gocd-bridge/venv/bin/mlflow-ext"
WEBHOOK_URL = "http://127.0.0.1:5100/webhook"
WEBHOOK_NAME = "mlflow-ext-bridge"


def _bridge_check(host) -> dict:
    return json.loads(host.check_output(f"{CLI} bridge check --output json --env-file {ENV_FILE}"))


# --- the service ------------------------------------------------------------------------------------------


def test_service_running_and_enabled(host):
    service = host.service("gocd-bridge")
    assert service.is_running
    assert service.is_enabled


def test_unit_is_hardened(host):
    unit = host.file(UNIT)
    lines = set(unit.content_string.splitlines())
    for expected in [
        "User=gocd-bridge",
        "Group=gocd-bridge",
        f"EnvironmentFile={ENV_FILE}",
        f"ExecStart={CLI} bridge serve",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RuntimeDirectory=gocd-bridge",
        "StateDirectory=gocd-bridge",
        "ReadWritePaths=/var/lib/gocd-bridge",
        "WorkingDirectory=/",
        "UMask=0027",
    ]:
        assert expected in lines, expected
    after = next(line for line in lines if line.startswith("After=")).split("=", 1)[1].split()
    assert {"postgresql.service", "mlflow-server.service"} <= set(after), after
    assert unit.user == "root" and unit.mode == 0o644


def test_runs_as_its_own_user(host):
    processes = host.process.filter(user="gocd-bridge")
    assert any("bridge serve" in p.args for p in processes), "no bridge process owned by gocd-bridge"
    assert not [p for p in host.process.filter(user="root") if "/opt/gocd-bridge/venv" in p.args]


def test_listens_on_loopback_only(host):
    pids = {int(pid) for pid in host.check_output("pgrep -u gocd-bridge -f 'bridge serve'").split()}
    listening = []
    for line in host.check_output("ss -Hlntup").splitlines():
        if pids & {int(p) for p in re.findall(r"pid=(\d+)", line)}:
            address, _, port = line.split()[4].rpartition(":")
            listening.append((address.strip("[]").split("%")[0], int(port)))
    assert listening, "the bridge listens nowhere"
    assert {port for _, port in listening} == {5100}, listening
    assert all(ipaddress.ip_address(address).is_loopback for address, _ in listening), listening


def test_health_on_loopback(host):
    assert host.run("curl -fsS http://127.0.0.1:5100/health").rc == 0


# --- configuration and secrets ----------------------------------------------------------------------------


def test_config_dir_is_closed_to_others(host):
    d = host.file("/etc/gocd-bridge")
    assert (d.mode, d.user, d.group) == (0o750, "root", "gocd-bridge")
    # The admin's scratch env file of the webhook registration is gone once it ran.
    assert not host.file("/etc/gocd-bridge/.register-webhook.env").exists


def test_env_file_names_come_from_the_registry(host):
    registry = json.loads(host.check_output(f"{CLI} bridge settings --format json"))
    names = set(read_env_file(ENV_FILE))
    for name, value in read_env_file(ENV_FILE).items():
        assert not re.search(r"[\s\"'$#`\\]", value), f"{name} is quoted or unsafe"
    # PGPASSFILE and MLFLOW_DISABLE_TELEMETRY are read by libpq and MLflow, not by the bridge's settings.
    assert names - {s["name"] for s in registry} == {"PGPASSFILE", "MLFLOW_DISABLE_TELEMETRY"}


def test_resolved_bridge_settings(host, bridge: BridgeSetup):
    settings = _bridge_check(host)
    assert settings["MLFLOW_EXT_BRIDGE_HOST"] == "127.0.0.1"
    assert settings["MLFLOW_EXT_BRIDGE_PORT"] == 5100
    assert settings["MLFLOW_EXT_BRIDGE_DATABASE_URI"] == (
        "postgresql+psycopg2://mlflow_bridge@127.0.0.1:5432/mlflow_bridge"
    )
    assert settings["MLFLOW_EXT_BRIDGE_ROUTES"] == BRIDGE_ROUTES
    assert settings["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert settings["MLFLOW_EXT_BRIDGE_PUBLIC_TRACKING_URI"] == TRACKING_URI
    assert settings["MLFLOW_EXT_BRIDGE_GOCD_URL"] == bridge.gocd_url
    assert settings["MLFLOW_EXT_BRIDGE_GOCD_USERNAME"] == bridge.gocd_username
    assert settings["routes"] == 1
    masked = ("MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET", "MLFLOW_EXT_BRIDGE_GOCD_TOKEN", "MLFLOW_TRACKING_TOKEN")
    for secret in masked:
        assert settings[secret] == "***", secret
    assert settings["MLFLOW_TRACKING_USERNAME"] is None and settings["MLFLOW_TRACKING_PASSWORD"] is None


def test_pgpass_holds_the_password_and_the_uri_does_not(host, secrets):
    password = secrets["gocd_bridge_db_password"]
    assert host.file(BRIDGE_PGPASS).content_string.splitlines()[-1] == (
        f"127.0.0.1:5432:mlflow_bridge:mlflow_bridge:{password}"
    )
    assert password not in read_env_file(ENV_FILE)["MLFLOW_EXT_BRIDGE_DATABASE_URI"]


def test_env_file_holds_the_secrets(host, secrets, bridge: BridgeSetup):
    env = read_env_file(ENV_FILE)
    assert env["MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET"] == secrets["gocd_bridge_webhook_secret"]
    assert env["MLFLOW_TRACKING_TOKEN"] == Path(BRIDGE_TOKEN_FILE).read_text(encoding="ascii").strip()
    assert env["MLFLOW_EXT_BRIDGE_GOCD_TOKEN"] == bridge.gocd_token
    # The admin's credentials are not the bridge's.
    assert secrets["mlflow_admin_password"] not in host.file(ENV_FILE).content_string


# --- the outbox, the server's side, the webhook -----------------------------------------------------------


def test_outbox_is_migrated(host):
    """The role's command, run again as the bridge's user: nothing left to create."""
    result = host.run(f"runuser -u gocd-bridge -- {CLI} bridge migrate --output json --env-file {ENV_FILE}")
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout)["changed"] is False


def test_outbox_status_answers(host):
    report = json.loads(host.check_output(f"{CLI} bridge status --output json --env-file {ENV_FILE}"))
    assert "counts" in report and "parked" in report


def test_server_delivers_webhooks_to_loopback(host):
    command = f"{MLFLOW_CLI} server check --output json --env-file {MLFLOW_ENV_FILE}"
    settings = json.loads(host.check_output(command))
    assert settings["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"] == ["http", "https"]
    assert settings["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] is True
    assert settings["MLFLOW_WEBHOOK_CACHE_TTL"] == 5
    assert settings["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == "***"


def test_webhook_registered_once(admin_env):
    with patched_environ(admin_env):
        listed = MlflowClient(TRACKING_URI).list_webhooks(max_results=100)
    webhooks = [w for w in listed if w.name == WEBHOOK_NAME]
    assert len(webhooks) == 1, webhooks
    webhook = webhooks[0]
    assert webhook.url == WEBHOOK_URL
    assert str(webhook.status) == "ACTIVE"
    assert {str(e) for e in webhook.events} >= {"model_version_alias.created", "model_version.created"}


def test_webhook_registration_is_idempotent(host, secrets, tmp_path):
    """The role's command as a dry run, with the admin's credentials in a root-only env file."""
    env_file = tmp_path / "register.env"
    env_file.touch(mode=0o600)
    env_file.write_text(
        "MLFLOW_TRACKING_URI=http://127.0.0.1:5000\n"
        "MLFLOW_TRACKING_USERNAME=admin\n"
        f"MLFLOW_TRACKING_PASSWORD={secrets['mlflow_admin_password']}\n"
        f"MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET={secrets['gocd_bridge_webhook_secret']}\n",
        encoding="ascii",
    )
    result = host.run(
        f"{CLI} bridge register-webhook --env-file {env_file} --url {WEBHOOK_URL} --output json --dry-run"
    )
    assert result.rc == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["changed"] is False, report


def test_bridge_account_reads_and_tags_every_model(admin_env):
    from mlflow_ext.clients.auth import AuthClient

    with patched_environ(admin_env):
        answer = AuthClient(TRACKING_URI).call(
            "GET", "/api/3.0/mlflow/users/permissions/list", {"username": "gocd-bridge"}
        )
    assert answer["is_admin"] is False
    grants = {(p["resource_type"], p["resource_pattern"], p["permission"]) for p in answer["permissions"]}
    assert ("registered_model", "*", "EDIT") in grants, grants


# --- end to end -------------------------------------------------------------------------------------------


@pytest.fixture
def fake_gocd(host, bridge: BridgeSetup):
    """The fake GoCD where the converge pointed the bridge, with the route's pipeline declared.

    A real GoCD keeps its counters; this one starts afresh each session, while the bridge's outbox remembers
    the runs of earlier sessions (it matches a trigger to the first run of its user above the highest counter
    it owns). So another user first runs the pipeline up to that counter, as a long-lived GoCD would have.
    """
    from mlflow_ext.clients.gocd import GoCDClient

    status = json.loads(
        host.check_output(f"{CLI} bridge status --output json --limit 1000 --env-file {ENV_FILE}")
    )
    owned = [row["counter"] or 0 for row in status["delivered"] if row["pipeline"] == bridge.pipeline]
    other_token = uuid.uuid4().hex
    gocd = FakeGoCD(tokens={bridge.gocd_token: bridge.gocd_username, other_token: "admin"})
    gocd.port = bridge.gocd_port
    gocd.add_pipeline(bridge.pipeline, variables=[*BRIDGE_VARIABLES, *bridge.route_variables])
    with gocd:
        other = GoCDClient(gocd.url, token=other_token)
        for _ in range(max(owned, default=0)):
            other.schedule(bridge.pipeline, {})
        yield gocd


def _schedules_of(gocd: FakeGoCD, pipeline: str, model: str):
    return [s for s in gocd.schedules(pipeline) if s.variables.get("MLFLOW_MODEL_NAME") == model]


LINEAGE = {
    CODE_COMMIT: "0123456789abcdef0123456789abcdef01234567",
    f"{DATA_PREFIX}train.fingerprint": "sha256:" + "0" * 64,
    f"{DATA_PREFIX}train.role": "training",
}


def test_server_refuses_a_protected_alias_without_lineage(admin_env, bridge: BridgeSetup):
    """make up's default policy: even the admin, through the REST API, cannot move a protected alias to a
    version nobody can trace, and the answer names the gates."""
    model = bridge.model_prefix + uuid.uuid4().hex[:8]
    with patched_environ(admin_env):
        client = MlflowClient(TRACKING_URI)
        run = client.create_run(client.create_experiment(f"{model}-experiment"))
        client.create_registered_model(model)
        version = client.create_model_version(model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        with pytest.raises(MlflowException) as refused:
            client.set_registered_model_alias(model, bridge.alias, version.version)
        assert refused.value.get_http_status_code() == 403
        assert (
            "code revision" in refused.value.message and "training-data fingerprint" in refused.value.message
        )
        assert bridge.alias not in client.get_registered_model(model).aliases


def test_protected_alias_schedules_one_pipeline_run(admin_env, fake_gocd, bridge: BridgeSetup):
    model = bridge.model_prefix + uuid.uuid4().hex[:8]
    with patched_environ(admin_env):
        client = MlflowClient(TRACKING_URI)
        experiment_id = client.create_experiment(f"{model}-experiment")
        # The lineage the server's default promotion policy requires of a protected alias's version.
        run = client.create_run(experiment_id, tags=LINEAGE)
        client.set_terminated(run.info.run_id)
        client.create_registered_model(model)
        version = client.create_model_version(model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias(model, bridge.alias, version.version)

        deadline = time.monotonic() + 60
        while not _schedules_of(fake_gocd, bridge.pipeline, model) and time.monotonic() < deadline:
            time.sleep(0.2)
        scheduled = _schedules_of(fake_gocd, bridge.pipeline, model)
        assert scheduled, f"no schedule of {bridge.pipeline} for {model} within 60 s"

        # The feedback tags name the run GoCD scheduled; by then any duplicate would have been sent too.
        deadline = time.monotonic() + 30
        while "gocd.counter" not in client.get_model_version(model, version.version).tags:
            assert time.monotonic() < deadline, "no gocd.* feedback tags on the version within 30 s"
            time.sleep(0.5)
        tags = client.get_model_version(model, version.version).tags

    time.sleep(2)
    scheduled = _schedules_of(fake_gocd, bridge.pipeline, model)
    assert len(scheduled) == 1, scheduled
    schedule = scheduled[0]
    assert schedule.variables == {
        "MLFLOW_MODEL_NAME": model,
        "MLFLOW_MODEL_VERSION": version.version,
        "MLFLOW_MODEL_ALIAS": bridge.alias,
        "MLFLOW_RUN_ID": run.info.run_id,
        "MLFLOW_MODEL_URI": f"models:/{model}/{version.version}",
        "MLFLOW_TRACKING_URI": TRACKING_URI,
        **bridge.route_variables,
    }
    assert schedule.approver == bridge.gocd_username
    assert tags["gocd.pipeline"] == bridge.pipeline
    assert tags["gocd.counter"] == str(schedule.counter)
