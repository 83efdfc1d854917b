"""The reconcile loop: the registry's aliases against what the bridge accepted.

MLflow does not persist webhook deliveries: events raised while the bridge was down, or pending in an MLflow
server that restarted, are gone. Each pass lists the aliases of every model a route matches and, where the
alias now points at a version other than the one the bridge last accepted, accepts that state as if a
webhook had brought it (same transaction, same idempotency: a state already accepted changes nothing).

A difference is acted on only when the previous pass, at least ``SETTLE_SECONDS`` earlier, saw the same
one: a webhook still on its way (MLflow retries for several seconds) then wins, and a pass never competes
with it. A pass that saw a difference not yet settled is followed by another as soon as it can settle, not a
whole interval later, and a nudge (GoCD answering again after an outage) starts a pass at once: how soon a
missed promotion is scheduled does not depend on when, or whether, MLflow redelivers it.

On the very first pass (``MLFLOW_EXT_BRIDGE_ADOPT_EXISTING``), aliases that exist already are recorded as
delivered instead of triggering every pipeline at once.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from mlflow_ext.bridge.outbox import Outbox, now_ms
from mlflow_ext.events import ALIAS_CREATED, ALIAS_DELETED, Event
from mlflow_ext.routing import Router

log = logging.getLogger("mlflow_ext.bridge.reconcile")

# A webhook normally lands within a second; one that lands after the pass accepted the same state changes
# nothing (the outbox is idempotent), so waiting longer only delays a missed promotion.
SETTLE_SECONDS = 2.0


class AliasSource(Protocol):
    def aliases(self, patterns: list[str]) -> Iterator[tuple[str, dict[str, str]]]: ...


@dataclass
class Reconciler:
    outbox: Outbox
    router: Router
    registry: AliasSource
    adopt_existing: bool = True
    settle_s: float = SETTLE_SECONDS
    # (model, alias) -> (version or None, first seen at, ms)
    _seen: dict[tuple[str, str], tuple[str | None, int]] = field(default_factory=dict)

    def _settled(self, key: tuple[str, str], version: str | None, now: int) -> bool:
        previous = self._seen.get(key)
        if previous is None or previous[0] != version:
            self._seen[key] = (version, now)
            return False
        return now - previous[1] >= self.settle_s * 1000

    def once(self) -> dict[str, int]:
        """One pass; returns counts of what it did."""
        routes = self.router.alias_routes()
        report = {"models": 0, "enqueued": 0, "adopted": 0, "cleared": 0, "unsettled": 0}
        if not routes:
            return report
        adopting = self.adopt_existing and self.outbox.baseline_at() is None
        differences: set[tuple[str, str]] = set()
        for model, aliases in self.registry.aliases(sorted({r.model for r in routes})):
            model_routes = [r for r in routes if fnmatch.fnmatchcase(model, r.model)]
            if not model_routes:
                continue
            report["models"] += 1
            snapshot = now_ms()
            states = self.outbox.alias_states(model)
            for alias, version in sorted(aliases.items()):
                event = Event(ALIAS_CREATED, model, version, alias=alias, sent_us=snapshot * 1000)
                if adopting:
                    report["adopted"] += int(self.outbox.adopt(event))
                    continue
                if states.get(alias, (None, 0))[0] == version:
                    continue
                differences.add((model, alias))
                if not self._settled((model, alias), version, snapshot):
                    report["unsettled"] += 1
                    continue
                matching = [r for r in model_routes if r.matches(event)]
                accepted = self.outbox.accept(event, matching, "reconcile", snapshot_at=snapshot)
                if accepted.outcome == "new":
                    report["enqueued"] += len(accepted.row_ids)
                    log.info(
                        "reconcile: %s@%s -> v%s was missed; %d trigger(s) queued",
                        model,
                        alias,
                        version,
                        len(accepted.row_ids),
                    )
            for alias, (held, _) in states.items():
                if held is None or alias in aliases:
                    continue
                differences.add((model, alias))
                if not self._settled((model, alias), None, snapshot):
                    report["unsettled"] += 1
                    continue
                event = Event(ALIAS_DELETED, model, alias=alias, sent_us=snapshot * 1000)
                if self.outbox.accept(event, [], "reconcile", snapshot_at=snapshot).outcome == "new":
                    report["cleared"] += 1
        for key in set(self._seen) - differences:
            del self._seen[key]
        if adopting:
            self.outbox.set_baseline()
        return report

    def run(
        self,
        interval_s: float,
        stop: threading.Event,
        on_enqueued: threading.Event,
        nudge: threading.Event | None = None,
    ) -> None:
        """Pass every ``interval_s``, sooner while a difference settles, and at once when ``nudge`` is set.
        Setting ``stop`` ends the loop; set ``nudge`` too to end it without waiting out the interval."""
        nudge = nudge or threading.Event()
        while not stop.is_set():
            nudge.clear()
            wait = interval_s
            try:
                report = self.once()
                if report["enqueued"]:
                    on_enqueued.set()
                if report["unsettled"]:
                    wait = min(interval_s, self.settle_s)
            except Exception as exc:
                log.warning("reconcile pass failed: %s", exc)
            nudge.wait(wait)
