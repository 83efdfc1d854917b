"""Promotion end to end on a real platform (mlflow-ext-auth on Postgres, artifacts in SeaweedFS) whose
server enforces a promotion policy: `mlflow-ext promote`, `rollback`, `report`, and the REST API."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlflow_ext.errors import PromotionRejected
from tests.integration.test_auth_tokens import Api, admin, new_user
from tests.support.environ import patched_environ
from tests.support.services import VENV_BIN, Platform, running_platform

pytestmark = pytest.mark.integration

ALIAS_API = "/api/2.0/mlflow/registered-models/alias"
POLICY_API = "/api/2.0/mlflow-ext/promotion/policy"

SERVER_POLICY = """\
defaults:
  require: [code, training_data]
models:
  - name: "promo-*"
    aliases: [production]
    metrics:
      accuracy: {min: 0.9, better: higher, max_regression: 0.01}
"""
# What a careless client might run with: no gate at all. The server still applies its own policy.
LENIENT_POLICY = "defaults:\n  require: []\n"


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("policies")
    (base / "server.yaml").write_text(SERVER_POLICY)
    (base / "lenient.yaml").write_text(LENIENT_POLICY)
    (base / "data.csv").write_text("x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(50)))
    return {name: base / f"{name}.yaml" for name in ("server", "lenient")} | {"data": base / "data.csv"}


@pytest.fixture(scope="module")
def promo(policies) -> Iterator[Platform]:
    from cryptography.fernet import Fernet

    env = {
        "MLFLOW_EXT_PROMOTION_POLICY": str(policies["server"]),
        "MLFLOW_EXT_PROTECTED_ALIASES": "production,staging",
        # Webhooks to a receiver on loopback, as the bridge gets them.
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    with running_platform(extra_env=env) as started:
        yield started


@pytest.fixture(scope="module")
def client(promo) -> Iterator[Any]:
    from mlflow import MlflowClient

    with patched_environ({**promo.client_env(), "MLFLOW_DISABLE_TELEMETRY": "true"}):
        yield MlflowClient(promo.tracking_uri)


@pytest.fixture(scope="module")
def experiment_id(client) -> str:
    return str(client.create_experiment(f"promotion-{secrets.token_hex(4)}"))


def train(
    client, experiment_id: str, accuracy: float, *, data: Path, lineage: bool = True, role: str = "training"
):
    """A real run: the lineage plugin's tags and mlflow_ext.log_data's fingerprint, or nothing at all."""
    import mlflow

    import mlflow_ext

    if not lineage:
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "accuracy", accuracy)
        return run.info
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow_ext.log_data(str(data), name="train", role=role)
        mlflow.log_metric("accuracy", accuracy)
    return run.info


def new_model(client, experiment_id: str, data: Path, *runs: dict[str, Any]) -> tuple[str, list[str]]:
    """A fresh model ``promo-<hex>`` with one version per run spec (accuracy, lineage, role)."""
    name = f"promo-{secrets.token_hex(4)}"
    client.create_registered_model(name)
    versions = []
    for spec in runs:
        info = train(client, experiment_id, data=data, **spec)
        version = client.create_model_version(name, f"{info.artifact_uri}/model", run_id=info.run_id)
        versions.append(str(version.version))
    return name, versions


def cli(
    platform: Platform, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`mlflow-ext ...` as the admin, with the server's policy file (as operators share it)."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GO_", "MLFLOW_"))},
        **platform.client_env(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_EXT_PROMOTION_POLICY": platform.server.env["MLFLOW_EXT_PROMOTION_POLICY"],
        **(env or {}),
    }
    return subprocess.run(
        [str(VENV_BIN / "mlflow-ext"), *args], capture_output=True, text=True, env=environment, timeout=120
    )


def promotion_tags(client, name: str, version: str) -> dict[str, str]:
    tags = client.get_model_version(name, version).tags
    return {k: v for k, v in tags.items() if k.startswith("promotion.")}


def holder(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def audit_events(platform: Platform) -> list[dict]:
    return [
        json.loads(line)
        for line in platform.server.log().splitlines()
        if line.startswith("{") and '"event"' in line
    ]


def test_promote_checks_every_gate_then_tags_then_moves(promo, client, experiment_id, policies):
    name, (v1, v2) = new_model(
        client, experiment_id, policies["data"], {"accuracy": 0.93}, {"accuracy": 0.935}
    )
    run = client.get_run(client.get_model_version(name, v1).run_id)
    assert run.data.tags.get("lineage.code.commit")  # real lineage tags, from the plugin and log_data
    assert run.data.tags["lineage.data.train.role"] == "training"

    first = cli(
        promo, "promote", name, v1, "--to", "production", "--reason", "first release", "--output", "json"
    )
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["changed"] is True and result["from_version"] is None
    assert {g["status"] for g in result["gates"]} == {"passed", "skipped"}
    assert [g["gate"] for g in result["gates"] if g["status"] == "skipped"] == [
        "accuracy not worse than @production by more than 0.01 (higher is better)"
    ]
    assert holder(client, name, "production") == v1
    tags = promotion_tags(client, name, v1)
    assert tags["promotion.by"] == promo.admin_username
    assert tags["promotion.reason"] == "first release"
    assert tags["promotion.alias"] == "production" and tags["promotion.action"] == "promote"
    assert "promotion.from_version" not in tags

    second = cli(promo, "promote", name, v2, "--to", "production", "--output", "json")
    assert second.returncode == 0, second.stderr
    assert [g["status"] for g in json.loads(second.stdout)["gates"]][-1] == "passed"  # the relative gate
    assert holder(client, name, "production") == v2
    assert promotion_tags(client, name, v2)["promotion.from_version"] == v1

    again = cli(promo, "promote", name, v2, "--to", "production", "--output", "json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False


def test_each_failed_gate_is_named_with_what_was_found(promo, client, experiment_id, policies):
    name, (good, bare, low, worse, test_only) = new_model(
        client,
        experiment_id,
        policies["data"],
        {"accuracy": 0.95},
        {"accuracy": 0.99, "lineage": False},
        {"accuracy": 0.85},
        {"accuracy": 0.93},
        {"accuracy": 0.97, "role": "test"},
    )
    policy = ["--policy", str(policies["server"])]
    assert cli(promo, "promote", name, good, "--to", "production", *policy).returncode == 0

    refused = cli(promo, "promote", name, bare, "--to", "production", *policy)
    assert refused.returncode == 4
    assert "gate 'code revision (lineage.code.commit)' failed" in refused.stderr
    assert (
        "gate 'training-data fingerprint" in refused.stderr
        and "no training-data fingerprint" in refused.stderr
    )

    refused = cli(promo, "promote", name, low, "--to", "production", *policy, "--output", "json")
    assert refused.returncode == 4
    assert "gate 'accuracy >= 0.9' failed: accuracy = 0.85" in refused.stderr
    gates = {g["gate"]: g for g in json.loads(refused.stdout)["gates"]}
    assert gates["accuracy >= 0.9"]["status"] == "failed"
    assert json.loads(refused.stdout)["refused"] is True

    refused = cli(promo, "promote", name, worse, "--to", "production", *policy)
    assert refused.returncode == 4
    assert f"accuracy = 0.93, version {good} (current @production) has 0.95: worse by 0.02" in refused.stderr

    refused = cli(promo, "promote", name, test_only, "--to", "production", *policy)
    assert refused.returncode == 4
    assert "only datasets of other roles: lineage.data.train.fingerprint" in refused.stderr

    assert holder(client, name, "production") == good
    for version in (bare, low, worse, test_only):
        assert promotion_tags(client, name, version) == {}


def test_dry_run_changes_nothing(promo, client, experiment_id, policies):
    name, (v1,) = new_model(client, experiment_id, policies["data"], {"accuracy": 0.95})
    before = client.get_model_version(name, v1).tags
    result = cli(promo, "promote", name, v1, "--to", "production", "--dry-run", "--output", "json")
    assert result.returncode == 0, result.stderr
    planned = json.loads(result.stdout)
    assert planned["dry_run"] is True and planned["changed"] is True
    assert planned["tags"]["promotion.alias"] == "production"
    assert client.get_model_version(name, v1).tags == before
    assert holder(client, name, "production") is None

    text = cli(promo, "promote", name, v1, "--to", "production", "--dry-run")
    assert text.returncode == 0 and "dry run: would move @production" in text.stdout
    assert holder(client, name, "production") is None


def test_rollback_returns_to_the_previous_holder_and_skips_relative_gates(
    promo, client, experiment_id, policies
):
    name, (v1, v2) = new_model(
        client, experiment_id, policies["data"], {"accuracy": 0.91}, {"accuracy": 0.96}
    )
    assert cli(promo, "promote", name, v1, "--to", "production").returncode == 0
    assert cli(promo, "promote", name, v2, "--to", "production").returncode == 0

    # v1 is 0.05 worse than v2: only a rollback may bring it back.
    forward = cli(promo, "promote", name, v1, "--to", "staging")
    assert forward.returncode == 0, forward.stderr  # staging: defaults only, no metric gate

    dry = cli(promo, "rollback", name, "--alias", "production", "--dry-run", "--output", "json")
    assert dry.returncode == 0, dry.stderr
    assert holder(client, name, "production") == v2

    back = cli(
        promo, "rollback", name, "--alias", "production", "--reason", "v2 misbehaves", "--output", "json"
    )
    assert back.returncode == 0, back.stderr
    result = json.loads(back.stdout)
    assert result["action"] == "rollback" and result["version"] == v1 and result["from_version"] == v2
    relative = [g for g in result["gates"] if g["kind"] == "relative"]
    assert relative and relative[0]["status"] == "skipped" and "rollback" in relative[0]["found"]
    assert holder(client, name, "production") == v1
    tags = promotion_tags(client, name, v1)
    assert tags["promotion.action"] == "rollback" and tags["promotion.from_version"] == v2
    assert tags["promotion.reason"] == "v2 misbehaves" and tags["promotion.alias"] == "production"

    # Nothing recorded for staging's holder before v1: a clear refusal, nothing moved.
    nothing = cli(promo, "rollback", name, "--alias", "staging")
    assert nothing.returncode == 1 and "records its promotion to @production, not @staging" in nothing.stderr
    assert holder(client, name, "staging") == v1


def test_rest_api_cannot_skip_the_gates(promo, client, experiment_id, policies):
    name, (good, low, better) = new_model(
        client, experiment_id, policies["data"], {"accuracy": 0.95}, {"accuracy": 0.85}, {"accuracy": 0.97}
    )
    boss = admin(promo)
    user, password = new_user(promo, "promoter")
    boss.ok(
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        {"username": user, "resource_type": "registered_model", "resource_id": name, "permission": "MANAGE"},
    )
    boss.ok(
        "POST", "/api/2.0/mlflow-ext/rights/grant", {"username": user, "right": "promote", "resource": name}
    )
    promoter = Api(promo.tracking_uri, user, password)
    promoter.ok("POST", ALIAS_API, {"name": name, "alias": "production", "version": good})

    for api in (promoter, boss):  # admins skip MLflow's validators, not the gates
        refused = api.call("POST", ALIAS_API, {"name": name, "alias": "production", "version": low})
        assert refused.status_code == 403, refused.text
        body = refused.json()
        assert body["error_code"] == "PERMISSION_DENIED"
        assert body["error_class"] == PromotionRejected.SERVER_ERROR_CLASS  # what clients recognise
        assert {"accuracy >= 0.9"} <= set(body["failed_gates"])
        assert "gate 'accuracy >= 0.9' failed: accuracy = 0.85" in body["message"]
        assert "gate 'accuracy not worse than @production by more than 0.01" in body["message"]
    assert holder(client, name, "production") == good
    assert promotion_tags(client, name, low) == {}
    events = [e for e in audit_events(promo) if e["event"] == "alias.promotion_refused" and e["name"] == name]
    assert {e["actor"] for e in events} == {user, promo.admin_username}
    assert "accuracy >= 0.9" in events[0]["gates"]

    # A direct move that passes gets its audit tags from the server, before the alias moves.
    promoter.ok("POST", ALIAS_API, {"name": name, "alias": "production", "version": better})
    tags = promotion_tags(client, name, better)
    assert tags["promotion.by"] == user and tags["promotion.from_version"] == good
    assert tags["promotion.alias"] == "production" and tags["promotion.action"] == "promote"
    assert "promotion.reason" not in tags

    # Unprotected aliases are the CLI's business only.
    promoter.ok("POST", ALIAS_API, {"name": name, "alias": "candidate", "version": low})


def test_a_move_the_server_refuses_leaves_the_tags_as_they_were(promo, client, experiment_id, policies):
    name, (good, low) = new_model(
        client, experiment_id, policies["data"], {"accuracy": 0.95}, {"accuracy": 0.8}
    )
    assert cli(promo, "promote", name, good, "--to", "production").returncode == 0
    client.set_model_version_tag(name, low, "promotion.reason", "an older note")
    before = promotion_tags(client, name, low)

    refused = cli(promo, "promote", name, low, "--to", "production", "--policy", str(policies["lenient"]))
    assert refused.returncode == 4, refused.stderr
    assert "the server refused" in refused.stderr and "gate 'accuracy >= 0.9' failed" in refused.stderr
    assert promotion_tags(client, name, low) == before
    assert holder(client, name, "production") == good


def test_report_records_the_outcome_and_the_gocd_run(promo, client, experiment_id, policies):
    name, (v1,) = new_model(client, experiment_id, policies["data"], {"accuracy": 0.95})
    gocd = {
        "MLFLOW_MODEL_NAME": name,
        "MLFLOW_MODEL_VERSION": v1,
        "MLFLOW_MODEL_ALIAS": "production",
        "GO_SERVER_URL": "https://gocd.example.com/go",
        "GO_PIPELINE_NAME": f"{name}-release-production",
        "GO_PIPELINE_COUNTER": "7",
        "GO_STAGE_NAME": "deploy",
    }
    failed = cli(
        promo, "report", "--status", "failed", "--stage", "smoke-test", "--message", "HTTP 500", env=gocd
    )
    assert failed.returncode == 0, failed.stderr
    tags = client.get_model_version(name, v1).tags
    assert tags["deploy.status"] == "failed" and tags["deploy.stage"] == "smoke-test"
    assert tags["deploy.message"] == "HTTP 500" and tags["deploy.counter"] == "7"
    assert tags["deploy.pipeline"] == f"{name}-release-production"
    assert (
        tags["deploy.url"]
        == f"https://gocd.example.com/go/pipelines/value_stream_map/{name}-release-production/7"
    )
    assert tags["deploy.alias"] == "production" and tags["deploy.at"]

    deployed = cli(promo, "report", "--status", "deployed", "--output", "json", env=gocd)
    assert deployed.returncode == 0, deployed.stderr
    assert json.loads(deployed.stdout)["tags"]["deploy.stage"] == "deploy"  # GO_STAGE_NAME
    tags = client.get_model_version(name, v1).tags
    assert tags["deploy.status"] == "deployed" and "deploy.message" not in tags

    missing = cli(promo, "report", "--status", "deployed", "--model", name, "--version", "999")
    assert missing.returncode == 8 and "has no version 999" in missing.stderr


def test_gates_can_read_the_evaluation_run_of_the_version(promo, client, experiment_id, policies, tmp_path):
    policy = tmp_path / "evaluation.yaml"
    policy.write_text("defaults:\n  metrics:\n    f1: {min: 0.85, from: evaluation}\n")
    name, (v1,) = new_model(client, experiment_id, policies["data"], {"accuracy": 0.95})

    unevaluated = cli(promo, "promote", name, v1, "--to", "candidate", "--policy", str(policy))
    assert unevaluated.returncode == 4
    assert f"no metric f1 on version {v1} (no evaluation run: no evaluation.run_id tag)" in unevaluated.stderr

    evaluation = client.create_run(experiment_id)
    client.log_metric(evaluation.info.run_id, "f1", 0.83)
    client.set_model_version_tag(name, v1, "evaluation.run_id", evaluation.info.run_id)
    low = cli(promo, "promote", name, v1, "--to", "candidate", "--policy", str(policy))
    assert low.returncode == 4
    assert f"gate 'evaluation f1 >= 0.85' failed: f1 = 0.83 on evaluation run {evaluation.info.run_id}" in (
        low.stderr
    )

    client.log_metric(evaluation.info.run_id, "f1", 0.9)  # the latest value counts
    ok = cli(promo, "promote", name, v1, "--to", "candidate", "--policy", str(policy))
    assert ok.returncode == 0, ok.stderr
    assert holder(client, name, "candidate") == v1


class _AliasReceiver(http.server.ThreadingHTTPServer):
    """A webhook receiver that reads the version's promotion tags the moment MLflow reports the move,
    as a release pipeline started by the bridge would."""

    def __init__(self, client) -> None:
        self.client = client
        self.seen: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                if body.get("entity") == "model_version_alias" and body.get("action") == "created":
                    data = body["data"]
                    tags = promotion_tags(receiver.client, data["name"], data["version"])
                    receiver.seen.append({**data, "tags": tags})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_the_webhook_finds_the_audit_tags_already_in_place(promo, client, experiment_id, policies):
    receiver = _AliasReceiver(client)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    webhook = client.create_webhook(
        name=f"promotion-order-{secrets.token_hex(3)}",
        url=f"http://127.0.0.1:{receiver.server_address[1]}/hook",
        events=["model_version_alias.created"],
    )
    try:
        time.sleep(2)  # every worker's webhook cache (TTL 1 s) has seen it
        name, (v1, v2, v3) = new_model(
            client,
            experiment_id,
            policies["data"],
            {"accuracy": 0.93},
            {"accuracy": 0.94},
            {"accuracy": 0.95},
        )
        assert cli(promo, "promote", name, v1, "--to", "production", "--reason", "first").returncode == 0
        assert cli(promo, "promote", name, v2, "--to", "production", "--reason", "better").returncode == 0
        admin(promo).ok("POST", ALIAS_API, {"name": name, "alias": "production", "version": v3})  # direct

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len([s for s in receiver.seen if s["name"] == name]) < 3:
            time.sleep(0.1)
        seen = {s["version"]: s["tags"] for s in receiver.seen if s["name"] == name}
        assert seen[v1]["promotion.reason"] == "first" and "promotion.from_version" not in seen[v1]
        assert seen[v2]["promotion.from_version"] == v1 and seen[v2]["promotion.reason"] == "better"
        assert seen[v3]["promotion.from_version"] == v2 and seen[v3]["promotion.alias"] == "production"
        assert {tags["promotion.by"] for tags in seen.values()} == {promo.admin_username}
    finally:
        client.delete_webhook(webhook.webhook_id)
        receiver.shutdown()


def as_client(platform: Platform, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`mlflow-ext ...` as a user elsewhere runs it: credentials only, no --policy, no access to the server's
    files (as `nobody` when the tests run as root, who could read anything)."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GO_", "MLFLOW_"))},
        **platform.client_env(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "HOME": str(home),
    }
    argv = [str(VENV_BIN / "mlflow-ext"), *args]
    if os.geteuid() == 0:
        argv = ["runuser", "--preserve-environment", "-u", "nobody", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=environment, timeout=120)


@pytest.fixture
def client_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="promo-client-"))
    home.chmod(0o777)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_the_cli_checks_the_servers_policy_that_it_cannot_read(
    promo, client, experiment_id, policies, client_home
):
    server_file = promo.server.env["MLFLOW_EXT_PROMOTION_POLICY"]
    if os.geteuid() == 0:
        assert subprocess.run(
            ["runuser", "-u", "nobody", "--", "cat", server_file], capture_output=True
        ).returncode
    else:
        os.chmod(server_file, 0)
    name, (good, low) = new_model(
        client, experiment_id, policies["data"], {"accuracy": 0.95}, {"accuracy": 0.85}
    )
    assert cli(promo, "promote", name, good, "--to", "production").returncode == 0

    # Refused on the client by the server's own gate, before any tag is written or the alias is asked to move.
    refused = as_client(
        promo, "promote", name, low, "--to", "production", "--output", "json", home=client_home
    )
    assert refused.returncode == 4, refused.stderr
    result = json.loads(refused.stdout)
    assert "accuracy >= 0.9" in [g["gate"] for g in result["gates"] if g["status"] == "failed"]
    assert result["policy"] == f"models[0] (name 'promo-*') of {server_file}"
    assert result["policy_origin"]["origin"] == "server" and result["policy_origin"]["path"] == server_file
    assert result["policy_origin"]["sha256"] == hashlib.sha256(SERVER_POLICY.encode()).hexdigest()
    assert "the server refused" not in refused.stderr and "gate 'accuracy >= 0.9' failed" in refused.stderr
    assert promotion_tags(client, name, low) == {} and holder(client, name, "production") == good
    assert not [
        e for e in audit_events(promo) if e["event"] == "alias.promotion_refused" and e["name"] == name
    ]

    # The text output says which policy it checked.
    dry = as_client(promo, "promote", name, good, "--to", "staging", "--dry-run", home=client_home)
    assert dry.returncode == 0, dry.stderr
    assert f"policy from: the server's policy {server_file} (sha256 " in dry.stdout

    # --policy still overrides: a lenient file lets the client through, and then the server refuses.
    lenient = client_home / "lenient.yaml"
    lenient.write_text(LENIENT_POLICY)
    lenient.chmod(0o644)
    overridden = as_client(
        promo, "promote", name, low, "--to", "production", "--policy", str(lenient), "--output", "json",
        home=client_home,
    )  # fmt: skip
    assert overridden.returncode == 4, overridden.stderr
    assert "the server refused" in overridden.stderr
    assert json.loads(overridden.stdout)["policy_origin"]["origin"] == "file"
    assert holder(client, name, "production") == good


def test_any_user_may_read_the_servers_policy_and_none_means_built_in(promo, platform, client_home):
    user, password = new_user(promo, "reader")
    served = Api(promo.tracking_uri, user, password).ok("GET", POLICY_API)["policy"]
    assert (
        served["yaml"] == SERVER_POLICY and served["path"] == promo.server.env["MLFLOW_EXT_PROMOTION_POLICY"]
    )
    assert Api(promo.tracking_uri).call("GET", POLICY_API).status_code == 401
    assert admin(platform).ok("GET", POLICY_API) == {"policy": None}  # a server without a policy
    from mlflow import MlflowClient

    with patched_environ({**platform.client_env(), "MLFLOW_DISABLE_TELEMETRY": "true"}):
        plain = MlflowClient(platform.tracking_uri)
        name = f"plain-{secrets.token_hex(4)}"
        plain.create_registered_model(name)
        version = str(plain.create_model_version(name, f"s3://{platform.bucket}/plain/model").version)
    fallback = as_client(
        platform, "promote", name, version, "--to", "staging", "--output", "json", home=client_home
    )
    assert fallback.returncode == 4, fallback.stderr  # no run: the built-in lineage gates fail
    origin = json.loads(fallback.stdout)["policy_origin"]
    assert origin["origin"] == "built-in" and "the server has no promotion policy" in origin["description"]
