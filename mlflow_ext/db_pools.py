"""Connection pools without the ping, for the statements every request runs.

MLflow's engines ping every connection they hand out (``pool_pre_ping``): one more round trip to the
database per checkout, before the statement the request came for. The per-request reads and writes the
platform runs in plain SQL (the auth app's generation read, the tracking store's hot paths) take their
connections from a pool of their own without it: a connection that went stale (the database restarted,
or dropped it while idle) is noticed by the statement itself, and the caller runs it again once on a
fresh connection. Only for PostgreSQL, whose connection options all live in the URL; other databases
keep the given engine.
"""

from __future__ import annotations

from typing import Any


def unpinged_engine(engine: Any, autocommit: bool = False) -> Any:
    """An engine on ``engine``'s URL and pool settings, without pre-ping (``engine`` itself if it is not
    PostgreSQL). With ``autocommit``, a statement is not wrapped in a transaction: a read is one round trip,
    without the ROLLBACK that returning the connection to the pool would otherwise send."""
    if engine.dialect.name != "postgresql":
        return engine
    from sqlalchemy import create_engine
    from sqlalchemy.pool import QueuePool

    pool = engine.pool
    options: dict[str, Any] = {"poolclass": type(pool), "pool_recycle": pool._recycle}
    if isinstance(pool, QueuePool):
        options |= {"pool_size": pool.size(), "max_overflow": pool._max_overflow}
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    return create_engine(engine.url, pool_pre_ping=False, **options)


def discard_dropped(engine: Any, pooled: Any, exc: BaseException | None = None) -> None:
    """A connection the database dropped: discard it (if one was checked out) and every connection pooled
    beside it, since a database restart leaves all of them dead; the next checkout connects afresh."""
    if pooled is not None:
        pooled.invalidate(exc)
    engine.dispose()
