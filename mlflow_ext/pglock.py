"""PostgreSQL session advisory locks: one holder at a time across processes and hosts.

Other databases (SQLite for a single node) have a single writer anyway, so the lock is a no-op there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def advisory_lock(engine: Any, lock_id: int) -> Iterator[None]:
    """Hold ``pg_advisory_lock(lock_id)`` on a connection of ``engine`` for the ``with`` block."""
    if engine.dialect.name != "postgresql":
        yield
        return
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
            conn.commit()
