"""Feedback: once GoCD scheduled a run, tag the model version with where it runs.

Tags ``gocd.pipeline``, ``gocd.counter``, ``gocd.url`` and ``gocd.scheduled_at`` (ISO 8601, UTC). The tag
events these writes cause are never routed (keys under ``gocd.``), so feedback cannot loop.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any, Protocol

from mlflow_ext.bridge.delivery import GoCD, RegistryUnavailable, VersionMissing
from mlflow_ext.bridge.outbox import Outbox, now_ms
from mlflow_ext.lineage import GOCD_COUNTER, GOCD_PIPELINE, GOCD_SCHEDULED_AT, GOCD_URL

log = logging.getLogger("mlflow_ext.bridge.feedback")


class TagWriter(Protocol):
    def set_tags(self, model: str, version: str, tags: dict[str, str]) -> None: ...


def tags_for(row: Any, gocd: GoCD) -> dict[str, str]:
    scheduled = datetime.fromtimestamp((row.scheduled_at or row.delivered_at) / 1000, tz=UTC)
    # Written in this order: gocd.counter last, so a reader that sees it sees all four.
    return {
        GOCD_PIPELINE: row.pipeline,
        GOCD_URL: gocd.instance_url(row.pipeline, int(row.counter)),
        GOCD_SCHEDULED_AT: scheduled.isoformat(timespec="seconds").replace("+00:00", "Z"),
        GOCD_COUNTER: str(row.counter),
    }


def feedback_once(outbox: Outbox, gocd: GoCD, registry: TagWriter) -> int:
    """Tag every delivered version not tagged yet; return how many were tagged."""
    done = 0
    for row in outbox.feedback_due():
        if row.counter is None:
            outbox.update(
                row.id, feedback_at=now_ms(), feedback_error="GoCD run not found; no counter to tag"
            )
            continue
        try:
            registry.set_tags(row.model, row.version, tags_for(row, gocd))
        except VersionMissing as exc:
            outbox.update(row.id, feedback_at=now_ms(), feedback_error=str(exc)[:1000])
            continue
        except RegistryUnavailable as exc:
            log.warning("feedback tags for %s v%s postponed: %s", row.model, row.version, exc)
            return done
        outbox.update(row.id, feedback_at=now_ms(), feedback_error=None)
        done += 1
    return done


def run(
    outbox: Outbox, gocd: GoCD, registry: TagWriter, stop: threading.Event, wake: threading.Event
) -> None:
    while not stop.is_set():
        wake.clear()
        try:
            feedback_once(outbox, gocd, registry)
        except Exception:
            log.exception("feedback pass failed")
        wake.wait(1.0)
