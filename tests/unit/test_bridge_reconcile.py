"""The reconcile loop against a stub registry, on a SQLite outbox."""

from __future__ import annotations

import threading
import time

import pytest

from mlflow_ext.bridge import outbox as outbox_module
from mlflow_ext.bridge.reconcile import Reconciler
from mlflow_ext.events import ALIAS_CREATED, Event
from mlflow_ext.routing import Router


class StubRegistry:
    def __init__(self) -> None:
        self.models: dict[str, dict[str, str]] = {}

    def aliases(self, patterns):
        yield from ((name, dict(aliases)) for name, aliases in self.models.items())


@pytest.fixture
def setup(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {model: 'iris*', alias: champion, pipeline: iris-release}\n")
    engine = outbox_module.create_db_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    outbox_module.migrate(engine)
    box = outbox_module.Outbox(engine)
    registry = StubRegistry()
    yield box, registry, Reconciler(box, Router(str(routes)), registry, settle_s=0.2)
    engine.dispose()


def _settled_pass(reconciler):
    first = reconciler.once()
    time.sleep(0.25)
    second = reconciler.once()
    return first, second


def test_existing_aliases_are_adopted_on_the_first_pass_only(setup):
    box, registry, reconciler = setup
    registry.models = {"iris": {"champion": "1"}, "wine": {"champion": "4"}}
    assert reconciler.once()["adopted"] == 1
    assert box.counts()["pending"] == 0
    registry.models["iris-new"] = {"champion": "2"}  # appears after the baseline: a missed event
    first, second = _settled_pass(reconciler)
    assert (first["enqueued"], second["enqueued"]) == (0, 1)
    (row,) = box.rows(("pending",))
    assert (row.model, row.version, row.source) == ("iris-new", "2", "reconcile")


def test_a_missed_move_is_enqueued_once_and_a_delivered_state_never(setup):
    box, registry, reconciler = setup
    box.set_baseline()
    box.accept(Event(ALIAS_CREATED, "iris", "1", alias="champion", sent_us=1), [], "webhook")
    registry.models = {"iris": {"champion": "1"}}
    assert _settled_pass(reconciler)[1]["enqueued"] == 0  # what the webhook brought: nothing to do
    registry.models = {"iris": {"champion": "2"}}
    assert _settled_pass(reconciler)[1]["enqueued"] == 1
    assert _settled_pass(reconciler)[1]["enqueued"] == 0
    assert [r.version for r in box.rows(("pending",))] == ["2"]


def test_a_difference_the_webhook_resolves_meanwhile_is_left_to_it(setup):
    box, registry, reconciler = setup
    box.set_baseline()
    registry.models = {"iris": {"champion": "3"}}
    assert reconciler.once()["enqueued"] == 0  # seen once: a webhook may still be on its way
    box.accept(
        Event(ALIAS_CREATED, "iris", "3", alias="champion", sent_us=time.time_ns() // 1000), [], "webhook"
    )
    time.sleep(0.25)
    assert reconciler.once()["enqueued"] == 0
    assert box.counts()["pending"] == 0


def test_a_deleted_alias_clears_the_state_so_setting_it_again_triggers(setup):
    box, registry, reconciler = setup
    box.set_baseline()
    box.accept(Event(ALIAS_CREATED, "iris", "1", alias="champion", sent_us=1), [], "webhook")
    registry.models = {"iris": {}}
    assert _settled_pass(reconciler)[1]["cleared"] == 1
    registry.models = {"iris": {"champion": "1"}}
    assert _settled_pass(reconciler)[1]["enqueued"] == 1


@pytest.fixture
def running(setup):
    """The loop with a whole minute between regular passes, stopped at the end."""
    box, registry, reconciler = setup
    box.set_baseline()
    stop, enqueued, nudge = threading.Event(), threading.Event(), threading.Event()
    thread = threading.Thread(target=reconciler.run, args=(60, stop, enqueued, nudge), daemon=True)
    yield box, registry, nudge, thread
    stop.set()
    nudge.set()
    thread.join(5)
    assert not thread.is_alive()


def _until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_difference_is_looked_at_again_when_it_can_settle_not_an_interval_later(running):
    box, registry, _, thread = running
    registry.models = {"iris": {"champion": "5"}}  # a webhook that never comes
    thread.start()
    assert _until(lambda: box.counts()["pending"] == 1)


def test_a_nudge_starts_a_pass_at_once(running):
    box, registry, nudge, thread = running
    thread.start()
    time.sleep(0.3)  # the first pass saw nothing and waits out its minute
    registry.models = {"iris": {"champion": "6"}}
    nudge.set()
    assert _until(lambda: box.counts()["pending"] == 1)
