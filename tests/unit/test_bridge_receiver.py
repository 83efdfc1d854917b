"""The receiver on a free port, in process: what is answered, and what reaches the outbox."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests

from mlflow_ext.bridge import outbox as outbox_module
from mlflow_ext.bridge import signature
from mlflow_ext.bridge.receiver import Receiver, serve_in_thread
from mlflow_ext.routing import Router

SECRET = "receiver-secret-0123456789"


@pytest.fixture
def receiver(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n"
        "  - {model: 'iris*', alias: champion, pipeline: iris-release}\n"
        "  - {model: 'iris*', event: model_version_tag.set, tag: 'qa.*', pipeline: iris-qa}\n"
    )
    engine = outbox_module.create_db_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    outbox_module.migrate(engine)
    woken = []
    server = Receiver(
        ("127.0.0.1", 0),
        SECRET,
        300,
        outbox_module.Outbox(engine),
        Router(str(routes)),
        lambda: woken.append(1),
    )
    thread = serve_in_thread(server)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.woken = woken
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)
    engine.dispose()


def body(entity="model_version_alias", action="created", **data) -> bytes:
    data = data or {"name": "iris", "alias": "champion", "version": "1"}
    stamp = datetime.now(UTC).isoformat()
    return json.dumps({"entity": entity, "action": action, "timestamp": stamp, "data": data}).encode()


def post(server, payload: bytes, delivery_id=None, timestamp=None, secret=SECRET, path="/webhook"):
    delivery_id = delivery_id or str(uuid.uuid4())
    timestamp = timestamp or str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        signature.DELIVERY_ID_HEADER: delivery_id,
        signature.TIMESTAMP_HEADER: timestamp,
        signature.SIGNATURE_HEADER: signature.sign(secret, delivery_id, timestamp, payload),
    }
    return requests.post(server.url + path, data=payload, headers=headers, timeout=5)


def test_an_accepted_event_is_in_the_outbox_before_the_answer(receiver):
    answer = post(receiver, body())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": True, "outcome": "new", "triggers": 1}
    (row,) = receiver.outbox.rows(("pending",))
    assert (row.model, row.version, row.alias, row.pipeline, row.source) == (
        "iris",
        "1",
        "champion",
        "iris-release",
        "webhook",
    )
    assert receiver.woken


def test_a_replayed_delivery_id_is_refused(receiver):
    payload = body()
    first = post(receiver, payload, delivery_id="same-id")
    again = post(receiver, payload, delivery_id="same-id")
    assert (first.status_code, again.status_code) == (200, 409)
    assert receiver.outbox.counts()["pending"] == 1


def test_the_same_state_from_a_second_delivery_adds_nothing(receiver):
    assert post(receiver, body()).json()["triggers"] == 1
    assert post(receiver, body()).json() == {"accepted": True, "outcome": "same", "triggers": 0}


@pytest.mark.parametrize("case", ["forged", "stale", "unsigned"])
def test_forged_stale_and_unsigned_deliveries_are_refused_and_recorded_nowhere(receiver, case):
    payload = body()
    if case == "forged":
        answer = post(receiver, payload, secret="not-the-secret-at-all")
    elif case == "stale":
        answer = post(receiver, payload, timestamp=str(int(time.time()) - 301))
    else:
        answer = requests.post(receiver.url + "/webhook", data=payload, timeout=5)
    assert answer.status_code == 401
    assert receiver.outbox.counts()["pending"] == 0


@pytest.mark.parametrize(
    ("payload", "status"),
    [(b"{", 400), (b'{"entity": 1}', 422), (body(name="iris", alias="champion", version="x"), 422)],
)
def test_malformed_bodies_are_4xx(receiver, payload, status):
    assert post(receiver, payload).status_code == status
    assert receiver.outbox.counts()["pending"] == 0


def test_other_paths_oversized_bodies_and_health(receiver):
    assert post(receiver, body(), path="/other").status_code == 404
    big = requests.post(receiver.url + "/webhook", data=b"x" * (1024 * 1024 + 1), timeout=5)
    assert big.status_code == 413
    assert requests.get(receiver.url + "/health", timeout=5).json() == {"status": "ok"}


def test_unrouted_and_reserved_tag_events_are_acknowledged_without_triggers(receiver):
    feedback = body("model_version_tag", "set", name="iris", version="1", key="gocd.counter", value="3")
    qa = body("model_version_tag", "set", name="iris", version="1", key="qa.passed", value="yes")
    other = body("registered_model", "created", name="iris")
    assert post(receiver, feedback).json() == {"accepted": False, "reason": "event not routed"}
    assert post(receiver, other).json() == {"accepted": False, "reason": "event not routed"}
    assert post(receiver, qa).json()["triggers"] == 1
    assert [r.pipeline for r in receiver.outbox.rows(("pending",))] == ["iris-qa"]
