"""The server's settings: the environment file of `mlflow-ext server run` (server.env, compose's env_file)."""

from __future__ import annotations

from mlflow_ext.settings.base import (
    Setting,
    address_list,
    alias_names,
    audit_destination,
    boolean,
    choice,
    database_uri,
    fernet_key,
    http_url,
    integer,
    issuer_url,
    name_list,
    optional_absolute_path,
    password,
    s3_uri,
    subset,
    workers,
)

SETTINGS: tuple[Setting, ...] = (
    # --- stores ---
    Setting(
        "MLFLOW_BACKEND_STORE_URI",
        "Tracking and registry database. No password in the URI: libpq reads PGPASSFILE.",
        "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow",
        parse=database_uri,
        required=True,
    ),
    Setting(
        "MLFLOW_EXT_AUTH_DATABASE_URI",
        "Database of users and permissions for the auth app. Same rules as the backend store URI.",
        "postgresql+psycopg2://mlflow@127.0.0.1:5432/mlflow_auth",
        parse=database_uri,
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
        parse=s3_uri,
        required=True,
    ),
    Setting(
        "MLFLOW_S3_ENDPOINT_URL",
        "S3 endpoint for stores other than AWS (SeaweedFS, Ceph RGW, MinIO, Garage). Empty for AWS.",
        "http://127.0.0.1:8333",
        parse=http_url,
    ),
    Setting("AWS_ACCESS_KEY_ID", "Access key of the artifact store.", "mlflowaccesskey", secret=True),
    Setting("AWS_SECRET_ACCESS_KEY", "Secret key of the artifact store.", "mlflowsecretkey", secret=True),
    Setting("AWS_DEFAULT_REGION", "Region of the artifact bucket.", "us-east-1", default="us-east-1"),
    Setting(
        "AWS_REQUEST_CHECKSUM_CALCULATION",
        "boto3 >= 1.36 checksums break non-AWS S3 stores; compute them only when required.",
        "when_required",
        parse=choice("when_required", "when_supported"),
        default="when_required",
    ),
    Setting(
        "AWS_RESPONSE_CHECKSUM_VALIDATION",
        "See AWS_REQUEST_CHECKSUM_CALCULATION.",
        "when_required",
        parse=choice("when_required", "when_supported"),
        default="when_required",
    ),
    # --- web server ---
    Setting("MLFLOW_HOST", "Address the server binds to.", "127.0.0.1", default="127.0.0.1"),
    Setting("MLFLOW_PORT", "Port the server binds to.", "5000", parse=integer(1), default="5000"),
    Setting(
        "MLFLOW_WORKERS",
        "uvicorn worker processes. Unset: one per CPU core, at least two.",
        "4",
        parse=workers,
    ),
    Setting(
        "MLFLOW_EXT_SERVER_ACCESS_LOG",
        "uvicorn's own line per request on stderr. The proxy's access log already records every request, "
        "with its timings; the server's second copy costs about a tenth of its CPU for a small request. "
        "true: log it again (a server reached without the proxy).",
        "false",
        parse=boolean,
        default="false",
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
        parse=choice("SAMEORIGIN", "DENY", "NONE"),
        default="SAMEORIGIN",
    ),
    Setting(
        "MLFLOW_EXPOSE_PROMETHEUS",
        "Directory for Prometheus multiprocess metrics; set it to serve /metrics (admin only under auth).",
        "/run/mlflow-server/metrics",
    ),
    Setting(
        "MLFLOW_EXT_METRICS_TEXTFILE_DIR",
        "Directory whose *.prom files (written by the backup and gc jobs) /metrics serves too.",
        "/var/lib/mlflow-platform/metrics",
        parse=optional_absolute_path,
        default="/var/lib/mlflow-platform/metrics",
    ),
    Setting(
        "MLFLOW_EXT_FAST_TRACKING_STORE",
        "PostgreSQL tracking and registry stores that write log_batch, log_metric, log_param and set_tag in "
        "one or two round trips and read search_runs, get_run, search_registered_models and alias lookups in "
        "a few plain statements (same rows, answers and errors as MLflow's stores); false: MLflow's own.",
        "true",
        parse=boolean,
        default="true",
    ),
    Setting(
        "MLFLOW_EXT_FAST_LOG_BATCH",
        "Answer well-formed log-batch requests without MLflow's protobuf conversion (same entities, store "
        "call, answers and permission checks; any other body goes to MLflow's handler); false: MLflow's "
        "handler serves them all.",
        "true",
        parse=boolean,
        default="true",
    ),
    Setting(
        "MLFLOW_EXT_FAST_LOG_METRIC",
        "Answer a log-metric request in front of Flask when MLflow's decisions on it are already known (the "
        "credentials cached, MLflow's permission check passed for this user and run under the auth "
        "database's current generation, a plainly well-formed body): the same store call and answer; any "
        "other request goes to MLflow's handler. false: MLflow's handler serves them all.",
        "true",
        parse=boolean,
        default="true",
    ),
    Setting(
        "MLFLOW_EXT_PRESIGNED_ARTIFACT_URLS",
        "Hand clients presigned URLs of the artifact store (multipart uploads and downloads straight to S3). "
        "Only when every client reaches MLFLOW_S3_ENDPOINT_URL at that address; false: every artifact goes "
        "through the server.",
        "false",
        parse=boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE",
        "Database connections kept per pool (each worker has pools for tracking, registry and auth).",
        "5",
        parse=integer(1),
    ),
    Setting(
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW",
        "Extra connections a pool may open under load.",
        "10",
        parse=integer(0),
    ),
    Setting(
        "MLFLOW_SQLALCHEMYSTORE_POOLCLASS",
        "SQLAlchemy pool class; NullPool behind PgBouncer.",
        "NullPool",
        parse=choice("QueuePool", "NullPool"),
    ),
    Setting(
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
        "The job runner costs about 2 GB of memory and nothing here uses it.",
        "false",
        parse=boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_DISABLE_TELEMETRY",
        "MLflow's usage telemetry; off on the platform (with mlflow-ext-auth the UI then hides its "
        "telemetry notice).",
        "true",
        parse=boolean,
        default="true",
    ),
    # --- UI features the platform does not configure (off unless turned on) ---
    Setting(
        "MLFLOW_ENABLE_AI_GATEWAY",
        "MLflow's AI gateway (endpoints, provider keys, invocations): its API answers 501 and the UI hides "
        "it when false. MLflow's own switch.",
        "false",
        parse=boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_EXT_UI_ASSISTANT",
        "MLflow's GenAI assistant (it runs a coding CLI on the server host): unless true, its API "
        "(/ajax-api/3.0/mlflow/assistant/...) answers 404 and the UI hides it (mlflow-ext-auth).",
        "false",
        parse=boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_EXT_UI_DEMO",
        "The UI's Start Demo (sample experiments, traces and prompts written into the real stores): unless "
        "true, its API (/ajax-api/3.0/mlflow/demo/...) answers 404 and the UI hides it (mlflow-ext-auth).",
        "false",
        parse=boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_EXT_UI_MCP_REGISTRY",
        "MLflow's MCP server registry: unless true, its API (/api/3.0/mlflow/mcp-servers/...) answers 404 "
        "and the UI hides it (mlflow-ext-auth).",
        "false",
        parse=boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
        "Fernet key encrypting webhook secrets; identical on every host, or webhooks break on restart.",
        "generate-with-python-cryptography-Fernet.generate_key",
        parse=fernet_key,
        secret=True,
    ),
    Setting(
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES",
        "URL schemes a webhook may use; http,https lets the server deliver to a receiver on loopback "
        "(the GoCD bridge).",
        "http,https",
        parse=subset("http", "https"),
        default="https",
    ),
    Setting(
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS",
        "Let webhooks reach loopback and private addresses (MLflow's SSRF guard); true for a bridge on "
        "the same host or network.",
        "true",
        parse=boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_WEBHOOK_CACHE_TTL",
        "Seconds each worker caches the list of webhooks; a new or changed webhook fires after at most this.",
        "5",
        parse=integer(1),
        default="60",
    ),
    # --- auth ---
    Setting(
        "MLFLOW_EXT_APP_NAME",
        "Server app plugin: mlflow-ext-auth (MLflow's auth plus tokens, lockout, create rights, protected "
        "aliases; docs/auth.md), basic-auth (MLflow's auth app) or none (no auth; local development only).",
        "mlflow-ext-auth",
        parse=choice("mlflow-ext-auth", "basic-auth", "none"),
        default="mlflow-ext-auth",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_DEFAULT_PERMISSION",
        "Permission a user has on resources nobody granted them.",
        "NO_PERMISSIONS",
        parse=choice("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE"),
        default="NO_PERMISSIONS",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_CACHE_TTL_SECONDS",
        "Seconds a verified password or token stays cached per worker (0 = verify on every request). "
        "With mlflow-ext-auth, revocations and password changes empty every worker's cache at once.",
        "30",
        parse=integer(0),
        default="30",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_CACHE_MAX_ENTRIES",
        "Most credentials one worker keeps verified in memory (mlflow-ext-auth).",
        "10000",
        parse=integer(1),
        default="10000",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_REVOCATION_CHECK_SECONDS",
        "How often a worker reads the revocation counter from the auth database (0 = on every request, "
        "so a revoked token or changed password is refused at once on every worker and replica).",
        "0",
        parse=integer(0),
        default="0",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_OPEN_CREATE",
        "What every user may create without a grant: experiments, registered_models, or none "
        "(deny by default; grant create rights with mlflow-ext grant).",
        "none",
        parse=subset("experiments", "registered_models"),
        default="none",
    ),
    Setting(
        "MLFLOW_EXT_PROTECTED_ALIASES",
        "Registered-model aliases only holders of the promote right may set, move or delete (or none).",
        "production,staging",
        parse=alias_names,
        default="production",
    ),
    Setting(
        "MLFLOW_EXT_PROMOTION_POLICY",
        "Promotion policy file (YAML, docs/promotion.md): gates a version must pass before a protected alias "
        "moves to it, even through the REST API. Unset: only the promote right is checked.",
        "/etc/mlflow/promotion-policy.yaml",
        parse=optional_absolute_path,
    ),
    Setting(
        "MLFLOW_EXT_AUTH_LOCKOUT_USER_FAILURES",
        "Failed logins for one username, within the window, that lock it out.",
        "5",
        parse=integer(1),
        default="5",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_LOCKOUT_ADDRESS_FAILURES",
        "Failed logins from one client address, within the window, that lock it out.",
        "50",
        parse=integer(1),
        default="50",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_LOCKOUT_WINDOW_SECONDS",
        "Window in which failed logins are counted.",
        "900",
        parse=integer(1),
        default="900",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_LOCKOUT_SECONDS",
        "How long a locked-out username or address is refused (HTTP 429 with Retry-After).",
        "900",
        parse=integer(1),
        default="900",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_SLOWDOWN_AFTER",
        "Failed logins after which each further failure is answered with a growing delay (up to 2 s).",
        "3",
        parse=integer(1),
        default="3",
    ),
    Setting(
        "MLFLOW_EXT_AUTH_TRUSTED_PROXIES",
        "Peer addresses whose X-Forwarded-For names the client (the local TLS proxy), or none.",
        "127.0.0.1,::1",
        parse=address_list,
        default="127.0.0.1,::1",
    ),
    Setting(
        "MLFLOW_EXT_AUDIT_LOG",
        "Where the auth audit log (JSON lines) goes: stderr (the journal) or an absolute file path.",
        "/var/log/mlflow/audit.jsonl",
        parse=audit_destination,
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
        "Admin password, used on first start only (at least 12 characters); with auth, this or "
        "MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE is required. The entrypoint creates the admin, then removes it "
        "from the server's environment.",
        "change-me-at-least-12",
        parse=password,
        secret=True,
    ),
    Setting(
        "MLFLOW_EXT_AUTH_ADMIN_PASSWORD_FILE",
        "File holding the admin password instead (owned by the service user, mode 0600 or 0400), read once "
        "by the entrypoint to create the admin; preferred: the password never enters an environment.",
        "/etc/mlflow/admin_password",
        parse=optional_absolute_path,
    ),
    Setting(
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "Signs sessions and CSRF tokens; identical on every worker and host.",
        "change-me-random-alphanumeric",
        parse=password,
        secret=True,
        required_with_auth=True,
    ),
    # --- single sign-on (OpenID Connect, mlflow-ext-auth; docs/auth.md) ---
    Setting(
        "MLFLOW_EXT_OIDC_ISSUER",
        "OpenID Provider issuer URL (its /.well-known/openid-configuration is read). Unset: no single "
        "sign-on.",
        "https://sso.example.com/realms/ml",
        parse=issuer_url,
    ),
    Setting(
        "MLFLOW_EXT_OIDC_CLIENT_ID",
        "Client id of the server at the provider (the ID token's audience); required with an issuer.",
        "mlflow",
    ),
    Setting(
        "MLFLOW_EXT_OIDC_CLIENT_SECRET_FILE",
        "File holding the client secret (owned by the service user, mode 0600 or 0400); unset for a public "
        "client (PKCE only).",
        "/etc/mlflow/oidc_client_secret",
        parse=optional_absolute_path,
    ),
    Setting(
        "MLFLOW_EXT_OIDC_PROVIDER_NAME",
        "Name on the login page's button (Sign in with ...).",
        "Keycloak",
        default="SSO",
    ),
    Setting(
        "MLFLOW_EXT_OIDC_SCOPES",
        "Scopes asked for, comma-separated; openid is always asked for.",
        "openid,profile,email,groups",
        parse=name_list,
        default="openid,profile,email,groups",
    ),
    Setting(
        "MLFLOW_EXT_OIDC_GROUPS_CLAIM",
        "ID-token claim holding the user's groups (a list of names).",
        "groups",
        default="groups",
    ),
    Setting(
        "MLFLOW_EXT_OIDC_USERNAME_CLAIM",
        "ID-token claim that becomes the MLflow username (with the issuer, sub is the stable one).",
        "preferred_username",
        default="preferred_username",
    ),
    Setting(
        "MLFLOW_EXT_OIDC_GROUP_MAPPING",
        "Group mapping file (YAML, docs/auth.md): the admin flag, MLflow permissions and platform rights "
        "each group gives. Unset: signing in gives no rights.",
        "/etc/mlflow/oidc-groups.yaml",
        parse=optional_absolute_path,
    ),
    Setting(
        "MLFLOW_EXT_OIDC_SSO_ONLY",
        "People sign in only through the provider: passwords are refused except for service accounts; "
        "access tokens keep working.",
        "false",
        parse=boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_EXT_OIDC_SESSION_SECONDS",
        "Lifetime of the browser session cookie after a single sign-on.",
        "28800",
        parse=integer(60),
        default="28800",
    ),
    Setting(
        "MLFLOW_EXT_OIDC_REDIRECT_URI",
        "Callback URL registered at the provider. Unset: https://<request host>/auth/oidc/callback as the "
        "proxy forwards it.",
        "https://mlflow.example.com/auth/oidc/callback",
        parse=issuer_url,
    ),
    # --- entrypoint ---
    Setting(
        "MLFLOW_EXT_MIGRATE_ON_START",
        "Upgrade both schemas before starting. Off where a separate migrate step runs (Ansible, compose).",
        "false",
        parse=boolean,
        default="false",
    ),
    Setting(
        "MLFLOW_EXT_RUNTIME_DIR",
        "Private directory for the rendered auth config. Default: systemd's RUNTIME_DIRECTORY or a temp dir.",
        "/run/mlflow-server",
    ),
)
