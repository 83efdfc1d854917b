"""The server entrypoint: validate the environment, migrate when asked, render the auth config, exec MLflow.

systemd (``EnvironmentFile=``) and compose (``env_file:``) both start ``mlflow-ext server run`` with the
same environment, so the server command line, the auth INI and the defaults live here and nowhere else.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from mlflow_ext import mlflow_internals, settings
from mlflow_ext.auth.store import migrate as migrate_ext_tables
from mlflow_ext.errors import ConfigError, MigrationError
from mlflow_ext.pglock import advisory_lock
from mlflow_ext.policy import rules

# One advisory lock id for every migrating process, so hosts starting at once do not race.
_MIGRATION_LOCK_ID = 0x6D6C666C  # "mlfl"


def resolve(environ: Mapping[str, str]) -> dict[str, Any]:
    """Validated settings with defaults and derived values filled in."""
    values = settings.load(environ)
    if values["MLFLOW_EXT_PROMOTION_POLICY"]:
        try:
            rules.load(values["MLFLOW_EXT_PROMOTION_POLICY"])
        except ConfigError as exc:
            raise ConfigError(
                f"invalid configuration:\n  MLFLOW_EXT_PROMOTION_POLICY is not a usable policy: {exc}"
            ) from None
    if values["MLFLOW_WORKERS"] is None:
        values["MLFLOW_WORKERS"] = max(2, os.cpu_count() or 1)
    return values


def auth_enabled(values: Mapping[str, Any]) -> bool:
    return bool(values["MLFLOW_EXT_APP_NAME"] != "none")


# The auth INI's authorization_function for each auth app.
AUTHORIZATION_FUNCTIONS = {
    "basic-auth": "mlflow.server.auth:authenticate_request_basic_auth",
    "mlflow-ext-auth": "mlflow_ext.auth.authn:authenticate_request",
}


def _mlflow_cache_ttl(values: Mapping[str, Any]) -> int:
    if values["MLFLOW_EXT_APP_NAME"] == "mlflow-ext-auth":
        return 0
    return int(values["MLFLOW_EXT_AUTH_CACHE_TTL_SECONDS"])


def render_auth_config(values: Mapping[str, Any], runtime_dir: str) -> str:
    """Write the auth app's INI (mode 0600) and return its path. The admin password stays in the env."""
    database_uri = str(values["MLFLOW_EXT_AUTH_DATABASE_URI"]).replace("%", "%%")
    text = "\n".join(
        [
            "[mlflow]",
            f"default_permission = {values['MLFLOW_EXT_AUTH_DEFAULT_PERMISSION']}",
            f"database_uri = {database_uri}",
            f"admin_username = {values['MLFLOW_AUTH_ADMIN_USERNAME']}",
            f"authorization_function = {AUTHORIZATION_FUNCTIONS[str(values['MLFLOW_EXT_APP_NAME'])]}",
            # mlflow-ext-auth keeps its own cache (flushed on revocation across workers); MLflow's
            # per-worker cache only serves the basic-auth app.
            f"auth_cache_ttl_seconds = {_mlflow_cache_ttl(values)}",
            "grant_default_workspace_access = false",
            "",
        ]
    )
    path = os.path.join(runtime_dir, "basic_auth.ini")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _runtime_dir(values: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    configured = values["MLFLOW_EXT_RUNTIME_DIR"] or environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if configured:
        os.makedirs(configured, mode=0o700, exist_ok=True)
        return str(configured)
    return tempfile.mkdtemp(prefix="mlflow-ext-")


def server_environment(values: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """The environment MLflow runs with: the caller's, plus every resolved setting as text."""
    env = dict(environ)
    for name, value in values.items():
        if value is None:
            env.pop(name, None)
        elif isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, tuple):
            env[name] = ",".join(value) if value else "none"
        else:
            env[name] = str(value)
    return env


def server_argv(values: Mapping[str, Any]) -> list[str]:
    """Everything else reaches ``mlflow server`` through its env vars; --app-name has none."""
    argv = [sys.executable, "-m", "mlflow", "server"]
    if auth_enabled(values):
        argv += ["--app-name", str(values["MLFLOW_EXT_APP_NAME"])]
    return argv


def prepare(environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Validate, migrate when asked, render config; return the argv and env to exec."""
    values = resolve(environ)
    if values["MLFLOW_EXT_MIGRATE_ON_START"]:
        migrate(values)
    env = server_environment(values, environ)
    if auth_enabled(values):
        env["MLFLOW_AUTH_CONFIG_PATH"] = render_auth_config(values, _runtime_dir(values, environ))
    if values["MLFLOW_EXT_APP_NAME"] == "mlflow-ext-auth":
        # Deny by default: a route without an authorization decision is refused to non-admins.
        env.setdefault("MLFLOW_BASIC_AUTH_FAIL_CLOSED", "true")
    if values["MLFLOW_EXPOSE_PROMETHEUS"]:
        os.makedirs(values["MLFLOW_EXPOSE_PROMETHEUS"], mode=0o700, exist_ok=True)
    return server_argv(values), env


def run(environ: Mapping[str, str]) -> None:
    """Replace this process with the MLflow server."""
    argv, env = prepare(environ)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


# --- migrations ---------------------------------------------------------------------------------


def _revision(engine: Any, version_table: str) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": version_table})
        return context.get_current_revision()


def _migrate_tracking(uri: str) -> dict[str, Any]:
    from mlflow.store.db import utils as db_utils

    engine = db_utils.create_sqlalchemy_engine(uri)
    try:
        with advisory_lock(engine, _MIGRATION_LOCK_ID):
            before = _revision(engine, "alembic_version")
            head = mlflow_internals.latest_tracking_revision()
            if mlflow_internals.is_empty_database(engine):
                mlflow_internals.initialize_tracking_tables(engine)
            elif before != head:
                mlflow_internals.upgrade_tracking_schema(engine)
            after = _revision(engine, "alembic_version")
    finally:
        engine.dispose()
    return {"before": before, "after": after, "changed": before != after}


def _migrate_auth(uri: str) -> dict[str, Any]:
    from mlflow.server.auth.db import utils as auth_db_utils
    from mlflow.store.db.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(uri)
    try:
        with advisory_lock(engine, _MIGRATION_LOCK_ID):
            before = _revision(engine, "alembic_version_auth")
            auth_db_utils.migrate(engine, "head")
            after = _revision(engine, "alembic_version_auth")
    finally:
        engine.dispose()
    return {"before": before, "after": after, "changed": before != after}


def _migrate_auth_ext(uri: str) -> dict[str, Any]:
    """mlflow-ext-auth's own tables (tokens, rights, lockouts) beside MLflow's auth schema."""
    from mlflow.store.db.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(uri)
    try:
        with advisory_lock(engine, _MIGRATION_LOCK_ID):
            return migrate_ext_tables(engine)
    finally:
        engine.dispose()


def migrate(values: Mapping[str, Any]) -> dict[str, Any]:
    """Upgrade the tracking (and auth) schema to this MLflow's head; report what changed.

    ``changed`` is true only when a migration ran, so Ansible can report it truthfully.
    """
    report: dict[str, Any] = {}
    try:
        report["tracking"] = _migrate_tracking(str(values["MLFLOW_BACKEND_STORE_URI"]))
        if auth_enabled(values):
            report["auth"] = _migrate_auth(str(values["MLFLOW_EXT_AUTH_DATABASE_URI"]))
        if values["MLFLOW_EXT_APP_NAME"] == "mlflow-ext-auth":
            report["auth_ext"] = _migrate_auth_ext(str(values["MLFLOW_EXT_AUTH_DATABASE_URI"]))
    except ConfigError:
        raise
    except Exception as exc:
        # Driver messages can echo the URI; it carries no password by contract, so it may show.
        raise MigrationError(f"schema migration failed: {type(exc).__name__}: {exc}") from exc
    report["changed"] = any(part["changed"] for part in report.values())
    return report
