"""The tables mlflow-ext-auth adds to MLflow's auth database, and the queries on them.

MLflow owns its auth schema (users, roles, grants; alembic table ``alembic_version_auth``). These tables
sit beside it, all prefixed ``mlflow_ext_``, versioned by their own Alembic revisions (``migrations/``,
version table ``alembic_version_mlflow_ext_auth``) and brought to head by ``mlflow-ext server migrate``
(never at import or server start). A change of any table is a new revision (``mlflow_ext.migrations``).

Users are referenced by username, not by MLflow's user id: deleting a user through the REST API is
followed by ``forget_user`` (see ``policy``), which removes their tokens and rights.

Times are epoch milliseconds, as in MLflow's own tables. Everything shared between workers and
replicas lives here, so any number of uvicorn workers and hosts can serve the same auth database.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from mlflow_ext import migrations
from mlflow_ext.auth import tokens as token_format
from mlflow_ext.db_pools import discard_dropped, unpinged_engine

# The baseline revision's value, kept in the state row for databases made before migrations existed.
SCHEMA_VERSION = 1

metadata = MetaData()

state_table = Table(
    "mlflow_ext_auth_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    # Bumped by every revocation, password change, user deletion, lockout, right and (through the
    # wrapped MLflow store, see ``memo``) every change of users, grants and roles: workers that see a
    # new value drop their credential caches and memos and reload the active lockouts.
    Column("generation", BigInteger, nullable=False),
    Column("schema_version", Integer, nullable=False),
)

tokens_table = Table(
    "mlflow_ext_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("last_used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    Column("revoked_by", String(255), nullable=True),
)

rights_table = Table(
    "mlflow_ext_rights",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False, index=True),
    Column("right", String(64), nullable=False),
    # A registered model name for "promote", "*" for every model and for the create rights.
    Column("resource", String(512), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
    UniqueConstraint("username", "right", "resource", name="uq_mlflow_ext_rights"),
)

service_accounts_table = Table(
    "mlflow_ext_service_accounts",
    metadata,
    Column("username", String(255), primary_key=True),
    Column("description", String(1000), nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(255), nullable=False),
)

failures_table = Table(
    "mlflow_ext_login_failures",
    metadata,
    # "user:<name>" or "addr:<ip>"
    Column("key", String(300), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("locked_until", BigInteger, nullable=True),
    Column("notified", Boolean, nullable=False, default=False),
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class TokenRecord:
    id: int
    username: str
    name: str
    prefix: str
    created_at: int
    created_by: str
    expires_at: int | None
    last_used_at: int | None
    revoked_at: int | None
    revoked_by: str | None

    def status(self, at_ms: int) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= at_ms:
            return "expired"
        return "active"

    def to_json(self, at_ms: int | None = None) -> dict[str, Any]:
        at = now_ms() if at_ms is None else at_ms
        return {
            "id": self.id,
            "username": self.username,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
            "status": self.status(at),
        }


@dataclass(frozen=True)
class FailureOutcome:
    failures: int
    locked_until: int | None
    newly_locked: bool


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        username=row.username,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
    )


SCHEMA = migrations.Schema(
    name="auth",
    metadata=metadata,
    package="mlflow_ext.auth.migrations",
    version_table="alembic_version_mlflow_ext_auth",
    baseline="0001_baseline",
    lock_id=0x6D6C6561,  # "mlea"
)


def migrate(engine: Engine) -> dict[str, Any]:
    """Bring the tables to the newest revision; ``changed`` only when a revision ran or a stamp was set."""
    return migrations.upgrade(engine, SCHEMA)


# Read on every request (``authn.AuthState.refresh``), on the driver's cursor: SQLAlchemy's statement
# machinery around it cost more CPU than the round trip (about 70 us of a 0.9 ms log-metric call).
_GENERATION_SQL = f"SELECT generation FROM {state_table.name} WHERE id = 1"  # noqa: S608 (a constant)


def generation_engine(engine: Engine) -> Engine:
    """A pool of its own for the per-request generation read: no ping, no transaction (one round trip).
    A connection that went stale is noticed by the read itself and retried once (``ExtStore.generation``)."""
    result: Engine = unpinged_engine(engine, autocommit=True)
    return result


class ExtStore:
    """Queries on the mlflow_ext_* tables. Each method is one short transaction."""

    def __init__(self, engine: Engine, generation_engine: Engine | None = None) -> None:
        self.engine = engine
        self._generation_engine = generation_engine or engine

    # --- generation -----------------------------------------------------------------------------

    def generation(self) -> int:
        """The counter, read from the database now (never from a cache).

        A connection that the database or the network dropped while idle in the pool fails here with
        an invalidated connection; the read is then retried once on a fresh one. Any other error, or a
        second failure, is raised: the request is refused rather than served on a stale generation.
        """
        try:
            value = self._read_generation()
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            value = self._read_generation()
        if value is None:
            raise RuntimeError("mlflow_ext auth tables are missing: run `mlflow-ext server migrate`")
        return int(value)

    def _read_generation(self) -> Any:
        """The counter, or None without its row. Errors are raised as SQLAlchemy raises them from a
        ``Connection`` (a failed connect included); a dropped connection empties the pool first, as after a
        database restart every pooled connection is dead, and is ``connection_invalidated``, so that
        ``generation`` reads once more, on a fresh connection."""
        engine = self._generation_engine
        dbapi_error = engine.dialect.loaded_dbapi.Error
        pooled = cursor = None
        try:
            pooled = engine.raw_connection()
            cursor = pooled.cursor()
            cursor.execute(_GENERATION_SQL)
            row = cursor.fetchone()
        except dbapi_error as exc:
            connection = None if pooled is None else pooled.dbapi_connection
            dropped = engine.dialect.is_disconnect(exc, connection, cursor)
            if dropped:
                discard_dropped(engine, pooled, exc)
            raise DBAPIError.instance(
                _GENERATION_SQL,
                None,
                exc,
                dbapi_error,
                connection_invalidated=dropped,
                dialect=engine.dialect,
            ) from exc
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()
            if pooled is not None:
                pooled.close()
        return None if row is None else row[0]

    @staticmethod
    def _bump(conn: Connection) -> None:
        conn.execute(
            update(state_table).where(state_table.c.id == 1).values(generation=state_table.c.generation + 1)
        )

    def bump_generation(self) -> None:
        with self.engine.begin() as conn:
            self._bump(conn)

    # --- tokens ---------------------------------------------------------------------------------

    def create_token(
        self, username: str, name: str, created_by: str, expires_at: int | None
    ) -> tuple[TokenRecord, str]:
        """A new token; returns its record and the secret, which is never stored."""
        secret = token_format.new_token()
        created = now_ms()
        with self.engine.begin() as conn:
            active = conn.execute(
                select(tokens_table.c.id).where(
                    tokens_table.c.username == username,
                    tokens_table.c.name == name,
                    tokens_table.c.revoked_at.is_(None),
                )
            ).first()
            if active is not None:
                raise ValueError(f"user {username} already has an active token named {name}")
            result = conn.execute(
                insert(tokens_table).values(
                    username=username,
                    name=name,
                    token_hash=token_format.token_hash(secret),
                    prefix=token_format.display_prefix(secret),
                    created_at=created,
                    created_by=created_by,
                    expires_at=expires_at,
                )
            )
            token_id = result.inserted_primary_key[0]  # type: ignore[index]
            row = conn.execute(select(tokens_table).where(tokens_table.c.id == token_id)).one()
        return _token(row), secret

    def find_token(self, secret: str) -> TokenRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(tokens_table).where(tokens_table.c.token_hash == token_format.token_hash(secret))
            ).first()
        return _token(row) if row is not None else None

    def get_token(self, token_id: int) -> TokenRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(tokens_table).where(tokens_table.c.id == token_id)).first()
        return _token(row) if row is not None else None

    def list_tokens(self, username: str | None = None, include_revoked: bool = False) -> list[TokenRecord]:
        query = select(tokens_table).order_by(tokens_table.c.id)
        if username is not None:
            query = query.where(tokens_table.c.username == username)
        if not include_revoked:
            query = query.where(tokens_table.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_token(row) for row in conn.execute(query)]

    def revoke_token(self, token_id: int, revoked_by: str) -> TokenRecord | None:
        """Revoke (idempotent); every worker drops its cached credentials on its next check."""
        with self.engine.begin() as conn:
            conn.execute(
                update(tokens_table)
                .where(tokens_table.c.id == token_id, tokens_table.c.revoked_at.is_(None))
                .values(revoked_at=now_ms(), revoked_by=revoked_by)
            )
            self._bump(conn)
            row = conn.execute(select(tokens_table).where(tokens_table.c.id == token_id)).first()
        return _token(row) if row is not None else None

    def touch_token(self, token_id: int, at_ms: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(tokens_table).where(tokens_table.c.id == token_id).values(last_used_at=at_ms))

    # --- rights ---------------------------------------------------------------------------------

    def grant_right(self, username: str, right: str, resource: str, created_by: str) -> bool:
        """True when the right was added, False when the user already held it."""
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(rights_table.c.id).where(
                    rights_table.c.username == username,
                    rights_table.c.right == right,
                    rights_table.c.resource == resource,
                )
            ).first()
            if exists is not None:
                return False
            conn.execute(
                insert(rights_table).values(
                    username=username,
                    right=right,
                    resource=resource,
                    created_at=now_ms(),
                    created_by=created_by,
                )
            )
            self._bump(conn)
        return True

    def revoke_right(self, username: str, right: str, resource: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(rights_table).where(
                    rights_table.c.username == username,
                    rights_table.c.right == right,
                    rights_table.c.resource == resource,
                )
            )
            if result.rowcount:
                self._bump(conn)
        return bool(result.rowcount)

    def has_right(self, username: str, right: str, resource: str = "*") -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(rights_table.c.id).where(
                    rights_table.c.username == username,
                    rights_table.c.right == right,
                    rights_table.c.resource.in_([resource, "*"]),
                )
            ).first()
        return row is not None

    def list_rights(self, username: str | None = None) -> list[dict[str, Any]]:
        query = select(rights_table).order_by(rights_table.c.id)
        if username is not None:
            query = query.where(rights_table.c.username == username)
        with self.engine.connect() as conn:
            return [
                {
                    "username": row.username,
                    "right": row.right,
                    "resource": row.resource,
                    "created_at": row.created_at,
                    "created_by": row.created_by,
                }
                for row in conn.execute(query)
            ]

    # --- service accounts -----------------------------------------------------------------------

    def add_service_account(self, username: str, created_by: str, description: str = "") -> bool:
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(service_accounts_table.c.username).where(service_accounts_table.c.username == username)
            ).first()
            if exists is not None:
                return False
            conn.execute(
                insert(service_accounts_table).values(
                    username=username, description=description, created_at=now_ms(), created_by=created_by
                )
            )
        return True

    def is_service_account(self, username: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(service_accounts_table.c.username).where(service_accounts_table.c.username == username)
            ).first()
        return row is not None

    def list_service_accounts(self) -> list[str]:
        with self.engine.connect() as conn:
            query = select(service_accounts_table.c.username).order_by(service_accounts_table.c.username)
            return [row.username for row in conn.execute(query)]

    def forget_user(self, username: str) -> None:
        """After a user is deleted: revoke their tokens, drop their rights and account flag."""
        with self.engine.begin() as conn:
            conn.execute(
                update(tokens_table)
                .where(tokens_table.c.username == username, tokens_table.c.revoked_at.is_(None))
                .values(revoked_at=now_ms(), revoked_by="(user deleted)")
            )
            conn.execute(delete(rights_table).where(rights_table.c.username == username))
            conn.execute(delete(service_accounts_table).where(service_accounts_table.c.username == username))
            self._bump(conn)

    # --- login failures -------------------------------------------------------------------------

    def record_failure(
        self, key: str, threshold: int, window_ms: int, lockout_ms: int, at_ms: int
    ) -> FailureOutcome:
        """Count one failed login for ``key``; lock it when the count reaches ``threshold``.

        Row-locked (``SELECT ... FOR UPDATE`` on Postgres) so concurrent workers count every failure.
        A new lockout bumps the generation, so every worker learns of it on its next check.
        """
        with self.engine.begin() as conn:
            row = conn.execute(
                select(failures_table).where(failures_table.c.key == key).with_for_update()
            ).first()
            if row is None:
                failures, window_start, locked_until = 1, at_ms, None
                conn.execute(
                    insert(failures_table).values(
                        key=key, failures=1, window_start=at_ms, locked_until=None, notified=False
                    )
                )
            else:
                locked_until = row.locked_until if row.locked_until and row.locked_until > at_ms else None
                if row.window_start + window_ms < at_ms and locked_until is None:
                    failures, window_start = 1, at_ms
                else:
                    failures, window_start = row.failures + 1, row.window_start
            newly_locked = locked_until is None and failures >= threshold
            if newly_locked:
                locked_until = at_ms + lockout_ms
                # Counting restarts after the lockout: the next lock needs `threshold` new failures.
                failures, window_start = 0, locked_until
                self._bump(conn)
            conn.execute(
                update(failures_table)
                .where(failures_table.c.key == key)
                .values(failures=failures, window_start=window_start, locked_until=locked_until)
            )
        return FailureOutcome(failures=failures, locked_until=locked_until, newly_locked=newly_locked)

    def clear_failures(self, key: str) -> None:
        """A successful login resets the count, never an active lockout."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(failures_table).where(
                    failures_table.c.key == key, failures_table.c.locked_until.is_(None)
                )
            )

    def active_locks(self, at_ms: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(failures_table.c.key, failures_table.c.locked_until).where(
                    failures_table.c.locked_until > at_ms
                )
            )
            return {row.key: int(row.locked_until) for row in rows}

    def unlock(self, key: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(delete(failures_table).where(failures_table.c.key == key))
            self._bump(conn)
        return bool(result.rowcount)

    def failure_rows(self, keys: list[str] | None = None) -> list[dict[str, Any]]:
        """Counted failures and lockouts, of ``keys`` or (``None``) of every username and address."""
        query = select(failures_table).order_by(failures_table.c.key)
        if keys is not None:
            query = query.where(failures_table.c.key.in_(keys))
        with self.engine.connect() as conn:
            return [
                {"key": row.key, "failures": row.failures, "locked_until": row.locked_until}
                for row in conn.execute(query)
            ]

    def clear_lockouts(self, keys: list[str]) -> int:
        """Forget the failures and lift the lockouts of ``keys``; every worker reloads its lockouts."""
        with self.engine.begin() as conn:
            result = conn.execute(delete(failures_table).where(failures_table.c.key.in_(keys)))
            self._bump(conn)
        return int(result.rowcount)
