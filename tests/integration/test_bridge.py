"""The bridge on real components: the MLflow server (Postgres, SeaweedFS, auth) delivering webhooks to
`mlflow-ext bridge serve` as a subprocess, which triggers the fake GoCD.

Promotions are plain `MlflowClient().set_registered_model_alias` calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests

from mlflow_ext.bridge import signature
from mlflow_ext.routing import BRIDGE_VARIABLES
from tests.support.bridge import GOCD_USER, Bridge, webhook_env
from tests.support.fake_gocd import FakeGoCD
from tests.support.services import VENV_BIN, http_ok, running_platform, stop_process, wait_for

pytestmark = pytest.mark.integration

TOKEN = "gocd-token-for-the-bridge-0123"
FEEDBACK = {"gocd.pipeline", "gocd.counter", "gocd.url", "gocd.scheduled_at"}
ROUTES = """
routes:
  - model: "iris-*"
    alias: "champion"
    pipeline: iris-release-champion
    variables: {DEPLOY_TARGET: local}
  - model: "bulk-*"
    alias: "slot-*"
    pipeline: bulk-release
  - model: "evt-*"
    event: model_version.created
    pipeline: evt-build
  - model: "evt-*"
    event: model_version_tag.set
    tag: "qa.*"
    pipeline: evt-qa
"""


@pytest.fixture(scope="module")
def gocd():
    with FakeGoCD(tokens={TOKEN: GOCD_USER}) as fake:
        fake.add_pipeline("iris-release-champion", variables=[*BRIDGE_VARIABLES, "DEPLOY_TARGET"])
        fake.add_pipeline("bulk-release", variables=BRIDGE_VARIABLES)
        fake.add_pipeline("evt-build", variables=BRIDGE_VARIABLES)
        fake.add_pipeline("evt-qa", variables=BRIDGE_VARIABLES)
        yield fake


@pytest.fixture(scope="module")
def platform():
    with running_platform(extra_env=webhook_env()) as started:
        yield started


@pytest.fixture(scope="module")
def bridge(platform, gocd):
    started = Bridge(platform, gocd.url, TOKEN, ROUTES).prepare()
    started.start()
    time.sleep(2)  # MLflow's per-worker webhook cache (TTL 1 s) forgets the empty list
    yield started
    started.cleanup()


@pytest.fixture(scope="module")
def client(platform):
    from mlflow import MlflowClient

    os.environ.update({k: v for k, v in platform.client_env().items() if k != "MLFLOW_TRACKING_URI"})
    return MlflowClient(tracking_uri=platform.tracking_uri, registry_uri=platform.tracking_uri)


def make_model(client, name: str, versions: int) -> dict[str, str]:
    """A registered model with ``versions`` versions, each from its own run; version -> run id."""
    experiment = client.get_experiment_by_name("bridge-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("bridge-tests")
    client.create_registered_model(name)
    runs = {}
    for _ in range(versions):
        info = client.create_run(experiment_id).info
        version = client.create_model_version(name, f"{info.artifact_uri}/model", run_id=info.run_id)
        runs[str(version.version)] = info.run_id
    return runs


def wait_until(check, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not after {timeout:.0f}s")


def of_model(gocd, name: str) -> list:
    return [s for s in gocd.schedules() if s.variables["MLFLOW_MODEL_NAME"] == name]


def test_register_webhook_is_idempotent(bridge):
    assert bridge.registration["changed"] is True
    again = bridge.cli("register-webhook", "--url", f"{bridge.url}/webhook")
    assert again["changed"] is False and again["webhook_id"] == bridge.registration["webhook_id"]
    dry = bridge.cli("register-webhook", "--url", f"{bridge.url}/other/webhook", "--dry-run")
    assert dry["changed"] is True and dry["differences"] == ["url"]
    assert bridge.cli("register-webhook", "--url", f"{bridge.url}/webhook")["changed"] is False


def test_a_promotion_schedules_once_and_a_rollback_schedules_again(bridge, gocd, client):
    runs = make_model(client, "iris-one", 2)
    client.set_registered_model_alias("iris-one", "champion", "1")
    (first,) = wait_until(lambda: of_model(gocd, "iris-one"), "first schedule")
    assert first.pipeline == "iris-release-champion"
    assert first.approver == GOCD_USER
    assert first.variables == {
        "MLFLOW_MODEL_NAME": "iris-one",
        "MLFLOW_MODEL_VERSION": "1",
        "MLFLOW_MODEL_ALIAS": "champion",
        "MLFLOW_RUN_ID": runs["1"],
        "MLFLOW_MODEL_URI": "models:/iris-one/1",
        "MLFLOW_TRACKING_URI": "https://mlflow.example.com",
        "DEPLOY_TARGET": "local",
    }
    # Feedback on the version, and the tag events it causes route nowhere.
    tags = wait_until(
        lambda: (t := client.get_model_version("iris-one", "1").tags).keys() >= FEEDBACK and t,
        "feedback tags",
    )
    assert tags["gocd.pipeline"] == "iris-release-champion"
    assert tags["gocd.counter"] == str(first.counter)
    assert (
        tags["gocd.url"] == f"{gocd.url}/go/pipelines/value_stream_map/iris-release-champion/{first.counter}"
    )
    assert datetime.fromisoformat(tags["gocd.scheduled_at"].replace("Z", "+00:00")).tzinfo is not None

    client.set_registered_model_alias("iris-one", "champion", "2")
    wait_until(lambda: len(of_model(gocd, "iris-one")) == 2, "promotion to v2")
    client.set_registered_model_alias("iris-one", "champion", "1")  # rollback: A -> B -> A
    wait_until(lambda: len(of_model(gocd, "iris-one")) == 3, "rollback to v1")
    time.sleep(8)  # reconcile passes (every second, settling 5 s) and late webhooks must add nothing
    assert [s.variables["MLFLOW_MODEL_VERSION"] for s in of_model(gocd, "iris-one")] == ["1", "2", "1"]
    # Setting the alias to the version it already holds is no promotion.
    client.set_registered_model_alias("iris-one", "champion", "1")
    time.sleep(3)
    assert len(of_model(gocd, "iris-one")) == 3


def _signed_post(
    bridge,
    body: bytes,
    delivery_id: str | None = None,
    timestamp: int | None = None,
    secret: str | None = None,
) -> requests.Response:
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    headers = {
        "Content-Type": "application/json",
        signature.DELIVERY_ID_HEADER: delivery_id,
        signature.TIMESTAMP_HEADER: stamp,
        signature.SIGNATURE_HEADER: signature.sign(secret or bridge.secret, delivery_id, stamp, body),
    }
    return requests.post(f"{bridge.url}/webhook", data=body, headers=headers, timeout=10)


def _alias_body(name: str, version: str, alias: str = "champion") -> bytes:
    return json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"name": name, "alias": alias, "version": version},
        }
    ).encode()


def test_forged_replayed_and_stale_deliveries_schedule_nothing(bridge, gocd, client):
    make_model(client, "iris-forged", 1)
    # Aliases are moved only by these hand-made deliveries; the registry keeps none, and the reconcile
    # loop would see nothing to catch up with, so whatever is scheduled came from them.
    assert (
        _signed_post(bridge, _alias_body("iris-forged", "1"), secret="not-the-webhook-secret").status_code
        == 401
    )
    stale = _signed_post(bridge, _alias_body("iris-forged", "1"), timestamp=int(time.time()) - 3600)
    assert stale.status_code == 401
    unsigned = requests.post(f"{bridge.url}/webhook", data=_alias_body("iris-forged", "1"), timeout=10)
    assert unsigned.status_code == 401
    for body, status in (
        (b"{not json", 400),
        (b'{"entity": "model_version_alias"}', 422),
        (_alias_body("iris-forged", "one"), 422),
    ):
        assert _signed_post(bridge, body).status_code == status
    time.sleep(2)
    assert of_model(gocd, "iris-forged") == []
    # A genuine delivery, then the same bytes replayed: one schedule.
    body, delivery_id = _alias_body("iris-forged", "1"), str(uuid.uuid4())
    assert _signed_post(bridge, body, delivery_id).status_code == 200
    assert _signed_post(bridge, body, delivery_id).status_code == 409
    wait_until(lambda: of_model(gocd, "iris-forged"), "the genuine delivery")
    time.sleep(2)
    assert len(of_model(gocd, "iris-forged")) == 1


def test_gocd_down_while_100_promotions_happen(bridge, gocd, client):
    models = [f"bulk-{i:02d}" for i in range(20)]
    for name in models:
        make_model(client, name, 5)
    gocd.go_down()
    try:
        for name in models:
            for version in range(1, 6):
                client.set_registered_model_alias(name, f"slot-{version}", str(version))
        wait_until(lambda: bridge.status()["counts"]["pending"] >= 99, "100 triggers in the outbox", 60)
        waiting = bridge.status()["waiting"]
        assert "unreachable" in (waiting[0]["last_error"] or "")
    finally:
        gocd.come_back()
    wait_until(lambda: len(gocd.schedules("bulk-release")) >= 100, "100 schedules after GoCD is back", 120)
    time.sleep(3)
    scheduled = [
        (
            s.variables["MLFLOW_MODEL_NAME"],
            s.variables["MLFLOW_MODEL_ALIAS"],
            s.variables["MLFLOW_MODEL_VERSION"],
        )
        for s in gocd.schedules("bulk-release")
    ]
    expected = {(name, f"slot-{v}", str(v)) for name in models for v in range(1, 6)}
    assert len(scheduled) == 100 and set(scheduled) == expected
    status = bridge.status()
    assert status["counts"]["delivered"] >= 100 and status["counts"]["pending"] == 0


def metric_values(text: str) -> dict[str, float]:
    """Sample lines of Prometheus' text format, by name and labels."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_show_the_outbox_deliveries_their_latency_and_gocd_errors(bridge):
    """Right after the 100 promotions delivered once GoCD came back (the test above)."""
    answer = requests.get(bridge.url + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    samples = metric_values(answer.text)
    assert samples["mlflow_bridge_outbox_up"] == 1
    assert samples['mlflow_bridge_outbox_rows{status="pending"}'] == 0
    assert samples['mlflow_bridge_outbox_rows{status="parked"}'] == 0
    assert samples['mlflow_bridge_outbox_rows{status="delivered"}'] >= 100
    assert samples["mlflow_bridge_delivered_total"] >= 100
    assert samples["mlflow_bridge_delivery_latency_seconds_count"] >= 100
    # The triggers waited for GoCD to come back: their latency is seconds, not milliseconds.
    assert samples['mlflow_bridge_delivery_latency_seconds_bucket{le="0.5"}'] < 100
    assert samples['mlflow_bridge_gocd_errors_total{kind="unavailable"}'] >= 1


def test_sigkill_mid_delivery_loses_and_doubles_nothing(bridge, gocd, client):
    make_model(client, "iris-kill", 4)
    gocd.hold_schedules()
    try:
        client.set_registered_model_alias("iris-kill", "champion", "1")
        # GoCD has recorded the trigger; its 202 is held, so the bridge has not committed it yet.
        wait_until(lambda: of_model(gocd, "iris-kill"), "the held trigger")
        bridge.kill()
        client.set_registered_model_alias("iris-kill", "champion", "2")  # while the bridge is dead
    finally:
        gocd.release_schedules()
    bridge.start()
    wait_until(lambda: len(of_model(gocd, "iris-kill")) == 2, "catch-up after the restart", 60)
    client.set_registered_model_alias("iris-kill", "champion", "3")
    wait_until(lambda: len(of_model(gocd, "iris-kill")) == 3, "the next promotion")
    time.sleep(8)
    assert [s.variables["MLFLOW_MODEL_VERSION"] for s in of_model(gocd, "iris-kill")] == ["1", "2", "3"]
    delivered = [r for r in bridge.status()["delivered"] if r["model"] == "iris-kill"]
    assert sorted(r["counter"] for r in delivered) == sorted(s.counter for s in of_model(gocd, "iris-kill"))
    assert any("history" in (r["gocd_message"] or "") for r in delivered)


def _restart_mlflow(platform) -> None:
    """Stop the MLflow server (pending webhook retries die with it) and start it on the same port."""
    server = platform.server
    stop_process(server.process)
    log = open(server.directory / "server.log", "ab")  # noqa: SIM115 (closed with the process)
    server.process = subprocess.Popen(
        [str(VENV_BIN / "mlflow-ext"), "server", "run", "--env-file", str(server.env_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=server.directory,
        env={**os.environ, "TMPDIR": str(server.directory)},
    )
    wait_for(lambda: http_ok(server.url + "/health"), "mlflow server", 120, server.process)


def test_reconcile_catches_up_after_the_bridge_and_mlflow_were_down(bridge, gocd, platform, client):
    for name in ("iris-missed-a", "iris-missed-b"):
        make_model(client, name, 2)
    bridge.stop()
    client.set_registered_model_alias("iris-missed-a", "champion", "2")
    client.set_registered_model_alias("iris-missed-b", "champion", "1")
    _restart_mlflow(platform)  # webhook retries still pending in the old server are lost
    bridge.start()
    for name, version in (("iris-missed-a", "2"), ("iris-missed-b", "1")):
        (found,) = wait_until(lambda name=name: of_model(gocd, name), f"{name} caught up", 60)
        assert found.variables["MLFLOW_MODEL_VERSION"] == version
    sources = {
        r["model"]: r["source"] for r in bridge.status()["delivered"] if r["model"].startswith("iris-missed")
    }
    assert sources == {"iris-missed-a": "reconcile", "iris-missed-b": "reconcile"}
    time.sleep(8)
    assert len(of_model(gocd, "iris-missed-a")) == len(of_model(gocd, "iris-missed-b")) == 1


def test_a_paused_pipeline_parks_and_retry_requeues(bridge, gocd, client):
    make_model(client, "iris-paused", 1)
    gocd.pause("iris-release-champion", cause="change freeze")
    try:
        client.set_registered_model_alias("iris-paused", "champion", "1")
        paused = wait_until(
            lambda: [
                r
                for r in bridge.status()["waiting"]
                if r["model"] == "iris-paused" and r["status"] == "paused"
            ],
            "paused trigger",
        )
        assert paused[0]["gocd_status"] == 409 and "paused" in paused[0]["gocd_message"]
        assert of_model(gocd, "iris-paused") == []
    finally:
        gocd.unpause("iris-release-champion")
    wait_until(lambda: of_model(gocd, "iris-paused"), "delivery after unpause")


def test_version_and_tag_events_route_and_the_platforms_own_tags_never_do(bridge, gocd, client):
    runs = make_model(client, "evt-a", 1)
    (built,) = wait_until(lambda: gocd.schedules("evt-build"), "version created")
    assert built.variables["MLFLOW_MODEL_VERSION"] == "1"
    assert built.variables["MLFLOW_MODEL_ALIAS"] == ""
    assert built.variables["MLFLOW_RUN_ID"] == runs["1"]
    client.set_model_version_tag("evt-a", "1", "qa.passed", "yes")
    wait_until(lambda: gocd.schedules("evt-qa"), "tag set")
    client.set_model_version_tag("evt-a", "1", "qa.passed", "yes")  # the same value: no new trigger
    for key in ("gocd.extra", "deploy.status", "promotion.reason"):
        client.set_model_version_tag("evt-a", "1", key, "x")
    client.set_model_version_tag("evt-a", "1", "qa.passed", "no")  # a new value: a new trigger
    wait_until(lambda: len(gocd.schedules("evt-qa")) == 2, "changed tag")
    time.sleep(3)
    assert len(gocd.schedules("evt-build")) == 1 and len(gocd.schedules("evt-qa")) == 2


def test_concurrent_duplicate_deliveries_make_one_trigger(bridge, gocd, client):
    from concurrent.futures import ThreadPoolExecutor

    make_model(client, "iris-burst", 1)
    client.set_registered_model_alias("iris-burst", "champion", "1")
    wait_until(lambda: of_model(gocd, "iris-burst"), "the promotion")
    # The same state again from 20 senders at once (distinct delivery ids), and one delivery id 20 times.
    body = _alias_body("iris-burst", "1")
    replayed = str(uuid.uuid4())
    with ThreadPoolExecutor(20) as pool:
        fresh = list(pool.map(lambda _: _signed_post(bridge, body).status_code, range(20)))
        again = list(pool.map(lambda _: _signed_post(bridge, body, replayed).status_code, range(20)))
    assert fresh == [200] * 20
    assert sorted(again) == [200] + [409] * 19
    time.sleep(3)
    assert len(of_model(gocd, "iris-burst")) == 1
