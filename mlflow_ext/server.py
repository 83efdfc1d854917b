"""The server entrypoint: validate the environment, migrate when asked, render the auth config, create the
admin, exec MLflow.

systemd (``EnvironmentFile=``) and compose (``env_file:``) both start ``mlflow-ext server run`` with the
same environment, so the server command line, the auth INI and the defaults live here and nowhere else.
The admin password is needed only to create the admin account: the entrypoint does that itself and execs
MLflow without it, so no long-running process (``mlflow server``, uvicorn, its workers) carries it.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

from mlflow_ext import mlflow_internals, settings, tracking_migrations
from mlflow_ext.auth.store import migrate as migrate_ext_tables
from mlflow_ext.errors import ConfigError, MigrationError
from mlflow_ext.pglock import advisory_lock
from mlflow_ext.policy import rules

# One advisory lock id for every migrating process, so hosts starting at once do not race.
MIGRATION_LOCK_ID = 0x6D6C666C  # "mlfl"


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
    if values["MLFLOW_EXT_OIDC_ISSUER"]:
        if not values["MLFLOW_EXT_OIDC_CLIENT_ID"]:
            raise ConfigError(
                "invalid configuration:\n  MLFLOW_EXT_OIDC_CLIENT_ID is required with MLFLOW_EXT_OIDC_ISSUER"
            )
        if values["MLFLOW_EXT_APP_NAME"] != "mlflow-ext-auth":
            raise ConfigError(
                "invalid configuration:\n  MLFLOW_EXT_OIDC_ISSUER (single sign-on) needs "
                "MLFLOW_EXT_APP_NAME=mlflow-ext-auth"
            )
    if values["MLFLOW_WORKERS"] is None:
        values["MLFLOW_WORKERS"] = max(2, os.cpu_count() or 1)
    if auth_enabled(values):
        given = [name for name in ADMIN_PASSWORD_SETTINGS if values[name] is not None]
        if len(given) != 1:
            raise ConfigError(
                "invalid configuration:\n  "
                + ("set only one of " if given else "one of these is required with auth: ")
                + " or ".join(ADMIN_PASSWORD_SETTINGS)
                + " (the admin's password, used on first start)"
            )
    return values


def auth_enabled(values: Mapping[str, Any]) -> bool:
    return bool(values["MLFLOW_EXT_APP_NAME"] != "none")


# Where the admin's password may come from; either is removed from the environment MLflow runs with.
ADMIN_PASSWORD_SETTINGS = ("MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE", "MLFLOW_AUTH_ADMIN_PASSWORD")
_ADMIN_PASSWORD_FILE = ADMIN_PASSWORD_SETTINGS[0]


def admin_password(values: Mapping[str, Any]) -> str:
    """The admin's password, from the environment or read from its file.

    The file must be a regular file owned by the user this process runs as, readable by it alone (0600 or
    0400). Errors name the setting and the path, never the password.
    """
    path = values[_ADMIN_PASSWORD_FILE]
    if path is None:
        return str(values["MLFLOW_AUTH_ADMIN_PASSWORD"])
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"{_ADMIN_PASSWORD_FILE}: cannot read {path}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError(f"{_ADMIN_PASSWORD_FILE}: {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if info.st_uid != os.geteuid():
            raise ConfigError(
                f"{_ADMIN_PASSWORD_FILE}: {path} must be owned by the user the server runs as "
                f"(uid {os.geteuid()}), not uid {info.st_uid}"
            )
        if info.st_mode & 0o077:
            raise ConfigError(
                f"{_ADMIN_PASSWORD_FILE}: {path} must be readable by its owner only (mode 0600 or 0400), "
                f"not {stat.S_IMODE(info.st_mode):04o}"
            )
        raw = handle.read(4096)
    try:
        password = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{_ADMIN_PASSWORD_FILE}: {path} does not hold UTF-8 text") from None
    try:
        return str(settings.BY_NAME["MLFLOW_AUTH_ADMIN_PASSWORD"].parse(password))
    except ValueError as exc:
        raise ConfigError(f"{_ADMIN_PASSWORD_FILE}: the password in {path} {exc}") from None


def bootstrap_admin(values: Mapping[str, Any], password: str) -> bool:
    """Create the admin account unless it exists; True if it was created.

    MLflow's auth app creates it too, from MLFLOW_AUTH_ADMIN_PASSWORD, but in every worker and only with the
    password in the workers' environment. Done here, the workers find the admin and need no password.
    An existing admin keeps its password: the setting is for the first start only.
    """
    username = str(values["MLFLOW_AUTH_ADMIN_USERNAME"])
    if admin_exists(str(values["MLFLOW_EXT_AUTH_DATABASE_URI"]), username):
        return False
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    users = SqlAlchemyStore()
    users.init_db(str(values["MLFLOW_EXT_AUTH_DATABASE_URI"]))
    try:
        if users.has_user(username, use_primary=True):
            return False
        try:
            users.create_user(username, password, is_admin=True)
        except MlflowException:
            # Another host or process starting at the same moment created it first.
            if users.has_user(username, use_primary=True):
                return False
            raise
        return True
    finally:
        users.engine.dispose()


def admin_exists(database_uri: str, username: str) -> bool:
    """Whether the admin account exists, asked in plain SQL: every restart but the first needs no more, and
    MLflow's auth store would import all of MLflow (about 2 s, before the server's own import) to say so.
    Any doubt (no table yet, a database error) is a no: MLflow's store then decides and names the error."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    table = sa.table(
        str(mlflow_internals.AUTH_USERS_TABLE.value),
        sa.column(str(mlflow_internals.AUTH_USERNAME_COLUMN.value)),
    )
    engine = sa.create_engine(database_uri, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            query = sa.select(sa.literal(1)).select_from(table).where(table.c[0] == username)
            return connection.execute(query).first() is not None
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()


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
    """Write the auth app's INI (mode 0600) and return its path. It holds no admin password: the entrypoint
    creates the admin before MLflow starts."""
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


def prepare(environ: Mapping[str, str], bootstrap: bool = False) -> tuple[list[str], dict[str, str]]:
    """Validate, migrate when asked, create the admin if ``bootstrap``, render config; return the argv and
    the env to exec, which holds no admin password."""
    values = resolve(environ)
    if values["MLFLOW_EXT_MIGRATE_ON_START"]:
        migrate(values)
    if bootstrap and auth_enabled(values):
        bootstrap_admin(values, admin_password(values))
    env = server_environment(values, environ)
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    if auth_enabled(values):
        env["MLFLOW_AUTH_CONFIG_PATH"] = render_auth_config(values, _runtime_dir(values, environ))
    if not values["MLFLOW_EXT_SERVER_ACCESS_LOG"] and "MLFLOW_GUNICORN_OPTS" not in env:
        # The proxy logs every request; MLflow refuses uvicorn options beside gunicorn's.
        options = (env.get("MLFLOW_UVICORN_OPTS"), "--no-access-log")
        env["MLFLOW_UVICORN_OPTS"] = " ".join(filter(None, options))
    if values["MLFLOW_EXT_APP_NAME"] == "mlflow-ext-auth":
        # Deny by default: a route without an authorization decision is refused to non-admins.
        env.setdefault("MLFLOW_BASIC_AUTH_FAIL_CLOSED", "true")
    if values["MLFLOW_EXPOSE_PROMETHEUS"]:
        os.makedirs(values["MLFLOW_EXPOSE_PROMETHEUS"], mode=0o700, exist_ok=True)
        # The last run's workers' multiprocess files: prometheus_client would sum them with the new ones.
        for name in os.listdir(values["MLFLOW_EXPOSE_PROMETHEUS"]):
            if name.endswith(".db"):
                os.unlink(os.path.join(values["MLFLOW_EXPOSE_PROMETHEUS"], name))
    return server_argv(values), env


def run(environ: Mapping[str, str]) -> None:
    """Replace this process with the MLflow server."""
    argv, env = prepare(environ, bootstrap=True)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


# --- migrations ---------------------------------------------------------------------------------


def _revision(engine: Any, version_table: str) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": version_table})
        return context.get_current_revision()


def _migrate_tracking(engine: Any) -> dict[str, Any]:
    before = _revision(engine, "alembic_version")
    head = mlflow_internals.latest_tracking_revision()
    if mlflow_internals.is_empty_database(engine):
        mlflow_internals.initialize_tracking_tables(engine)
    elif before != head:
        mlflow_internals.upgrade_tracking_schema(engine)
    after = _revision(engine, "alembic_version")
    return {"before": before, "after": after, "changed": before != after}


def _migrate_auth(engine: Any) -> dict[str, Any]:
    from mlflow.server.auth.db import utils as auth_db_utils

    before = _revision(engine, "alembic_version_auth")
    auth_db_utils.migrate(engine, "head")
    after = _revision(engine, "alembic_version_auth")
    return {"before": before, "after": after, "changed": before != after}


def migrate(values: Mapping[str, Any]) -> dict[str, Any]:
    """Upgrade the tracking and auth schemas (MLflow's, the tracking store's indexes on PostgreSQL, then
    mlflow-ext-auth's tables); report what changed.

    One advisory lock on the tracking database covers the whole run: a second caller (another host, a
    concurrent ``make upgrade``) waits, then finds every schema at head. ``changed`` is true only when a
    migration ran, so Ansible can report it truthfully.
    """
    from mlflow.store.db.utils import create_sqlalchemy_engine

    report: dict[str, Any] = {}
    engines = [create_sqlalchemy_engine(str(values["MLFLOW_BACKEND_STORE_URI"]))]
    try:
        with advisory_lock(engines[0], MIGRATION_LOCK_ID):
            report["tracking"] = _migrate_tracking(engines[0])
            if engines[0].dialect.name == "postgresql":
                # The tracking store's own indexes on MLflow's tables, after MLflow's schema is at head.
                report["tracking_indexes"] = tracking_migrations.migrate(engines[0])
            if auth_enabled(values):
                engines.append(create_sqlalchemy_engine(str(values["MLFLOW_EXT_AUTH_DATABASE_URI"])))
                report["auth"] = _migrate_auth(engines[1])
                if values["MLFLOW_EXT_APP_NAME"] == "mlflow-ext-auth":
                    report["auth_ext"] = migrate_ext_tables(engines[1])
    except (ConfigError, MigrationError):
        raise
    except Exception as exc:
        # Driver messages can echo the URI; it carries no password by contract, so it may show.
        raise MigrationError(f"schema migration failed: {type(exc).__name__}: {exc}") from exc
    finally:
        for engine in engines:
            engine.dispose()
    report["changed"] = any(part["changed"] for part in report.values())
    return report
