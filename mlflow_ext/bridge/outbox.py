"""The durable outbox: accepted events, their triggers and every delivery state, in one database.

Tables (all prefixed ``mlflow_ext_bridge_``, versioned by their own Alembic revisions in ``migrations/``,
version table ``alembic_version_mlflow_ext_bridge``, brought to head by ``mlflow-ext bridge migrate``):

- ``deliveries``: webhook delivery ids already accepted (replay guard), kept for twice the skew window;
- ``subjects``: the last state the bridge accepted per alias (``model``, ``alias`` -> version), per tag
  (``model``, ``version``, ``key`` -> value) and per created version, with a generation counter and the
  MLflow send time of the event that set it;
- ``outbox``: one row per trigger, unique on its idempotency key
  ``["<event>", "<model>", "<version>", "<alias or tag>"]#<generation>@<pipeline>``.

A state change of a subject (alias moved, also back to an earlier version) starts a new generation and so new
rows; the same state seen again (a second delivery, the reconcile loop) changes nothing. Accepting an event,
recording its delivery id and inserting its rows is one transaction, committed before the webhook is answered.

Row status: ``pending`` (to trigger, maybe backing off) -> ``claimed`` (a trigger is being or may have been
sent; committed before the POST) -> ``scheduled`` (GoCD answered 202; its counter is being looked up) ->
``delivered``. ``paused`` waits for GoCD to unpause the pipeline; ``parked`` waits for ``bridge retry``.
Times are epoch milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from mlflow_ext import migrations
from mlflow_ext.events import ALIAS_CREATED, ALIAS_DELETED, TAG_SET, VERSION_CREATED, Event
from mlflow_ext.routing import Route

# The baseline revision's value, kept in the meta row for databases made before migrations existed.
SCHEMA_VERSION = 1
ACTIVE = ("pending", "paused", "claimed", "scheduled")
STATUSES = (*ACTIVE, "delivered", "parked")
_WORKER_LOCK_ID = 0x6D6C6272  # "mlbr"

metadata = MetaData()

meta_table = Table(
    "mlflow_ext_bridge_meta",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("schema_version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # When the first reconcile pass adopted the registry's existing aliases (None: not yet).
    Column("baseline_at", BigInteger, nullable=True),
)

deliveries_table = Table(
    "mlflow_ext_bridge_deliveries",
    metadata,
    Column("delivery_id", String(128), primary_key=True),
    Column("received_at", BigInteger, nullable=False, index=True),
)

subjects_table = Table(
    "mlflow_ext_bridge_subjects",
    metadata,
    Column("key", String(2048), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("model", String(512), nullable=False, index=True),
    Column("value", Text, nullable=True),
    Column("generation", Integer, nullable=False),
    Column("sent_us", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)

outbox_table = Table(
    "mlflow_ext_bridge_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(2600), nullable=False, unique=True),
    Column("subject", String(2048), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("event", String(64), nullable=False),
    Column("model", String(512), nullable=False),
    Column("version", String(32), nullable=False),
    Column("alias", String(256), nullable=True),
    Column("tag_key", String(512), nullable=True),
    Column("run_id", String(64), nullable=True),
    Column("pipeline", String(255), nullable=False),
    Column("variables", Text, nullable=False),
    Column("source", String(16), nullable=False),
    Column("delivery_id", String(128), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("claimed_at", BigInteger, nullable=True),
    # Highest GoCD counter known before this row's trigger: a run of the bridge's user above it, owned by
    # no other row, is this row's run.
    Column("claim_floor", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("gocd_status", Integer, nullable=True),
    Column("gocd_message", Text, nullable=True),
    Column("delivered_at", BigInteger, nullable=True),
    Column("counter", Integer, nullable=True),
    Column("scheduled_at", BigInteger, nullable=True),
    Column("feedback_at", BigInteger, nullable=True),
    Column("feedback_error", Text, nullable=True),
    Index("ix_mlflow_ext_bridge_outbox_status", "status", "pipeline", "id"),
    Index("ix_mlflow_ext_bridge_outbox_pipeline_counter", "pipeline", "counter"),
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Subject:
    key: str
    kind: str
    value: str | None


def subject_of(event: Event) -> Subject:
    """What an event changes, and to what; alias deletions clear the alias's state."""
    if event.event in (ALIAS_CREATED, ALIAS_DELETED):
        key = json.dumps(["alias", event.model, event.alias])
        return Subject(key, "alias", event.version if event.event == ALIAS_CREATED else None)
    if event.event == TAG_SET:
        key = json.dumps(["tag", event.model, event.version, event.tag_key])
        return Subject(key, "tag", event.tag_value)
    if event.event == VERSION_CREATED:
        return Subject(json.dumps(["created", event.model, event.version]), "created", "created")
    raise ValueError(f"not a subject event: {event.event}")


def idempotency_key(event: Event, generation: int, pipeline: str) -> str:
    """``["<event>", "<model>", "<version>", "<alias or tag key>"]#<generation>@<pipeline>`` (JSON, so no
    model name can forge another's key; pipeline names have no ``#`` or ``@``)."""
    qualifier = event.alias if event.alias is not None else (event.tag_key or "")
    return json.dumps([event.event, event.model, event.version, qualifier]) + f"#{generation}@{pipeline}"


@dataclass(frozen=True)
class Acceptance:
    """What accepting an event did: ``outcome`` is new, same, stale, raced or replay."""

    outcome: str
    row_ids: tuple[int, ...] = ()


def create_db_engine(uri: str) -> Engine:
    if uri.startswith("sqlite"):
        engine = create_engine(uri, connect_args={"check_same_thread": False, "timeout": 30})
        with engine.begin() as conn:
            conn.execute(text("PRAGMA journal_mode=WAL"))
        return engine
    return create_engine(uri, pool_size=8, max_overflow=8, pool_pre_ping=True)


SCHEMA = migrations.Schema(
    name="bridge",
    metadata=metadata,
    package="mlflow_ext.bridge.migrations",
    version_table="alembic_version_mlflow_ext_bridge",
    baseline="0001_baseline",
    lock_id=_WORKER_LOCK_ID + 1,
)


def migrate(engine: Engine) -> dict[str, Any]:
    """Bring the outbox to the newest revision; ``changed`` only when a revision ran or a stamp was set."""
    return migrations.upgrade(engine, SCHEMA)


def schema_ready(engine: Engine) -> bool:
    """Whether the outbox is at this version's head (an older one must be migrated first)."""
    with engine.connect() as conn:
        return migrations.current(SCHEMA, conn) == migrations.head(SCHEMA)


class WorkerLock:
    """One delivering process per outbox: a session advisory lock (Postgres) or a file lock (SQLite)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._file: Any = None

    def acquire(self) -> bool:
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect()
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": _WORKER_LOCK_ID}).scalar()
            )
            conn.commit()
            if got:
                self._conn = conn
            else:
                conn.close()
            return got
        database = self.engine.url.database or ""
        handle = open(f"{database}.worker.lock", "a")  # noqa: SIM115 (held for the process lifetime)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._file is not None:
            self._file.close()
            self._file = None


class Outbox:
    """Every query on the bridge's tables. Thread-safe; SQLite writes are serialised in-process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_lock = threading.RLock()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        if self._sqlite:
            with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    # --- accepting events -----------------------------------------------------------------------

    def _lock_subject(self, conn: Connection, subject: Subject, model: str) -> Any:
        row = conn.execute(
            select(subjects_table).where(subjects_table.c.key == subject.key).with_for_update()
        ).first()
        if row is not None:
            return row
        conn.execute(
            subjects_table.insert().values(
                key=subject.key,
                kind=subject.kind,
                model=model,
                value=None,
                generation=0,
                sent_us=None,
                updated_at=0,
            )
        )
        return conn.execute(
            select(subjects_table).where(subjects_table.c.key == subject.key).with_for_update()
        ).first()

    def accept(
        self,
        event: Event,
        routes: Sequence[Route],
        source: str,
        delivery_id: str | None = None,
        snapshot_at: int | None = None,
    ) -> Acceptance:
        """Record the event's state change and its triggers in one transaction.

        ``delivery_id`` (webhooks) is recorded in the same transaction and refused if seen before.
        ``snapshot_at`` (reconcile) skips subjects changed after the registry snapshot was started.
        """
        subject = subject_of(event)
        for attempt in range(5):
            try:
                with self._tx() as conn:
                    if delivery_id is not None:
                        seen = conn.execute(
                            select(deliveries_table.c.delivery_id).where(
                                deliveries_table.c.delivery_id == delivery_id
                            )
                        ).first()
                        if seen is not None:
                            return Acceptance("replay")
                        conn.execute(
                            deliveries_table.insert().values(delivery_id=delivery_id, received_at=now_ms())
                        )
                    return self._transition(conn, event, subject, routes, source, delivery_id, snapshot_at)
            except IntegrityError:
                # Two transactions created the same subject or delivery id at once: the loser retries
                # and then sees the winner's row.
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def accept_delivery(self, delivery_id: str) -> str:
        """Record a delivery the bridge does not act on (replay guard only): ``replay`` or ``recorded``."""
        try:
            with self._tx() as conn:
                seen = conn.execute(
                    select(deliveries_table.c.delivery_id).where(
                        deliveries_table.c.delivery_id == delivery_id
                    )
                ).first()
                if seen is not None:
                    return "replay"
                conn.execute(deliveries_table.insert().values(delivery_id=delivery_id, received_at=now_ms()))
                return "recorded"
        except IntegrityError:
            return "replay"

    def _transition(
        self,
        conn: Connection,
        event: Event,
        subject: Subject,
        routes: Sequence[Route],
        source: str,
        delivery_id: str | None,
        snapshot_at: int | None,
    ) -> Acceptance:
        state = self._lock_subject(conn, subject, event.model)
        if snapshot_at is not None and state.updated_at > snapshot_at:
            return Acceptance("raced")
        if event.sent_us is not None and state.sent_us is not None and event.sent_us < state.sent_us:
            return Acceptance("stale")
        now = now_ms()
        sent_us = event.sent_us if event.sent_us is not None else state.sent_us
        if state.value == subject.value and state.generation > 0:
            if sent_us != state.sent_us:
                conn.execute(
                    update(subjects_table).where(subjects_table.c.key == subject.key).values(sent_us=sent_us)
                )
            return Acceptance("same")
        generation = state.generation + 1
        conn.execute(
            update(subjects_table)
            .where(subjects_table.c.key == subject.key)
            .values(value=subject.value, generation=generation, sent_us=sent_us, updated_at=now)
        )
        if subject.value is None or event.version is None:
            return Acceptance("new")
        ids = []
        pipelines: set[str] = set()
        for route in routes:
            if route.pipeline in pipelines:  # two routes, one pipeline: one trigger (the first route's)
                continue
            pipelines.add(route.pipeline)
            result = conn.execute(
                outbox_table.insert().values(
                    idempotency_key=idempotency_key(event, generation, route.pipeline),
                    subject=subject.key,
                    generation=generation,
                    event=event.event,
                    model=event.model,
                    version=event.version,
                    alias=event.alias,
                    tag_key=event.tag_key,
                    run_id=event.run_id,
                    pipeline=route.pipeline,
                    variables=json.dumps(dict(route.variables), sort_keys=True),
                    source=source,
                    delivery_id=delivery_id,
                    created_at=now,
                    updated_at=now,
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                )
            )
            assert result.inserted_primary_key is not None
            ids.append(int(result.inserted_primary_key[0]))
        return Acceptance("new", tuple(ids))

    def adopt(self, event: Event) -> bool:
        """Record an alias state as already delivered (first reconcile); False if the subject exists."""
        subject = subject_of(event)
        with self._tx() as conn:
            state = self._lock_subject(conn, subject, event.model)
            if state.generation > 0:
                return False
            conn.execute(
                update(subjects_table)
                .where(subjects_table.c.key == subject.key)
                .values(value=subject.value, generation=1, updated_at=now_ms())
            )
            return True

    def alias_states(self, model: str) -> dict[str, tuple[str | None, int]]:
        """alias -> (version, updated_at) the bridge last accepted for ``model``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(subjects_table.c.key, subjects_table.c.value, subjects_table.c.updated_at).where(
                    subjects_table.c.model == model, subjects_table.c.kind == "alias"
                )
            ).all()
        return {json.loads(key)[2]: (value, updated_at) for key, value, updated_at in rows}

    def baseline_at(self) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(meta_table.c.baseline_at).where(meta_table.c.id == 1)).scalar()

    def set_baseline(self) -> None:
        with self._tx() as conn:
            conn.execute(update(meta_table).where(meta_table.c.id == 1).values(baseline_at=now_ms()))

    def prune_deliveries(self, older_than_ms: int) -> int:
        with self._tx() as conn:
            result = conn.execute(
                delete(deliveries_table).where(deliveries_table.c.received_at < older_than_ms)
            )
            return int(result.rowcount or 0)

    # --- delivering --------------------------------------------------------------------------------

    def heads(self) -> list[Any]:
        """Per pipeline, the oldest row still in flight: deliveries to one pipeline go strictly in order."""
        first = (
            select(func.min(outbox_table.c.id))
            .where(outbox_table.c.status.in_(ACTIVE))
            .group_by(outbox_table.c.pipeline)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(select(outbox_table).where(outbox_table.c.id.in_(first))).all())

    def head(self, pipeline: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                select(outbox_table)
                .where(outbox_table.c.pipeline == pipeline, outbox_table.c.status.in_(ACTIVE))
                .order_by(outbox_table.c.id)
                .limit(1)
            ).first()

    def row(self, row_id: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(outbox_table).where(outbox_table.c.id == row_id)).first()

    def owned_counters(self, pipeline: str) -> set[int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox_table.c.counter).where(
                    outbox_table.c.pipeline == pipeline, outbox_table.c.counter.is_not(None)
                )
            ).all()
        return {int(r[0]) for r in rows}

    def highest_counter(self, pipeline: str) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.max(outbox_table.c.counter)).where(outbox_table.c.pipeline == pipeline)
            ).scalar()
        return None if value is None else int(value)

    def update(self, row_id: int, expect: Sequence[str] | None = None, **values: Any) -> bool:
        """Change one row; with ``expect``, only while its status is one of those (compare and set)."""
        values["updated_at"] = now_ms()
        statement = update(outbox_table).where(outbox_table.c.id == row_id)
        if expect is not None:
            statement = statement.where(outbox_table.c.status.in_(tuple(expect)))
        with self._tx() as conn:
            return bool(conn.execute(statement.values(**values)).rowcount)

    def expedite(self) -> int:
        """Bring every row backing off after an error forward to now (GoCD answers again)."""
        now = now_ms()
        with self._tx() as conn:
            result = conn.execute(
                update(outbox_table)
                .where(
                    outbox_table.c.status.in_(("pending", "claimed", "scheduled")),
                    outbox_table.c.next_attempt_at > now,
                    outbox_table.c.last_error.is_not(None),
                )
                .values(next_attempt_at=now)
            )
            return int(result.rowcount or 0)

    def feedback_due(self, limit: int = 50) -> list[Any]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(outbox_table)
                    .where(
                        outbox_table.c.status == "delivered",
                        outbox_table.c.feedback_at.is_(None),
                    )
                    .order_by(outbox_table.c.id)
                    .limit(limit)
                ).all()
            )

    # --- operating ---------------------------------------------------------------------------------

    def retry(self, row_ids: Sequence[int] | None) -> list[int]:
        """Requeue parked rows (all of them when ``row_ids`` is None); return the ids requeued."""
        with self._tx() as conn:
            query = select(outbox_table.c.id).where(outbox_table.c.status == "parked")
            if row_ids is not None:
                query = query.where(outbox_table.c.id.in_(tuple(row_ids)))
            ids = [int(r[0]) for r in conn.execute(query).all()]
            if ids:
                conn.execute(
                    update(outbox_table)
                    .where(outbox_table.c.id.in_(ids), outbox_table.c.status == "parked")
                    .values(status="pending", attempts=0, next_attempt_at=now_ms(), updated_at=now_ms())
                )
        return ids

    def parked(self, row_ids: Sequence[int] | None = None) -> list[Any]:
        query = select(outbox_table).where(outbox_table.c.status == "parked").order_by(outbox_table.c.id)
        if row_ids is not None:
            query = query.where(outbox_table.c.id.in_(tuple(row_ids)))
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox_table.c.status, func.count()).group_by(outbox_table.c.status)
            ).all()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update({status: int(n) for status, n in rows})
        return counts

    def rows(self, statuses: Sequence[str], limit: int = 50, newest_first: bool = False) -> list[Any]:
        order = outbox_table.c.id.desc() if newest_first else outbox_table.c.id
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(outbox_table)
                    .where(outbox_table.c.status.in_(tuple(statuses)))
                    .order_by(order)
                    .limit(limit)
                ).all()
            )

    def feedback_pending(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        outbox_table.c.status == "delivered", outbox_table.c.feedback_at.is_(None)
                    )
                ).scalar()
                or 0
            )
