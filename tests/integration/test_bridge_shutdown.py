"""SIGTERM to a real `mlflow-ext bridge serve` while deliveries stream in: the process stops within a few
seconds, and every delivery it acknowledged is scheduled in GoCD exactly once after a restart.

Deliveries are signed by hand (the test knows the webhook secret) so that which ones were acknowledged is
known exactly; GoCD is down meanwhile, so every acknowledged trigger is still pending when the signal
comes. The models exist in the registry (the delivery worker reads their run ids); the reconcile loop is
off, so whatever is scheduled came from these deliveries.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests

from mlflow_ext.bridge import signature
from mlflow_ext.routing import BRIDGE_VARIABLES
from tests.support.bridge import GOCD_USER, Bridge, webhook_env
from tests.support.fake_gocd import FakeGoCD
from tests.support.services import running_platform

pytestmark = pytest.mark.integration

TOKEN = "gocd-token-for-the-bridge-0123"
ROUTES = "routes:\n  - {model: 'term-*', alias: 'slot-*', pipeline: term-release}\n"
MODELS = [f"term-{i}" for i in range(4)]
SENDERS = 8
STOP_WITHIN_S = 8  # the receiver's grace period (5 s) and the loops' own wake-ups, with room


@pytest.fixture(scope="module")
def gocd():
    with FakeGoCD(tokens={TOKEN: GOCD_USER}) as fake:
        fake.add_pipeline("term-release", variables=BRIDGE_VARIABLES)
        yield fake


@pytest.fixture(scope="module")
def platform():
    with running_platform(extra_env=webhook_env()) as started:
        yield started


@pytest.fixture(scope="module")
def bridge(platform, gocd):
    from mlflow import MlflowClient

    os.environ.update({k: v for k, v in platform.client_env().items() if k != "MLFLOW_TRACKING_URI"})
    client = MlflowClient(tracking_uri=platform.tracking_uri, registry_uri=platform.tracking_uri)
    experiment_id = client.create_experiment("bridge-shutdown")
    for name in MODELS:
        client.create_registered_model(name)
        info = client.create_run(experiment_id).info
        client.create_model_version(name, f"{info.artifact_uri}/model", run_id=info.run_id)
    # No reconcile loop: what is scheduled is exactly what the receiver accepted.
    started = Bridge(
        platform, gocd.url, TOKEN, ROUTES, extra_env={"MLFLOW_EXT_BRIDGE_RECONCILE_SECONDS": "0"}
    ).prepare()
    started.start()
    yield started
    started.cleanup()


def _deliver(bridge: Bridge, model: str, alias: str) -> int | None:
    """One signed alias delivery; its status, or None when it got no answer."""
    payload = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": datetime.now(UTC).isoformat(),
            "data": {"name": model, "alias": alias, "version": "1"},
        }
    ).encode()
    delivery_id, stamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        signature.DELIVERY_ID_HEADER: delivery_id,
        signature.TIMESTAMP_HEADER: stamp,
        signature.SIGNATURE_HEADER: signature.sign(bridge.secret, delivery_id, stamp, payload),
    }
    try:
        return requests.post(f"{bridge.url}/webhook", data=payload, headers=headers, timeout=10).status_code
    except requests.RequestException:
        return None


def test_sigterm_mid_stream_stops_quickly_and_loses_no_acknowledged_delivery(bridge, gocd):
    assert bridge.process is not None
    acknowledged: list[tuple[str, str]] = []
    unanswered: list[tuple[str, str]] = []
    lock = threading.Lock()
    counter = iter(range(1_000_000))
    refused = threading.Event()

    def send() -> None:
        while not refused.is_set():
            with lock:
                n = next(counter)
            key = (MODELS[n % len(MODELS)], f"slot-{n}")
            status = _deliver(bridge, *key)
            with lock:
                if status == 200:
                    acknowledged.append(key)
                elif status is None:
                    unanswered.append(key)
                    # Refused or cut off: the listener is gone once a fresh connection fails too.
                    if _deliver(bridge, MODELS[0], "slot-probe") is None:
                        refused.set()
                else:
                    pytest.fail(f"delivery {key} answered {status}")

    gocd.go_down()
    try:
        with ThreadPoolExecutor(SENDERS) as pool:
            senders = [pool.submit(send) for _ in range(SENDERS)]
            deadline = time.monotonic() + 30
            while len(acknowledged) < 40 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(acknowledged) >= 40, "the bridge acknowledged too few deliveries"
            signalled = time.monotonic()
            os.killpg(bridge.process.pid, signal.SIGTERM)
            returncode = bridge.process.wait(STOP_WITHIN_S + 20)
            stopped_after = time.monotonic() - signalled
            refused.set()
            for sender in senders:
                sender.result(30)
        bridge.process = None
        assert returncode == 0, bridge.log()[-3000:]
        assert stopped_after < STOP_WITHIN_S, f"stopped {stopped_after:.1f} s after SIGTERM"
        assert "bridge stopped" in bridge.log()
    finally:
        gocd.come_back()

    bridge.start()
    expected = set(acknowledged)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        scheduled = {
            (s.variables["MLFLOW_MODEL_NAME"], s.variables["MLFLOW_MODEL_ALIAS"])
            for s in gocd.schedules("term-release")
        }
        if expected <= scheduled:
            break
        time.sleep(0.2)
    time.sleep(3)  # anything scheduled twice would show by now
    schedules = [
        (s.variables["MLFLOW_MODEL_NAME"], s.variables["MLFLOW_MODEL_ALIAS"])
        for s in gocd.schedules("term-release")
    ]
    missing = expected - set(schedules)
    assert not missing, f"{len(missing)} acknowledged deliveries never scheduled: {sorted(missing)[:5]}"
    assert len(schedules) == len(set(schedules)), "a trigger was scheduled twice"
    # Only deliveries that were sent are scheduled: acknowledged ones, and at most those cut off by the stop.
    assert set(schedules) <= expected | set(unanswered) | {(MODELS[0], "slot-probe")}
