"""docker/compose.yaml on a real engine: the lifecycle through the proxy's published HTTPS port, the service
account's token in a client's hands, and every entity kept across `compose down` and `up`."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.docker.conftest import BUCKET, BucketLister, Stack, figure
from tests.integration.lifecycle import UNAUTHENTICATED_CALLS, run_lifecycle, status_without_credentials
from tests.support.environ import patched_environ

KEPT: dict = {}


def test_model_lifecycle_through_the_proxy(stack: Stack, tmp_path) -> None:
    summary = run_lifecycle(stack.admin_env(), BucketLister(stack), BUCKET)
    assert summary["version"]
    with patched_environ(stack.admin_env()):
        client = MlflowClient(stack.url)
        local = client.download_artifacts(summary["run_id"], "reports/report.txt", str(tmp_path))
        report = Path(local).read_bytes()
    assert report
    KEPT.update(summary=summary, report=report)
    figure("lifecycle through the proxy", "OK")


@pytest.mark.parametrize(("path", "body"), UNAUTHENTICATED_CALLS)
def test_calls_without_credentials_are_refused(stack: Stack, path, body) -> None:
    assert status_without_credentials(stack.url, path, body, cafile=str(stack.cert)) == 401


def test_service_account_token_used_by_a_client(stack: Stack) -> None:
    token = stack.service_token()
    assert token.startswith("mlxt_"), "the service-account one-shot left no token"
    status, answer = stack.call("GET", "/api/2.0/mlflow/users/current", f"Bearer {token}")
    assert status == 200
    assert (answer["user"]["username"], answer["user"]["is_admin"]) == ("gocd", False)
    env = {
        "MLFLOW_TRACKING_URI": stack.url,
        "MLFLOW_TRACKING_TOKEN": token,
        "MLFLOW_TRACKING_SERVER_CERT_PATH": str(stack.cert),
    }
    with patched_environ(env):
        assert isinstance(MlflowClient(stack.url).search_experiments(max_results=5), list)
    unknown = "mlxt_" + secrets.token_urlsafe(32)
    assert stack.call("GET", "/api/2.0/mlflow/users/current", f"Bearer {unknown}")[0] == 401
    KEPT["token"] = token


def test_promotion_policy_is_in_force(stack: Stack) -> None:
    """The mounted policy (the Ansible role's default) gates the protected alias, even for the admin."""
    if "summary" not in KEPT:
        pytest.skip("needs the lifecycle's model version")
    summary = KEPT["summary"]
    status, _ = stack.call(
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        stack.admin_authorization(),
        {"name": summary["model_name"], "alias": "production", "version": summary["version"]},
    )
    assert status == 403
    with patched_environ(stack.admin_env()), pytest.raises(MlflowException, match=r"promotion-policy\.yaml"):
        MlflowClient(stack.url).set_registered_model_alias(
            summary["model_name"], "production", summary["version"]
        )


def test_gocd_bridge_joins_the_stack(stack: Stack) -> None:
    """Profile gocd: the bridge with its own account's token, its outbox migrated, healthy, reading the
    registry through the server, and the webhook registered by the admin."""
    token_file = "/home/mlflow/gocd_bridge_token"
    created = stack.compose(
        "run",
        "--rm",
        "--no-deps",
        "--entrypoint",
        "mlflow-ext",
        "service-account",
        "tokens",
        "ensure-service-account",
        "--username=gocd-bridge",
        "--token-name=gocd-bridge",
        f"--token-file={token_file}",
        "--output=json",
    )
    assert '"username": "gocd-bridge"' in created.stdout
    token = stack.compose(
        "run", "--rm", "--no-deps", "--entrypoint", "cat", "service-account", token_file
    ).stdout.strip()
    assert token.startswith("mlxt_")
    env_file = stack.directory / "gocd-bridge.env"
    values = {
        "MLFLOW_TRACKING_TOKEN": token,
        "MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET": secrets.token_hex(20),
        # No GoCD on this network: the bridge starts and queues; delivering is proven by tests/infra.
        "MLFLOW_EXT_BRIDGE_GOCD_URL": "http://gocd.invalid:8153",
        "MLFLOW_EXT_BRIDGE_GOCD_TOKEN": secrets.token_hex(16),
    }
    lines = [line for line in env_file.read_text().splitlines() if line.split("=", 1)[0] not in values]
    env_file.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in values.items())]) + "\n")

    stack.profiles = ["gocd"]
    stack.compose("up", "--detach", "--pull", "never", "--no-build", "gocd-bridge", timeout=900)
    deadline = time.monotonic() + 300
    state = ""
    while time.monotonic() < deadline:
        state = stack.compose("ps", "--format", "{{.Health}}", "gocd-bridge").stdout.strip()
        if state == "healthy":
            break
        time.sleep(3)
    logs = stack.compose("logs", "--no-color", "gocd-bridge-migrate", "gocd-bridge").stdout
    assert state == "healthy", logs[-4000:]
    answer = stack.exec(
        "gocd-bridge",
        "python",
        "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:5100/health').read().decode())",
    )
    assert '"ok"' in answer
    assert '"changed": true' in logs, "the outbox was not migrated"
    assert "bridge listening on 0.0.0.0:5100" in logs
    assert "reconcile pass failed" not in logs, logs[-4000:]

    # The admin registers the webhook from the bridge's container; credentials from this environment only.
    admin = {
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": stack.values["MLFLOW_AUTH_ADMIN_PASSWORD"],
    }
    stack.env.update(admin)
    try:
        registered = stack.compose(
            "run",
            "--rm",
            "--no-deps",
            "-e",
            "MLFLOW_TRACKING_USERNAME",
            "-e",
            "MLFLOW_TRACKING_PASSWORD",
            "--entrypoint",
            "mlflow-ext",
            "gocd-bridge",
            "bridge",
            "register-webhook",
            "--url",
            "http://gocd-bridge:5100/webhook",
            "--output",
            "json",
        )
    finally:
        for name in admin:
            stack.env.pop(name, None)
    assert '"action": "create"' in registered.stdout, registered.stdout[-2000:]
    KEPT["webhook"] = "http://gocd-bridge:5100/webhook"
    figure("GoCD bridge (profile gocd)", "healthy, outbox migrated, webhook registered")


def test_down_and_up_keep_every_entity(stack: Stack, tmp_path) -> None:
    if "summary" not in KEPT or "token" not in KEPT:
        pytest.skip("needs the lifecycle and the service account's token from the tests above")
    summary = KEPT["summary"]
    stack.compose("down", "--timeout", "60", timeout=300)
    assert not stack.compose("ps", "--all", "--quiet").stdout.strip(), "down left containers"
    figure("warm start: compose up after down to /health (s)", f"{stack.up():.1f}")
    stack.fetch_cert()

    kept = []
    with patched_environ(stack.admin_env()):
        client = MlflowClient(stack.url)
        run = client.get_run(summary["run_id"])
        assert run.info.experiment_id == summary["experiment_id"]
        assert run.data.params == {"weight": "2.0", "features": "a,b"}
        assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.9, 0.5, 0.3]
        kept += ["experiment", "run", "params", "metrics"]
        local = client.download_artifacts(summary["run_id"], "reports/report.txt", str(tmp_path))
        assert Path(local).read_bytes() == KEPT["report"]
        kept.append("artifact")
        name = client.get_model_version(
            client.search_model_versions(f"run_id='{summary['run_id']}'")[0].name, summary["version"]
        ).name
        assert client.get_model_version_by_alias(name, "champion").version == summary["version"]
        kept += ["model version", "alias"]
        if "webhook" in KEPT:
            assert KEPT["webhook"] in [hook.url for hook in client.list_webhooks()]
            kept.append("webhook")
    # The admin's password and the token live in the auth database: both still work, and the one-shot kept
    # the valid token instead of issuing another.
    assert stack.service_token() == KEPT["token"]
    status, answer = stack.call("GET", "/api/2.0/mlflow/users/current", f"Bearer {KEPT['token']}")
    assert (status, answer["user"]["username"]) == (200, "gocd")
    kept.append("service token")
    figure("entities kept across down/up", ", ".join(kept))
