"""The delivery worker: triggers GoCD for each outbox row, exactly once, in order per pipeline.

For each pipeline only its oldest active row is worked on (head of line), so triggers of one pipeline are
serialised and the GoCD runs of the bridge's user map one to one, in order, onto rows. A row is claimed
(committed, with the highest counter already owned as its *floor*) before the trigger is sent. A 202 makes it
``scheduled``; the run's counter is then read from GoCD's history: the lowest run above the floor that was
forced by the bridge's user and that no other row owns. The same lookup settles a claim whose answer never
came (timeout, dropped connection, the bridge killed mid-request): if the run is there the row is
delivered without sending again; if it has not appeared within the in-doubt window, the trigger is sent again.

GoCD down, timeouts and 5xx: retried with exponential backoff (capped). 409 on a paused pipeline: the row
waits and GoCD's status is re-checked periodically. Other 409s (already forced, locked) and 429: backoff.
Any other 4xx (404 unknown pipeline, 422 undeclared variable, 401/403): parked with GoCD's message until
``mlflow-ext bridge retry``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from mlflow_ext.bridge import metrics
from mlflow_ext.bridge.outbox import Outbox, WorkerLock, now_ms
from mlflow_ext.errors import GoCDRejected, GoCDUnavailable, RegistryUnavailable, VersionMissing

log = logging.getLogger("mlflow_ext.bridge.delivery")

# Our run is nearly always among the newest; a longer page is read only when it might be further back.
HISTORY_PAGE = 10
HISTORY_PAGE_MAX = 100
# A 202 whose run never shows up in GoCD's history (the material update failed, say) stops blocking its
# pipeline after this long; the row is delivered without a counter.
COUNTER_TIMEOUT_MS = 600_000


class GoCD(Protocol):
    def schedule(self, pipeline: str, variables: Mapping[str, str], secure: Collection[str] = ()) -> str: ...
    def status(self, pipeline: str) -> dict[str, Any]: ...
    def history(self, pipeline: str, page_size: int = 10) -> list[dict[str, Any]]: ...
    def instance_url(self, pipeline: str, counter: int) -> str: ...


class Registry(Protocol):
    def run_id(self, model: str, version: str) -> str: ...


@dataclass(frozen=True)
class DeliveryConfig:
    gocd_user: str
    tracking_uri: str
    retry_max_s: float = 10.0
    paused_recheck_s: float = 30.0
    in_doubt_s: float = 30.0
    workers: int = 8
    poll_s: float = 1.0


def variables_for(row: Any, tracking_uri: str) -> dict[str, str]:
    """What the pipeline receives: the bridge's six variables, then the route's extras."""
    values = {
        "MLFLOW_MODEL_NAME": row.model,
        "MLFLOW_MODEL_VERSION": row.version,
        "MLFLOW_MODEL_ALIAS": row.alias or "",
        "MLFLOW_RUN_ID": row.run_id or "",
        "MLFLOW_MODEL_URI": f"models:/{row.model}/{row.version}",
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    values.update(json.loads(row.variables))
    return values


def surely_not_sent(exc: BaseException) -> bool:
    """True when the request cannot have reached GoCD (connection refused, connect timeout)."""
    import requests
    from urllib3.exceptions import NewConnectionError

    seen: set[int] = set()
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, requests.exceptions.ConnectTimeout | NewConnectionError):
            return True
        if isinstance(current, BaseException):
            pending.extend([current.__cause__, current.__context__, *current.args])
            pending.append(getattr(current, "reason", None))
    return False


class _Watched:
    """GoCD, watched: the first answer after an outage brings every backing-off row forward at once,
    instead of each waiting out its own backoff, and sets ``recovered`` (the reconcile loop's nudge)."""

    def __init__(
        self, gocd: GoCD, outbox: Outbox, wake: threading.Event, recovered: threading.Event | None
    ) -> None:
        self._gocd = gocd
        self._outbox = outbox
        self._wake = wake
        self._recovered = recovered
        self._down = False

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            result = getattr(self._gocd, name)(*args, **kwargs)
        except GoCDUnavailable:
            metrics.GOCD_ERRORS.labels(kind="unavailable").inc()
            self._down = True
            raise
        except GoCDRejected:
            metrics.GOCD_ERRORS.labels(kind="rejected").inc()
            self._answered()
            raise
        self._answered()
        return result

    def _answered(self) -> None:
        if self._down:
            self._down = False
            log.info("GoCD answers again; %d waiting row(s) brought forward", self._outbox.expedite())
            self._wake.set()
            if self._recovered is not None:
                self._recovered.set()

    def schedule(self, pipeline: str, variables: Mapping[str, str], secure: Collection[str] = ()) -> str:
        return str(self._call("schedule", pipeline, variables, secure))

    def status(self, pipeline: str) -> dict[str, Any]:
        return dict(self._call("status", pipeline))

    def history(self, pipeline: str, page_size: int = 10) -> list[dict[str, Any]]:
        return list(self._call("history", pipeline, page_size))

    def instance_url(self, pipeline: str, counter: int) -> str:
        return self._gocd.instance_url(pipeline, counter)


class DeliveryWorker:
    def __init__(
        self,
        outbox: Outbox,
        gocd: GoCD,
        registry: Registry,
        config: DeliveryConfig,
        wake: threading.Event | None = None,
        gocd_recovered: threading.Event | None = None,
    ) -> None:
        self.outbox = outbox
        self.wake = wake or threading.Event()
        self.gocd: GoCD = _Watched(gocd, outbox, self.wake, gocd_recovered)
        self.registry = registry
        self.config = config
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self.active = False

    # --- the loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set. Only one process per outbox delivers; others stand by."""
        lock = WorkerLock(self.outbox.engine)
        while not stop.is_set():
            try:
                if lock.acquire():
                    break
            except Exception:
                log.exception("cannot take the delivery lock")
            log.info("another bridge process delivers from this outbox; standing by")
            stop.wait(5)
        if stop.is_set():
            return
        self.active = True
        with ThreadPoolExecutor(self.config.workers, thread_name_prefix="bridge-delivery") as pool:
            try:
                while not stop.is_set():
                    self.wake.clear()
                    wait = self.config.poll_s
                    try:
                        wait = self.dispatch(pool)
                    except Exception:
                        log.exception("delivery scan failed")
                    self.wake.wait(max(0.01, min(wait, self.config.poll_s)))
            finally:
                self.active = False
                lock.release()

    def dispatch(self, pool: ThreadPoolExecutor) -> float:
        """Start a drain for every pipeline whose head is due; return seconds until the next one is."""
        now = now_ms()
        soonest = self.config.poll_s
        for head in self.outbox.heads():
            due_in = (head.next_attempt_at - now) / 1000
            if due_in > 0:
                soonest = min(soonest, due_in)
                continue
            with self._lock:
                if head.pipeline in self._in_flight:
                    continue
                self._in_flight.add(head.pipeline)
            pool.submit(self._drain, head.pipeline)
        return soonest

    def _drain(self, pipeline: str) -> None:
        try:
            while True:
                row = self.outbox.head(pipeline)
                if row is None or not self.step(row):
                    break
        except Exception:
            log.exception("delivery to pipeline %s failed", pipeline)
        finally:
            with self._lock:
                self._in_flight.discard(pipeline)
            self.wake.set()

    def drain_all(self) -> None:
        """Work every due head until none is due (tests and one-shot runs)."""
        while True:
            progressed = False
            for head in self.outbox.heads():
                if head.next_attempt_at <= now_ms() and self.step(head):
                    progressed = True
            if not progressed:
                return

    # --- one row ---------------------------------------------------------------------------------

    def step(self, row: Any) -> bool:
        """Advance one row; True when the pipeline's next row can be worked on at once."""
        if row.next_attempt_at > now_ms():
            return False
        if row.status == "pending":
            return self._send(row)
        if row.status == "paused":
            return self._recheck_paused(row)
        if row.status == "claimed":
            return self._settle_claim(row)
        if row.status == "scheduled":
            return self._find_counter(row)
        return True

    def _backoff_ms(self, attempts: int) -> int:
        delay = min(self.config.retry_max_s, 0.5 * 2 ** min(max(attempts, 1), 20))
        return int(delay * 1000 * random.uniform(0.8, 1.0))  # noqa: S311 (jitter, not security)

    def _retry_later(self, row: Any, error: str, expect: tuple[str, ...], **values: Any) -> bool:
        self.outbox.update(
            row.id,
            expect=expect,
            last_error=error,
            next_attempt_at=now_ms() + self._backoff_ms(row.attempts + 1),
            **values,
        )
        return False

    def _send(self, row: Any) -> bool:
        if row.run_id is None:
            try:
                run_id = self.registry.run_id(row.model, row.version)
            except VersionMissing as exc:
                self.outbox.update(
                    row.id, expect=("pending",), status="parked", last_error=str(exc), gocd_message=None
                )
                log.warning("row %s parked: %s", row.id, exc)
                return True
            except RegistryUnavailable as exc:
                return self._retry_later(row, f"registry unavailable: {exc}", ("pending",))
            self.outbox.update(row.id, run_id=run_id)
            row = self.outbox.row(row.id)
        floor = self.outbox.highest_counter(row.pipeline)
        if floor is None:
            # First trigger of this pipeline from this outbox: runs before now are not ours.
            try:
                history = self.gocd.history(row.pipeline, HISTORY_PAGE_MAX)
            except GoCDUnavailable as exc:
                return self._retry_later(row, str(exc), ("pending",))
            except GoCDRejected as exc:
                return self._rejected(row, exc, ("pending",))
            floor = max((int(run["counter"]) for run in history), default=0)
        now = now_ms()
        if not self.outbox.update(
            row.id,
            expect=("pending",),
            status="claimed",
            claimed_at=now,
            claim_floor=floor,
            attempts=row.attempts + 1,
        ):
            return False
        row = self.outbox.row(row.id)
        return self._post(row)

    def _post(self, row: Any) -> bool:
        variables = variables_for(row, self.config.tracking_uri)
        try:
            message = self.gocd.schedule(row.pipeline, variables)
        except GoCDRejected as exc:
            return self._rejected(row, exc, ("claimed",))
        except GoCDUnavailable as exc:
            if surely_not_sent(exc):
                return self._retry_later(row, str(exc), ("claimed",), status="pending")
            # It may have arrived: settle from GoCD's history before sending again.
            log.warning("trigger of row %s unanswered (%s); settling from GoCD history", row.id, exc)
            return self._retry_later(row, f"unanswered trigger: {exc}", ("claimed",))
        delivered_at = now_ms()
        if self.outbox.update(
            row.id,
            expect=("claimed",),
            status="scheduled",
            delivered_at=delivered_at,
            gocd_status=202,
            gocd_message=message,
            last_error=None,
            next_attempt_at=now_ms(),
        ):
            metrics.delivered(row.created_at, delivered_at)
        log.info("row %s: %s v%s scheduled on %s", row.id, row.model, row.version, row.pipeline)
        return self._find_counter(self.outbox.row(row.id))

    def _rejected(self, row: Any, exc: GoCDRejected, expect: tuple[str, ...]) -> bool:
        if exc.status == 409:
            try:
                paused = bool(self.gocd.status(row.pipeline).get("paused"))
            except (GoCDUnavailable, GoCDRejected):
                paused = False
            if paused:
                self.outbox.update(
                    row.id,
                    expect=expect,
                    status="paused",
                    gocd_status=409,
                    gocd_message=exc.message,
                    last_error=None,
                    next_attempt_at=now_ms() + int(self.config.paused_recheck_s * 1000),
                )
                return False
        if exc.status in (409, 429):
            return self._retry_later(
                row, str(exc), expect, status="pending", gocd_status=exc.status, gocd_message=exc.message
            )
        self.outbox.update(
            row.id,
            expect=expect,
            status="parked",
            gocd_status=exc.status,
            gocd_message=exc.message,
            last_error=str(exc),
        )
        log.warning("row %s parked: %s", row.id, exc)
        return True

    def _recheck_paused(self, row: Any) -> bool:
        try:
            status = self.gocd.status(row.pipeline)
        except GoCDUnavailable as exc:
            return self._retry_later(row, str(exc), ("paused",))
        except GoCDRejected as exc:
            return self._rejected(row, exc, ("paused",))
        if status.get("paused"):
            self.outbox.update(
                row.id,
                expect=("paused",),
                next_attempt_at=now_ms() + int(self.config.paused_recheck_s * 1000),
            )
            return False
        self.outbox.update(row.id, expect=("paused",), status="pending", next_attempt_at=now_ms())
        return True

    def _our_run(self, row: Any) -> dict[str, Any] | None:
        """The run GoCD started for this row, if its history shows one (see the module docstring)."""
        floor = row.claim_floor or 0
        owned = self.outbox.owned_counters(row.pipeline)
        history = self.gocd.history(row.pipeline, HISTORY_PAGE)
        if len(history) >= HISTORY_PAGE and min(int(run["counter"]) for run in history) > floor + 1:
            history = self.gocd.history(row.pipeline, HISTORY_PAGE_MAX)
        ours = [
            run
            for run in history
            if int(run["counter"]) > floor
            and int(run["counter"]) not in owned
            and (run.get("build_cause") or {}).get("trigger_forced")
            and (run.get("build_cause") or {}).get("approver") == self.config.gocd_user
        ]
        return min(ours, key=lambda run: int(run["counter"])) if ours else None

    def _delivered(
        self, row: Any, run: dict[str, Any], expect: tuple[str, ...], note: str | None = None
    ) -> None:
        scheduled = run.get("scheduled_date")
        values: dict[str, Any] = {
            "status": "delivered",
            "counter": int(run["counter"]),
            "scheduled_at": int(scheduled) if scheduled else now_ms(),
            "last_error": None,
        }
        if row.delivered_at is None:
            values["delivered_at"] = now_ms()
        if note:
            values["gocd_message"] = note
        if self.outbox.update(row.id, expect=expect, **values) and row.delivered_at is None:
            metrics.delivered(row.created_at, values["delivered_at"])

    def _settle_claim(self, row: Any) -> bool:
        try:
            run = self._our_run(row)
        except GoCDUnavailable as exc:
            return self._retry_later(row, f"unanswered trigger, GoCD unavailable: {exc}", ("claimed",))
        except GoCDRejected as exc:
            return self._rejected(row, exc, ("claimed",))
        if run is not None:
            self._delivered(row, run, ("claimed",), "run found in GoCD's history after an unanswered trigger")
            log.info("row %s: unanswered trigger settled from history (counter %s)", row.id, run["counter"])
            return True
        waited = now_ms() - (row.claimed_at or 0)
        window = int(self.config.in_doubt_s * 1000)
        if waited < window:
            self.outbox.update(
                row.id, expect=("claimed",), next_attempt_at=now_ms() + min(window - waited, 1000)
            )
            return False
        if not self.outbox.update(
            row.id, expect=("claimed",), claimed_at=now_ms(), attempts=row.attempts + 1
        ):
            return False
        return self._post(self.outbox.row(row.id))

    def _find_counter(self, row: Any) -> bool:
        try:
            run = self._our_run(row)
        except (GoCDUnavailable, GoCDRejected) as exc:
            run, error = None, str(exc)
        else:
            error = "run not in GoCD's history yet"
        if run is not None:
            self._delivered(row, run, ("scheduled",))
            return True
        waited = now_ms() - (row.delivered_at or now_ms())
        if waited > COUNTER_TIMEOUT_MS:
            self.outbox.update(
                row.id,
                expect=("scheduled",),
                status="delivered",
                last_error="GoCD's history never showed the run",
            )
            return True
        with contextlib.suppress(Exception):
            self.outbox.update(
                row.id,
                expect=("scheduled",),
                last_error=error,
                next_attempt_at=now_ms() + min(5000, 200 + waited // 4),
            )
        return False
