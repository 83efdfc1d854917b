"""Lifting lockouts on the auth database itself, for an operator the HTTP API locks out.

Used by ``mlflow-ext users unlock`` with the server's env file, like ``tokens ensure-service-account``:
no running server and no admin login are needed, so an admin whose own address is locked out has a
way back. It deletes the failure rows of a username, of a client address, or of everyone (lockouts
and failures still being counted), and bumps the generation counter in the same transaction, so every
worker of every replica reloads its lockouts on its next request. Each cleared key is recorded as
``auth.unlocked`` in the server's audit log (``MLFLOW_EXT_AUDIT_LOG``).
"""

from __future__ import annotations

import getpass
import ipaddress
import os
from collections.abc import Mapping
from typing import Any

from mlflow_ext.auth import lockout
from mlflow_ext.auth.audit import AuditLog
from mlflow_ext.auth.store import ExtStore, now_ms
from mlflow_ext.errors import ConfigError, ProvisioningError


def _operator() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid())
    return f"(offline: {name})"


def keys_for(username: str | None, address: str | None) -> list[str]:
    """The failure-table key of a username or of a client address (normalised as the server writes it)."""
    if username is not None:
        return [lockout.user_key(username)]
    assert address is not None
    try:
        return [lockout.address_key(str(ipaddress.ip_address(address.strip())))]
    except ValueError:
        raise ConfigError(f"not an IP address: {address!r}") from None


def unlock(
    values: Mapping[str, Any],
    username: str | None = None,
    address: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Clear the lockouts (and counted failures) of one username, one address, or all of them.

    Returns ``{"changed", "dry_run", "cleared": [{"key", "failures", "locked_until", "locked"}]}``;
    ``cleared`` lists what was (or, with ``dry_run``, would be) cleared.
    """
    if sum((username is not None, address is not None, everything)) != 1:
        raise ConfigError("name exactly one of a username, an address, or all")
    if values.get("MLFLOW_EXT_APP_NAME") != "mlflow-ext-auth":
        raise ConfigError("MLFLOW_EXT_APP_NAME must be mlflow-ext-auth: other apps keep no lockouts")
    keys = None if everything else keys_for(username, address)

    from mlflow.store.db.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(str(values["MLFLOW_EXT_AUTH_DATABASE_URI"]))
    try:
        ext = ExtStore(engine)
        try:
            ext.generation()
        except Exception:
            raise ProvisioningError(
                "the mlflow-ext auth tables are missing: run `mlflow-ext server migrate` first"
            ) from None
        rows = ext.failure_rows(keys)
        at = now_ms()
        cleared = [{**row, "locked": bool(row["locked_until"] and row["locked_until"] > at)} for row in rows]
        if cleared and not dry_run:
            ext.clear_lockouts([row["key"] for row in cleared])
            audit = AuditLog(str(values.get("MLFLOW_EXT_AUDIT_LOG") or "stderr"))
            for row in cleared:
                audit.record("auth.unlocked", actor=_operator(), key=row["key"], offline=True)
    finally:
        engine.dispose()
    return {"changed": bool(cleared), "dry_run": dry_run, "cleared": cleared}
