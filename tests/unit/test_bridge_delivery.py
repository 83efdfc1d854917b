"""The delivery worker against the fake GoCD, on a SQLite outbox: exactly once, in order, and every
GoCD answer handled as docs/bridge.md says."""

from __future__ import annotations

import threading
import time

import pytest

from mlflow_ext.bridge import outbox as outbox_module
from mlflow_ext.bridge.delivery import DeliveryConfig, DeliveryWorker, VersionMissing
from mlflow_ext.clients.gocd import GoCDClient
from mlflow_ext.events import ALIAS_CREATED, Event
from mlflow_ext.routing import BRIDGE_VARIABLES, Route
from tests.support.fake_gocd import FakeGoCD

USER = "bridge-bot"
TOKEN = "bridge-token-0123456789"
PIPELINE = "iris-release-champion"


class StubRegistry:
    def __init__(self) -> None:
        self.missing: set[tuple[str, str]] = set()

    def run_id(self, model: str, version: str) -> str:
        if (model, version) in self.missing:
            raise VersionMissing(f"{model} v{version} not found")
        return f"run-{model}-{version}"


@pytest.fixture
def gocd():
    with FakeGoCD(tokens={TOKEN: USER, "someone-else": "alice"}) as fake:
        fake.add_pipeline(PIPELINE, variables=[*BRIDGE_VARIABLES, "DEPLOY_TARGET"])
        yield fake


@pytest.fixture
def box(tmp_path):
    engine = outbox_module.create_db_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    outbox_module.migrate(engine)
    yield outbox_module.Outbox(engine)
    engine.dispose()


def _worker(box, gocd, **overrides) -> DeliveryWorker:
    config = DeliveryConfig(
        gocd_user=USER,
        tracking_uri="https://mlflow.example.com",
        retry_max_s=0.2,
        paused_recheck_s=0.1,
        in_doubt_s=overrides.pop("in_doubt_s", 0.3),
        poll_s=0.05,
    )
    client = GoCDClient(gocd.url, token=overrides.pop("token", TOKEN), timeout=overrides.pop("timeout", 5))
    return DeliveryWorker(
        box,
        client,
        overrides.pop("registry", StubRegistry()),
        config,
        gocd_recovered=overrides.pop("gocd_recovered", None),
    )


ROUTE = Route(
    model="iris*",
    event=ALIAS_CREATED,
    pipeline=PIPELINE,
    alias="champion",
    variables={"DEPLOY_TARGET": "local"},
)


def _promote(box, version: str, model: str = "iris", sent_us: int | None = None) -> tuple[int, ...]:
    event = Event(ALIAS_CREATED, model, version, alias="champion", sent_us=sent_us or time.time_ns() // 1000)
    return box.accept(event, [ROUTE], "webhook").row_ids


def _settle(worker: DeliveryWorker, until, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.drain_all()
        if until():
            return
        time.sleep(0.05)
    raise AssertionError(f"not settled: {worker.outbox.counts()}")


def _delivered(box, n):
    return lambda: box.counts()["delivered"] == n


def test_one_promotion_schedules_once_with_the_variables(box, gocd):
    (row_id,) = _promote(box, "3")
    worker = _worker(box, gocd)
    _settle(worker, _delivered(box, 1))
    (schedule,) = gocd.schedules(PIPELINE)
    assert schedule.variables == {
        "MLFLOW_MODEL_NAME": "iris",
        "MLFLOW_MODEL_VERSION": "3",
        "MLFLOW_MODEL_ALIAS": "champion",
        "MLFLOW_RUN_ID": "run-iris-3",
        "MLFLOW_MODEL_URI": "models:/iris/3",
        "MLFLOW_TRACKING_URI": "https://mlflow.example.com",
        "DEPLOY_TARGET": "local",
    }
    assert schedule.approver == USER
    row = box.row(row_id)
    assert (row.status, row.counter, row.gocd_status) == ("delivered", schedule.counter, 202)
    worker.drain_all()
    assert len(gocd.schedules()) == 1


def test_duplicates_change_nothing_and_a_rollback_schedules_again(box, gocd):
    worker = _worker(box, gocd)
    assert _promote(box, "1")
    assert not _promote(box, "1")  # the same state again (second delivery, reconcile)
    _settle(worker, _delivered(box, 1))
    assert _promote(box, "2")
    assert _promote(box, "1")  # A -> B -> A: a new state, a new trigger
    _settle(worker, _delivered(box, 3))
    assert [s.variables["MLFLOW_MODEL_VERSION"] for s in gocd.schedules()] == ["1", "2", "1"]


def test_an_older_event_arriving_late_is_stale(box, gocd):
    now = time.time_ns() // 1000
    assert _promote(box, "2", sent_us=now)
    assert (
        box.accept(
            Event(ALIAS_CREATED, "iris", "1", alias="champion", sent_us=now - 5000), [ROUTE], "webhook"
        ).outcome
        == "stale"
    )


def test_gocd_down_then_back_delivers_all_exactly_once_in_order(box, gocd):
    gocd.go_down()
    for version in range(1, 21):
        _promote(box, str(version), model=f"iris-{version % 3}")
    worker = _worker(box, gocd)
    worker.drain_all()
    assert box.counts()["delivered"] == 0
    head, *queued = box.rows(("pending", "claimed"), 100)
    assert "unreachable" in head.last_error and len(queued) == 19  # one pipeline: the rest wait in line
    gocd.come_back()
    _settle(worker, _delivered(box, 20))
    versions = [int(s.variables["MLFLOW_MODEL_VERSION"]) for s in gocd.schedules()]
    assert versions == list(range(1, 21))
    assert sorted(r.counter for r in box.rows(("delivered",), 100)) == list(range(1, 21))


def test_gocd_answering_again_nudges_the_reconcile_loop(box, gocd):
    recovered = threading.Event()
    gocd.go_down()
    _promote(box, "1")
    worker = _worker(box, gocd, gocd_recovered=recovered)
    worker.drain_all()
    assert not recovered.is_set()  # down: nothing to reconcile against yet
    gocd.come_back()
    _settle(worker, _delivered(box, 1))
    assert recovered.is_set()


def test_5xx_is_retried(box, gocd):
    _promote(box, "1")
    gocd.fail_next(3, 503)
    worker = _worker(box, gocd, in_doubt_s=0.1)
    _settle(worker, _delivered(box, 1))
    assert len(gocd.schedules()) == 1


def test_unknown_pipeline_and_undeclared_variable_are_parked_with_gocds_message(box, gocd):
    gocd.add_pipeline("narrow", variables=["MLFLOW_MODEL_NAME"])
    narrow = Route(model="*", event=ALIAS_CREATED, pipeline="narrow", alias="staging")
    ghost = Route(model="*", event=ALIAS_CREATED, pipeline="ghost", alias="staging")
    box.accept(Event(ALIAS_CREATED, "m", "1", alias="staging", sent_us=1), [narrow, ghost], "webhook")
    worker = _worker(box, gocd)
    _settle(worker, lambda: box.counts()["parked"] == 2)
    parked = {r.pipeline: r for r in box.parked()}
    assert parked["ghost"].gocd_status == 404 and "ghost" in parked["ghost"].gocd_message
    assert parked["narrow"].gocd_status == 422 and "MLFLOW_MODEL_VERSION" in parked["narrow"].gocd_message
    assert gocd.schedules() == []
    # Fixed in GoCD, requeued by `bridge retry`: delivered once.
    gocd.add_pipeline("ghost", variables=BRIDGE_VARIABLES)
    assert box.retry([parked["ghost"].id]) == [parked["ghost"].id]
    _settle(worker, lambda: box.counts()["delivered"] == 1)
    assert [s.pipeline for s in gocd.schedules()] == ["ghost"]
    assert box.counts()["parked"] == 1


def test_a_paused_pipeline_holds_its_triggers_until_unpaused(box, gocd):
    gocd.pause(PIPELINE, cause="maintenance")
    _promote(box, "1")
    _promote(box, "2")
    worker = _worker(box, gocd)
    _settle(worker, lambda: box.counts()["paused"] == 1)
    assert "paused" in box.rows(("paused",))[0].gocd_message
    assert box.counts()["pending"] == 1  # the next one waits behind it
    gocd.unpause(PIPELINE)
    _settle(worker, _delivered(box, 2))
    assert [s.variables["MLFLOW_MODEL_VERSION"] for s in gocd.schedules()] == ["1", "2"]


def test_triggers_queued_in_gocd_are_serialised_not_refused(box, gocd):
    gocd.trigger_seconds = 0.3  # GoCD answers 409 "already triggered" meanwhile, and history lags
    for version in ("1", "2", "3"):
        _promote(box, version)
    worker = _worker(box, gocd)
    _settle(worker, _delivered(box, 3))
    assert [s.variables["MLFLOW_MODEL_VERSION"] for s in gocd.schedules()] == ["1", "2", "3"]
    assert [r.counter for r in box.rows(("delivered",))] == [1, 2, 3]


def test_an_unanswered_trigger_is_settled_from_history_not_sent_again(box, gocd):
    """The bridge dies between GoCD's 202 and its own commit: the claim is found in GoCD's history."""
    (row_id,) = _promote(box, "7")
    gocd.hold_schedules()
    worker = _worker(box, gocd, timeout=0.5)
    worker.drain_all()  # the POST times out: GoCD recorded the trigger, the bridge never heard back
    gocd.release_schedules()
    row = box.row(row_id)
    assert row.status == "claimed" and "unanswered" in row.last_error
    assert len(gocd.schedules()) == 1
    # Someone else triggers the pipeline meanwhile: not ours, never adopted.
    GoCDClient(gocd.url, token="someone-else").schedule(PIPELINE, {})
    _settle(_worker(box, gocd), _delivered(box, 1))
    assert len(gocd.schedules()) == 2
    assert box.row(row_id).counter == 1
    assert "history" in box.row(row_id).gocd_message


def test_a_claim_that_never_reached_gocd_is_sent_after_the_window(box, gocd):
    (row_id,) = _promote(box, "8")
    # A crash right after the claim was committed, before the POST.
    box.update(row_id, status="claimed", claimed_at=outbox_module.now_ms(), claim_floor=0, attempts=1)
    worker = _worker(box, gocd, in_doubt_s=0.5)
    worker.drain_all()
    assert gocd.schedules() == []  # still inside the window: GoCD might yet show it
    _settle(worker, _delivered(box, 1))
    assert len(gocd.schedules()) == 1


def test_a_missing_model_version_is_parked(box, gocd):
    registry = StubRegistry()
    registry.missing.add(("iris", "9"))
    _promote(box, "9")
    worker = _worker(box, gocd, registry=registry)
    _settle(worker, lambda: box.counts()["parked"] == 1)
    assert "not found" in box.parked()[0].last_error
    assert gocd.schedules() == []


def test_the_worker_loop_delivers_as_events_arrive(box, gocd):
    worker = _worker(box, gocd)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for version in range(1, 6):
            _promote(box, str(version))
            worker.wake.set()
        gocd.wait_for_schedules(5, timeout=10)
    finally:
        stop.set()
        worker.wake.set()
        thread.join(5)
    assert [s.variables["MLFLOW_MODEL_VERSION"] for s in gocd.schedules()] == ["1", "2", "3", "4", "5"]


def test_two_routes_to_one_pipeline_make_one_trigger(box):
    twin = Route(model="*", event=ALIAS_CREATED, pipeline=PIPELINE, alias="*")
    accepted = box.accept(
        Event(ALIAS_CREATED, "iris", "5", alias="champion", sent_us=1), [ROUTE, twin], "webhook"
    )
    assert len(accepted.row_ids) == 1
    assert box.row(accepted.row_ids[0]).variables == '{"DEPLOY_TARGET": "local"}'
