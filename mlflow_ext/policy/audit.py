"""The audit tags a promotion leaves on the version, and what makes a move a rollback.

Written by ``mlflow-ext promote``/``rollback`` before the alias moves (a webhook fires the moment it
does, and the release pipeline reads ``promotion.from_version``), checked and completed by the server
for protected aliases, and restored when the move is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from mlflow_ext.lineage import (
    PROMOTION_ACTION,
    PROMOTION_ALIAS,
    PROMOTION_AT,
    PROMOTION_BY,
    PROMOTION_FROM_VERSION,
    PROMOTION_REASON,
)

KEYS = (
    PROMOTION_BY,
    PROMOTION_AT,
    PROMOTION_FROM_VERSION,
    PROMOTION_REASON,
    PROMOTION_ALIAS,
    PROMOTION_ACTION,
)

# How old the tags a client wrote may be for the server to take them as describing this very move.
FRESH_SECONDS = 600


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def is_rollback(holder_tags: Mapping[str, str] | None, version: str, alias: str) -> bool:
    """True when ``@alias`` goes back to the version its current holder replaced.

    Only the holder's own record counts: its ``promotion.alias`` names this alias and its
    ``promotion.from_version`` is ``version``.
    """
    if not holder_tags:
        return False
    return holder_tags.get(PROMOTION_ALIAS, "").lower() == alias.lower() and holder_tags.get(
        PROMOTION_FROM_VERSION
    ) == str(version)


def tags_for(
    *,
    by: str,
    alias: str,
    from_version: str | None,
    reason: str | None,
    rollback: bool,
    at: str | None = None,
) -> dict[str, str | None]:
    """The audit tags of one move; a None value means the tag is removed (no previous holder, no reason)."""
    return {
        PROMOTION_BY: by,
        PROMOTION_AT: at or now_iso(),
        PROMOTION_FROM_VERSION: from_version,
        PROMOTION_REASON: reason or None,
        PROMOTION_ALIAS: alias,
        PROMOTION_ACTION: "rollback" if rollback else "promote",
    }


def describes(
    tags: Mapping[str, str],
    alias: str,
    from_version: str | None,
    rollback: bool,
    now: datetime | None = None,
) -> bool:
    """Whether ``tags`` (already on the version) were written for this move: same alias, same previous
    holder, same action, written in the last FRESH_SECONDS."""
    if tags.get(PROMOTION_ALIAS, "").lower() != alias.lower():
        return False
    if tags.get(PROMOTION_FROM_VERSION) != from_version:
        return False
    if tags.get(PROMOTION_ACTION) != ("rollback" if rollback else "promote"):
        return False
    try:
        at = datetime.fromisoformat(tags.get(PROMOTION_AT, ""))
    except ValueError:
        return False
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    age = ((now or datetime.now(UTC)) - at).total_seconds()
    return -FRESH_SECONDS <= age <= FRESH_SECONDS


def snapshot(tags: Mapping[str, str]) -> dict[str, str | None]:
    """The current values of the audit keys (None: absent), to restore after a refused move."""
    return {key: tags.get(key) for key in KEYS}
