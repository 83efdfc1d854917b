"""Provisioning: a service account and its token, created idempotently on the auth database.

Used by ``mlflow-ext tokens ensure-service-account`` from Ansible and compose, after
``mlflow-ext server migrate`` and with the same env file; it needs no running server and no admin
password. The token is written only to ``token_file`` (mode 0600, written atomically); it is never
printed. A second run with a still-valid token in the file changes nothing and says so.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from typing import Any

from mlflow_ext.auth import tokens as token_format
from mlflow_ext.auth.paths import RIGHTS
from mlflow_ext.auth.store import ExtStore, now_ms
from mlflow_ext.errors import ConfigError, ProvisioningError

PROVISIONER = "(provisioning)"


def _read_token(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            value = handle.read().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisioningError(f"cannot read token file {path}: {exc}") from None
    return value if token_format.looks_like_token(value) else None


def _write_token(path: str, token: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ProvisioningError(f"directory of the token file does not exist: {directory}")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".token-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(token + "\n")
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def ensure_service_account(
    values: Mapping[str, Any],
    username: str,
    token_name: str,
    token_file: str,
    expires_in_seconds: int | None = None,
    rights: tuple[str, ...] = (),
    dry_run: bool = False,
    promote_models: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Make sure ``username`` is a service account with an active token named ``token_name`` whose
    secret is in ``token_file``, holding ``rights`` on every resource and the promote right on each of
    ``promote_models``; returns a report whose ``changed`` is true only if anything changed."""
    if values.get("MLFLOW_EXT_APP_NAME") != "mlflow-ext-auth":
        raise ConfigError("MLFLOW_EXT_APP_NAME must be mlflow-ext-auth for service-account tokens")
    unknown = [r for r in rights if r not in RIGHTS]
    if unknown:
        raise ConfigError(f"unknown right(s) {', '.join(unknown)}; known: {', '.join(RIGHTS)}")
    if any(not model.strip() for model in promote_models):
        raise ConfigError("a promote model must be a registered model name, not empty")
    wanted = [(right, "*") for right in rights] + [("promote", model) for model in promote_models]
    uri = str(values["MLFLOW_EXT_AUTH_DATABASE_URI"])

    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
    from mlflow.store.db.utils import create_sqlalchemy_engine

    users = SqlAlchemyStore()
    users.init_db(uri)
    engine = create_sqlalchemy_engine(uri)
    ext = ExtStore(engine)
    report: dict[str, Any] = {
        "username": username,
        "token_name": token_name,
        "token_file": token_file,
        "dry_run": dry_run,
        "user_created": False,
        "marked_service_account": False,
        "token_created": False,
        "token_revoked": None,
        "rights_granted": [],
    }
    try:
        try:
            ext.generation()
        except Exception:
            raise ProvisioningError(
                "the mlflow-ext auth tables are missing: run `mlflow-ext server migrate` first"
            ) from None
        if not users.has_user(username, use_primary=True):
            report["user_created"] = True
            if not dry_run:
                # Tokens only: the password is random and thrown away.
                users.create_user(username, secrets.token_urlsafe(32))
                # Running servers may remember that the user did not exist (``memo``).
                ext.bump_generation()
        if not ext.is_service_account(username):
            report["marked_service_account"] = True
            if not dry_run:
                ext.add_service_account(username, PROVISIONER, "provisioned service account")
        held = {(r["right"], r["resource"]) for r in ext.list_rights(username)}
        for right, resource in dict.fromkeys(wanted):
            if (right, resource) not in held and (right, "*") not in held:
                # "promote" (every model) or "promote on <model>", as `mlflow-ext grant list` names them.
                report["rights_granted"].append(right if resource == "*" else f"{right} on {resource}")
                if not dry_run:
                    ext.grant_right(username, right, resource, PROVISIONER)

        current = _read_token(token_file)
        record = ext.find_token(current) if current else None
        valid = (
            record is not None
            and record.username == username
            and record.name == token_name
            and record.status(now_ms()) == "active"
        )
        if valid:
            assert record is not None
            report["token_id"] = record.id
        else:
            report["token_created"] = True
            active = [t for t in ext.list_tokens(username) if t.name == token_name]
            if not dry_run:
                for stale in active:
                    # The file lost its token (or never had it): rotate rather than keep a secret nobody has.
                    ext.revoke_token(stale.id, PROVISIONER)
                    report["token_revoked"] = stale.id
                expires_at = now_ms() + expires_in_seconds * 1000 if expires_in_seconds else None
                created, secret = ext.create_token(username, token_name, PROVISIONER, expires_at)
                _write_token(token_file, secret)
                report["token_id"] = created.id
            elif active:
                report["token_revoked"] = active[0].id
    finally:
        engine.dispose()
        users.engine.dispose()
    report["changed"] = bool(
        report["user_created"]
        or report["marked_service_account"]
        or report["token_created"]
        or report["rights_granted"]
    )
    return report
