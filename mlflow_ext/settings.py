"""The one list of configuration: every environment variable the platform reads.

The server's environment file (rendered by Ansible, passed by compose's ``env_file``) is the contract
between the deployment tools and ``mlflow-ext server``. The example env file and the README's table are
generated from ``SETTINGS``; contract tests fail when they drift.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlflow_ext.errors import ConfigError

Scope = Literal["server", "client", "bridge"]

# Docker and systemd parse env files differently; values free of these parse the same in both.
_UNSAFE_ENV_CHARS = re.compile(r"[\s\"'$#`\\]")


def _text(value: str) -> str:
    return value


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a whole number") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number

    return parse


def _seconds(minimum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError("must be a number of seconds") from None
        if not number >= minimum:
            raise ValueError(f"must be at least {minimum:g}")
        return number

    return parse


def _secret_text(value: str) -> str:
    if len(value) < 16:
        raise ValueError("must be at least 16 characters")
    return value


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError("must be true or false")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _database_uri(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError("must be a database URI such as postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow")
    if scheme in ("postgresql", "postgres"):
        raise ValueError(
            "must name the driver: use postgresql+psycopg2:// "
            "(SQLAlchemy would pick psycopg 3, not installed)"
        )
    if scheme not in ("postgresql+psycopg2", "sqlite"):
        raise ValueError("must use postgresql+psycopg2:// or sqlite://")
    userinfo = rest.split("@", 1)[0] if "@" in rest else ""
    if ":" in userinfo:
        raise ValueError("must not carry a password: put it in PGPASSFILE (or PGPASSWORD) instead")
    return value


def _s3_uri(value: str) -> str:
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", value):
        raise ValueError("must be an S3 URI such as s3://mlflow-artifacts/")
    return value


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s]+/?", value):
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8333")
    return value


def _password(value: str) -> str:
    if len(value) < 12:
        raise ValueError("must be at least 12 characters")
    return value


def _fernet_key(value: str) -> str:
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(value)
    except (binascii.Error, ValueError):
        raise ValueError("must be a Fernet key (url-safe base64 of 32 bytes)") from None
    if len(raw) != 32:
        raise ValueError("must be a Fernet key (url-safe base64 of 32 bytes)")
    return value


def _subset(*choices: str) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated names, each one of ``choices``; ``none`` means the empty selection."""

    def parse(value: str) -> tuple[str, ...]:
        if value.strip().lower() == "none":
            return ()
        names = tuple(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise ValueError(f"must be a comma-separated subset of {', '.join(choices)} (or none)")
        return names

    return parse


def _alias_names(value: str) -> tuple[str, ...]:
    if value.strip().lower() == "none":
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names or any(not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", name) for name in names):
        raise ValueError("must be comma-separated alias names (letters, digits, '_', '-') or none")
    return names


def _address_list(value: str) -> tuple[str, ...]:
    import ipaddress

    if value.strip().lower() == "none":
        return ()
    try:
        return tuple(str(ipaddress.ip_address(part.strip())) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError("must be comma-separated IP addresses or none") from None


def _audit_destination(value: str) -> str:
    if value != "stderr" and not value.startswith("/"):
        raise ValueError("must be stderr or an absolute file path")
    return value


def _policy_file(value: str) -> str | None:
    """An absolute path to a promotion policy that loads; the problem (file, entry) in the error."""
    if not value:
        return None
    if not value.startswith("/"):
        raise ValueError("must be an absolute file path")
    from mlflow_ext.policy.rules import load

    try:
        load(value)
    except ConfigError as exc:
        raise ValueError(f"is not a usable policy: {exc}") from None
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return value


def _workers(value: str) -> int:
    return _integer(1)(value)


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, meaning, type and default."""

    name: str
    doc: str
    example: str
    parse: Callable[[str], Any] = _text
    default: str | None = None
    secret: bool = False
    required: bool = False
    # Required only when the auth app is on (MLFLOW_EXT_APP_NAME is not "none").
    required_with_auth: bool = False
    scope: Scope = "server"


SETTINGS: tuple[Setting, ...] = (
    # --- stores ---
    Setting(
        "MLFLOW_BACKEND_STORE_URI",
        "Tracking and registry database. No password in the URI: libpq reads PGPASSFILE.",
        "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow",
        parse=_database_uri,
        required=True,
    ),
    Setting(
        "MLFLOW_EXT_AUTH_DATABASE_URI",
        "Database of users and permissions for the auth app. Same rules as the backend store URI.",
        "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow_auth",
        parse=_database_uri,
        required_with_auth=True,
    ),
    Setting(
        "PGPASSFILE",
        "libpq password file (mode 0600, owned by the service user) holding the database password.",
        "/etc/mlflow/pgpass",
    ),
    Setting(
        "PGPASSWORD",
        "Database password, for containers that cannot mount a password file. Prefer PGPASSFILE.",
        "change-me-alphanumeric",
        secret=True,
    ),
    Setting(
        "MLFLOW_ARTIFACTS_DESTINATION",
        "Bucket (and prefix) where the server stores artifacts; clients upload through the server.",
        "s3://mlflow-artifacts/",
        parse=_s3_uri,
        required=True,
    ),
    Setting(
        "MLFLOW_S3_ENDPOINT_URL",
        "S3 endpoint for stores other than AWS (SeaweedFS, Ceph RGW, MinIO, Garage). Empty for AWS.",
        "http://127.0.0.1:8333",
        parse=_http_url,
    ),
    Setting("AWS_ACCESS_KEY_ID", "Access key of the artifact store.", "mlflowaccesskey", secret=True),
    Setting("AWS_SECRET_ACCESS_KEY", "Secret key of the artifact store.", "mlflowsecretkey", secret=True),
    Setting("AWS_DEFAULT_REGION", "Region of the artifact bucket.", "us-east-1", default="us-east-1"),
    Setting(
        "AWS_REQUEST_CHECKSUM_CALCULATION",
        "boto3 >= 1.36 checksums break non-AWS S3 stores; compute them only when required.",
        "when_required",
        parse=_choice("when_required", "when_supported"),
        default="when_required",
    ),
    Setting(
        "AWS_RESPONSE_CHECKSUM_VALIDATION",
        "See AWS_REQUEST_CHECKSUM_CALCULATION.",
        "when_required",
        parse=_choice("when_required", "when_supported"),
        default="when_required",
    ),
    # --- web server ---
    Setting("MLFLOW_HOST", "Address the server binds to.", "127.0.0.1", default="127.0.0.1"),
    Setting("MLFLOW_PORT", "Port the server binds to.", "5000", parse=_integer(1), default="5000"),
    Setting(
        "MLFLOW_WORKERS",
        "uvicorn worker processes. Unset: one per CPU core, at least two.",
        "4",
        parse=_workers,
    ),
    Setting(
        "MLFLOW_SERVER_ALLOWED_HOSTS",
        "Host headers the server answers (DNS-rebinding guard); name:* allows any port.",
        "mlflow.example.com,mlflow.example.com:*,localhost,localhost:*",
    ),
    Setting(
        "FORWARDED_ALLOW_IPS",
        "Proxies whose X-Forwarded-* headers uvicorn trusts (unset: 127.0.0.1); set when nginx is remote.",
        "10.0.0.5",
    ),
    Setting(
        "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS",
        "Origins allowed to call the API from a browser.",
        "https://mlflow.example.com",
    ),
    Setting(
        "MLFLOW_SERVER_X_FRAME_OPTIONS",
        "X-Frame-Options header of the UI.",
        "SAMEORIGIN",
        parse=_choice("SAMEORIGIN", "DENY", "NONE"),
        default="SAMEORIGIN",
    ),
    Setting(
        "MLFLOW_EXPOSE_PROMETHEUS",
        "Directory for Prometheus multiprocess metrics; set it to serve /metrics (admin only under auth).",
        "/run/mlflow-server/metrics",
    ),
    Setting(
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE",
        "Database connections kept per pool (each worker has pools for tracking, registry and auth).",
        "5",
        parse=_integer(1),
    ),
    Setting(
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW",
        "Extra connections a pool may open under load.",
        "10",
        parse=_integer(0),
    ),
    Setting(
        "MLFLOW_SQLALCHEMYSTORE_POOLCLASS",
        "SQLAlchemy pool class; NullPool behind PgBouncer.",
        "NullPool",
        parse=_choice("QueuePool", "NullPool"),
    ),
    Setting(
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
        "The job runner costs about 2 GB of memory and nothing here uses it.",
        "false",
        parse=_boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_DISABLE_TELEMETRY",
        "MLflow's usage telemetry; off on the platform.",
        "true",
        parse=_boolean,
        default="true",
    ),
    Setting(
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
        "Fernet key encrypting webhook secrets; identical on every host, or webhooks break on restart.",
        "generate-with-python-cryptography-Fernet.generate_key",
        parse=_fernet_key,
        secret=True,
    ),
    Setting(
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES",
        "URL schemes a webhook may use; http,https lets the server deliver to a receiver on loopback "
        "(the GoCD bridge).",
        "http,https",
        parse=_subset("http", "https"),
        default="https",
    ),
    Setting(
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS",
        "Let webhooks reach loopback and private addresses (MLflow's SSRF guard); true for a bridge on "
        "the same host or network.",
        "true",
        parse=_boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_WEBHOOK_CACHE_TTL",
        "Seconds each worker caches the list of webhooks; a new or changed webhook fires after at most this.",
        "5",
        parse=_integer(1),
        default="60",
    ),
    # --- auth ---
    Setting(
        "MLFLOW_EXT_APP_NAME",
        "Server app plugin: mlflow-ext-auth (MLflow's auth plus tokens, lockout, create rights, protected "
        "aliases; docs/auth.md), basic-auth (MLflow's auth app) or none (no auth; local development only).",
        "mlflow-ext-auth",
        parse=_choice("mlflow-ext-auth", "basic-auth", "none"),
        default="mlflow-ext-auth",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_DEFAULT_PERMISSION",
        "Permission a user has on resources nobody granted them.",
        "NO_PERMISSIONS",
        parse=_choice("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE"),
        default="NO_PERMISSIONS",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_CACHE_TTL_SECONDS",
        "Seconds a verified password or token stays cached per worker (0 = verify on every request). "
        "With mlflow-ext-auth, revocations and password changes empty every worker's cache at once.",
        "30",
        parse=_integer(0),
        default="30",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_CACHE_MAX_ENTRIES",
        "Most credentials one worker keeps verified in memory (mlflow-ext-auth).",
        "10000",
        parse=_integer(1),
        default="10000",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_REVOCATION_CHECK_SECONDS",
        "How often a worker reads the revocation counter from the auth database (0 = on every request, "
        "so a revoked token or changed password is refused at once on every worker and replica).",
        "0",
        parse=_integer(0),
        default="0",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_OPEN_CREATE",
        "What every user may create without a grant: experiments, registered_models, or none "
        "(deny by default; grant create rights with mlflow-ext grant).",
        "none",
        parse=_subset("experiments", "registered_models"),
        default="none",
    ),
    Setting(
        "MLFLOW_EXT_PROTECTED_ALIASES",
        "Registered-model aliases only holders of the promote right may set, move or delete (or none).",
        "production,staging",
        parse=_alias_names,
        default="production",
    ),
    Setting(
        "MLFLOW_EXT_PROMOTION_POLICY",
        "Promotion policy file (YAML, docs/promotion.md): gates a version must pass before a protected alias "
        "moves to it, even through the REST API. Unset: only the promote right is checked.",
        "/etc/mlflow/promotion-policy.yaml",
        parse=_policy_file,
    ),
    Setting(
        "MLFLOW_EXT_AUTH_LOCKOUT_USER_FAILURES",
        "Failed logins for one username, within the window, that lock it out.",
        "5",
        parse=_integer(1),
        default="5",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_LOCKOUT_ADDRESS_FAILURES",
        "Failed logins from one client address, within the window, that lock it out.",
        "50",
        parse=_integer(1),
        default="50",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_LOCKOUT_WINDOW_SECONDS",
        "Window in which failed logins are counted.",
        "900",
        parse=_integer(1),
        default="900",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_LOCKOUT_SECONDS",
        "How long a locked-out username or address is refused (HTTP 429 with Retry-After).",
        "900",
        parse=_integer(1),
        default="900",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_SLOWDOWN_AFTER",
        "Failed logins after which each further failure is answered with a growing delay (up to 2 s).",
        "3",
        parse=_integer(1),
        default="3",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_TRUSTED_PROXIES",
        "Peer addresses whose X-Forwarded-For names the client (the local TLS proxy), or none.",
        "127.0.0.1,::1",
        parse=_address_list,
        default="127.0.0.1,::1",
    ),
    Setting(
        "MLFLOW_EXT_AUDIT_LOG",
        "Where the auth audit log (JSON lines) goes: stderr (the journal) or an absolute file path.",
        "/var/log/mlflow/audit.jsonl",
        parse=_audit_destination,
        default="stderr",
    ),
    Setting(
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "Admin account created on first start.",
        "admin",
        default="admin",
    ),
    Setting(
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "Admin password, used on first start only (at least 12 characters).",
        "change-me-at-least-12",
        parse=_password,
        secret=True,
        required_with_auth=True,
    ),
    Setting(
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "Signs sessions and CSRF tokens; identical on every worker and host.",
        "change-me-random-alphanumeric",
        parse=_password,
        secret=True,
        required_with_auth=True,
    ),
    # --- entrypoint ---
    Setting(
        "MLFLOW_EXT_MIGRATE_ON_START",
        "Upgrade both schemas before starting. Off where a separate migrate step runs (Ansible, compose).",
        "false",
        parse=_boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_EXT_RUNTIME_DIR",
        "Private directory for the rendered auth config. Default: systemd's RUNTIME_DIRECTORY or a temp dir.",
        "/run/mlflow-server",
    ),
    # --- bridge: registry events to GoCD pipeline runs (mlflow_ext.bridge, docs/bridge.md) ---
    Setting(
        "MLFLOW_EXT_BRIDGE_HOST",
        "Address the bridge's webhook receiver binds to.",
        "127.0.0.1",
        default="127.0.0.1",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_PORT",
        "Port of the webhook receiver (POST /webhook, GET /health).",
        "5100",
        parse=_integer(1),
        default="5100",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_DATABASE_URI",
        "Outbox database (postgresql+psycopg2://, or sqlite:/// for a single-node development setup). "
        "No password in the URI: libpq reads PGPASSFILE.",
        "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow_bridge",
        parse=_database_uri,
        required=True,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET",
        "Secret shared with the MLflow webhook; signs every delivery (X-MLflow-Signature).",
        "change-me-random-alphanumeric",
        parse=_secret_text,
        secret=True,
        required=True,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_ROUTES",
        "Routing file (YAML): model-name pattern plus alias or event, to GoCD pipeline and variables.",
        "/etc/mlflow/bridge-routes.yaml",
        required=True,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_GOCD_URL",
        "GoCD server URL (without /go).",
        "https://gocd.example.com",
        parse=_http_url,
        required=True,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_GOCD_USERNAME",
        "GoCD user the bridge acts as (owner of the token, or basic-auth user); GoCD records it as the "
        "approver of the runs the bridge triggers, which is how the bridge finds them again.",
        "mlflow-bridge",
        required=True,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_GOCD_TOKEN",
        "GoCD access token of that user (preferred over a password).",
        "change-me-gocd-token",
        secret=True,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_GOCD_PASSWORD",
        "GoCD password of that user, when no token is set.",
        "change-me-gocd-password",
        secret=True,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_GOCD_TIMEOUT",
        "Seconds to wait for one GoCD API answer.",
        "10",
        parse=_seconds(0.1),
        default="10",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_PUBLIC_TRACKING_URI",
        "Tracking URI passed to pipelines as MLFLOW_TRACKING_URI (what GoCD agents reach). "
        "Default: MLFLOW_TRACKING_URI.",
        "https://mlflow.example.com",
        parse=_http_url,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_MAX_SKEW_SECONDS",
        "Deliveries whose X-MLflow-Timestamp is further than this from the bridge's clock are refused.",
        "300",
        parse=_integer(1),
        default="300",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_RECONCILE_SECONDS",
        "How often the registry's aliases are compared with what was delivered (0 turns it off).",
        "60",
        parse=_seconds(0),
        default="60",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_ADOPT_EXISTING",
        "On the bridge's first reconcile, record aliases that already exist as delivered instead of "
        "scheduling them all.",
        "true",
        parse=_boolean,
        default="true",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_RETRY_MAX_SECONDS",
        "Longest wait between delivery attempts while GoCD is down or answers 5xx (backoff from 1 s).",
        "10",
        parse=_seconds(0.1),
        default="10",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_PAUSED_RECHECK_SECONDS",
        "How often a delivery held back by a paused pipeline (GoCD 409) checks whether it was unpaused.",
        "30",
        parse=_seconds(0.1),
        default="30",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_IN_DOUBT_SECONDS",
        "After an unanswered trigger (timeout, crash), how long GoCD's history is searched for the run "
        "before the trigger is sent again.",
        "30",
        parse=_seconds(0),
        default="30",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_DELIVERY_WORKERS",
        "Pipelines triggered in parallel (one delivery at a time per pipeline).",
        "8",
        parse=_integer(1),
        default="8",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_EXT_BRIDGE_FEEDBACK",
        "Tag each scheduled version with gocd.pipeline, gocd.counter, gocd.url, gocd.scheduled_at.",
        "true",
        parse=_boolean,
        default="true",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_TRACKING_URI",
        "MLflow server the bridge reads the registry from and writes feedback tags to.",
        "http://127.0.0.1:5000",
        parse=_http_url,
        required=True,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_TRACKING_USERNAME",
        "MLflow user of the bridge (reads models, tags versions; admin to register the webhook).",
        "mlflow-bridge",
        scope="bridge",
    ),
    Setting(
        "MLFLOW_TRACKING_PASSWORD",
        "Password of that MLflow user.",
        "change-me-at-least-12",
        secret=True,
        scope="bridge",
    ),
    Setting(
        "MLFLOW_TRACKING_TOKEN",
        "MLflow access token of the bridge (instead of username and password).",
        "change-me-mlflow-token",
        secret=True,
        scope="bridge",
    ),
    # --- client: lineage tags on every run (mlflow_ext.run_context, docs/run-tags.md) ---
    Setting(
        "MLFLOW_EXT_RUN_TAGS",
        "Groups of lineage.* tags set on every new run: code, ci, env, notebook, host; none turns them off.",
        "code,ci,env,notebook,host",
        parse=_subset("code", "ci", "env", "notebook", "host"),
        default="code,ci,env,notebook,host",
        scope="client",
    ),
    Setting(
        "MLFLOW_EXT_RUN_DIFF_MAX_BYTES",
        "Largest uncommitted diff logged as the run artifact lineage/code.diff (cut beyond); 0 logs none.",
        "1048576",
        parse=_integer(0),
        default="1048576",
        scope="client",
    ),
    # --- client: the local deploy target of `mlflow-ext deploy` (docs/deploy-targets.md) ---
    Setting(
        "MLFLOW_EXT_DEPLOY_ROOT",
        "Folder of the local deploy target: one folder per deployment (venv, model, record).",
        "/opt/mlflow-deployments",
        parse=_absolute_path,
        default="/opt/mlflow-deployments",
        scope="client",
    ),
    Setting(
        "MLFLOW_EXT_DEPLOY_MODE",
        "How the local deploy target runs servers: systemd, a supervised process, or auto (systemd if PID 1)",
        "auto",
        parse=_choice("auto", "systemd", "process"),
        default="auto",
        scope="client",
    ),
)

BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


def server_settings() -> tuple[Setting, ...]:
    return tuple(s for s in SETTINGS if s.scope == "server")


def load(
    environ: Mapping[str, str], scope: Scope = "server", names: Collection[str] | None = None
) -> dict[str, Any]:
    """Validate ``environ`` against the registry and return parsed values, defaults filled in.

    ``names`` limits the check to those settings of the scope (a command that needs only a few).
    Raises ConfigError listing every problem at once; messages name variables, never values.
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.scope != scope or (names is not None and setting.name not in names):
            continue
        raw = environ.get(setting.name, "")
        if raw == "":
            raw = setting.default or ""
        if raw == "":
            values[setting.name] = None
            continue
        if _UNSAFE_ENV_CHARS.search(raw):
            problems.append(f"{setting.name} must not contain spaces, quotes, '$', '#' or backslashes")
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            problems.append(f"{setting.name} {exc}")
    if scope in ("server", "bridge"):
        auth_on = scope == "server" and values.get("MLFLOW_EXT_APP_NAME") != "none"
        for setting in SETTINGS:
            needed = setting.required or (setting.required_with_auth and auth_on)
            already_reported = any(p.startswith(setting.name + " ") for p in problems)
            missing = values.get(setting.name) is None
            wanted = names is None or setting.name in names
            if setting.scope == scope and wanted and needed and missing and not already_reported:
                problems.append(f"{setting.name} is required: {setting.doc}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return values


def masked(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values fit to print: secrets that are set become '***'."""
    return {
        name: ("***" if BY_NAME[name].secret and value is not None else value)
        for name, value in values.items()
    }


def read_env_file(path: str) -> dict[str, str]:
    """Parse a KEY=value env file the way both systemd and compose read our unquoted values."""
    entries: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{path}:{number}: expected KEY=value")
        entries[key] = value
    return entries


def apply_env_file(env_file: str | None) -> dict[str, str]:
    """Overlay the env file on this process's environment, as systemd's EnvironmentFile= would.

    The process itself needs the values too: libpq reads PGPASSFILE and boto3 its keys from os.environ.
    Returns a copy of the resulting environment.
    """
    if env_file:
        os.environ.update(read_env_file(env_file))
    return dict(os.environ)


def render_env_example() -> str:
    """docker/mlflow.env.example: every server setting, secrets and optional ones commented out."""
    lines = [
        "# Environment of mlflow-ext server: the platform's one configuration contract.",
        "# Generated by `mlflow-ext server settings --format env`; do not edit by hand.",
        "# Values are unquoted and free of spaces, '$' and '#': Docker and systemd parse them alike.",
    ]
    for setting in server_settings():
        lines.append("")
        lines.append(f"# {setting.doc}")
        flags = []
        if setting.required or setting.required_with_auth:
            flags.append("required" if setting.required else "required with auth")
        if setting.secret:
            flags.append("secret")
        if setting.default is not None:
            flags.append(f"default {setting.default}")
        if flags:
            lines.append(f"# ({', '.join(flags)})")
        active = setting.required or setting.required_with_auth
        lines.append(f"{'' if active else '# '}{setting.name}={setting.example}")
    return "\n".join(lines) + "\n"


def render_markdown_table(scope: Scope = "server") -> str:
    """The README's variable table."""
    rows = ["| variable | default | required | secret | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        if s.scope != scope:
            continue
        required = "yes" if s.required else ("with auth" if s.required_with_auth else "")
        rows.append(
            f"| `{s.name}` | {f'`{s.default}`' if s.default else ''} | {required} | "
            f"{'yes' if s.secret else ''} | {s.doc} |"
        )
    return "\n".join(rows) + "\n"
