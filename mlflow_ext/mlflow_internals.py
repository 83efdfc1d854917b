"""MLflow's private functions and module state that mlflow_ext relies on, all behind one module.

mlflow_ext builds on MLflow's server rather than forking it. The server entrypoint migrates the tracking
schema with MLflow's own Alembic helpers; the auth app reads request parameters and stores the way
MLflow's validators do, wraps some of those validators, replaces the run resolver they share and mirrors
the first steps of MLflow's FastAPI permission middleware; the run-context provider finds runs in
MLflow's per-thread state; the artifact repository reuses the S3 repository's client. None of that is
public API: a release may rename, move or re-sign any of it without notice, and the break would only show
when that code path runs.

So every such use goes through a small function here, and ``INTERNALS`` lists each internal with the
parameters its wrapper passes (wrappers call through ``_call``, which holds them to the table).
``tests/contract/test_mlflow_internals.py`` checks the table against the installed MLflow (pinned in
requirements/server.lock) and names every internal that moved or changed: after an MLflow upgrade, this
module is the one place to adapt. Other modules never reach into MLflow's privates themselves.

Two MLflow minors are supported: the pinned one and the previous one (requirements/server-3.16.lock),
so that an upgrade starts from a platform that runs. An internal that only one of them has carries the
range of minors it exists in (``since`` / ``until``); its wrapper asks ``applies`` and takes the other
minor's way to the same result, commented where it does. The contract test checks every internal that
applies to the installed MLflow, so a name missing on a version that should have it still fails loudly.

MLflow is imported inside the functions, so importing this module costs nothing; MLflow's server modules
(which build their Flask app when imported) are only touched by wrappers the server itself calls.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from mlflow_ext.errors import MlflowInternalMissing


@dataclass(frozen=True)
class Internal:
    """One MLflow internal: where it lives and what mlflow_ext expects of it."""

    module: str
    name: str  # attribute path inside the module: "_upgrade_db", "S3ArtifactRepository._get_s3_client"
    used_by: str  # the mlflow_ext module that relies on it
    # A callable's leading parameters, exactly as the wrapper passes them (methods include "self");
    # any further parameter must have a default. None: mlflow_ext does not call it.
    params: tuple[str, ...] | None = None
    attributes: tuple[str, ...] = ()  # attributes the object must have
    kind: type | None = None  # the type a value must have
    # mlflow_ext assigns the module attribute: MLflow's own callers must look it up there at call time.
    replaced: bool = False
    # Recognised on the call stack by its code name and module (a frame check, never called).
    frame: bool = False
    # An instance attribute: set by the class's constructor, checked on ``Class(*instance_args)``.
    instance_args: tuple[str, ...] | None = None
    # A hook MLflow calls and mlflow_ext overrides ("module:Class"): its parameters must match MLflow's.
    overridden_by: str | None = None
    # The value mlflow_ext relies on without importing it (a table or column name used in plain SQL).
    value: object = None
    # The MLflow minors ("3.17") that have it, both ends included; None: every supported minor.
    since: str | None = None
    until: str | None = None

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def versions(self) -> str:
        """The minors it exists in, for messages: "3.17 and later", "up to 3.16", "every version"."""
        if self.since and self.until:
            return f"{self.since} to {self.until}"
        if self.since:
            return f"{self.since} and later"
        return f"up to {self.until}" if self.until else "every version"


_DB_UTILS = "mlflow.store.db.utils"
_HANDLERS = "mlflow.server.handlers"
_AUTH = "mlflow.server.auth"
_FLUENT = "mlflow.tracking.fluent"
_S3_REPO = "mlflow.store.artifact.s3_artifact_repo"
_ARTIFACT_REPO = "mlflow.store.artifact.artifact_repo"

# --- the tracking schema (mlflow_ext.server: `mlflow-ext server migrate`) ---
LATEST_SCHEMA_REVISION = Internal(_DB_UTILS, "_get_latest_schema_revision", "mlflow_ext.server", params=())
IS_EMPTY_DATABASE = Internal(_DB_UTILS, "_is_empty_database", "mlflow_ext.server", params=("engine",))
INITIALIZE_TABLES = Internal(_DB_UTILS, "_initialize_tables", "mlflow_ext.server", params=("engine",))
UPGRADE_DB = Internal(_DB_UTILS, "_upgrade_db", "mlflow_ext.server", params=("engine",))

# The auth database's users table, read in plain SQL by the server's start: importing MLflow's auth models
# to ask whether the admin exists would load all of MLflow, about 2 s of every (re)start.
AUTH_USERS_TABLE = Internal(
    "mlflow.server.auth.db.models", "SqlUser.__tablename__", "mlflow_ext.server", kind=str, value="users"
)
AUTH_USERNAME_COLUMN = Internal(
    "mlflow.server.auth.db.models", "SqlUser.username.key", "mlflow_ext.server", kind=str, value="username"
)

# --- the server's stores ---
MODEL_REGISTRY_STORE = Internal(_HANDLERS, "_get_model_registry_store", "mlflow_ext.auth", params=())
TRACKING_STORE = Internal(_HANDLERS, "_get_tracking_store", "mlflow_ext.auth", params=())
# The decorator of MLflow's tracking views that answers 503 on an artifacts-only server; the log-batch fast
# view wears it as MLflow's own view does.
DISABLE_IF_ARTIFACTS_ONLY = Internal(
    _HANDLERS, "_disable_if_artifacts_only", "mlflow_ext.auth.log_batch", params=("func",)
)
# Who registered a version: MLflow's model_versions.user_id, which no MLflow API sets (the server leaves it
# empty); the auth app writes it through the registry store's session and MLflow's row class.
_REGISTRY_SQL_STORE = "mlflow.store.model_registry.sqlalchemy_store"
REGISTRY_SESSION = Internal(
    _REGISTRY_SQL_STORE,
    "SqlAlchemyStore.ManagedSessionMaker",
    "mlflow_ext.auth.registrant",
    instance_args=("sqlite:///:memory:",),
)
MODEL_VERSION_ROW = Internal(
    "mlflow.store.model_registry.dbmodels.models",
    "SqlModelVersion",
    "mlflow_ext.auth.registrant",
    attributes=("name", "version", "user_id"),
)

# --- the basic-auth app (mlflow_ext.auth) ---
AUTH_STORE = Internal(_AUTH, "store", "mlflow_ext.auth.app", attributes=("init_db", "authenticate_user"))
AUTH_CONFIG = Internal(_AUTH, "auth_config", "mlflow_ext.auth.app", attributes=("authorization_function",))
DISABLED_LEGACY_ADMIN_LOGIN = Internal(
    _AUTH, "_is_disabled_legacy_admin_login", "mlflow_ext.auth.authn", params=("username", "password")
)
GET_REQUEST_PARAM = Internal(_AUTH, "_get_request_param", "mlflow_ext.auth.policy", params=("param",))
IS_UNPROTECTED_ROUTE = Internal(_AUTH, "is_unprotected_route", "mlflow_ext.auth", params=("path",))
BEFORE_REQUEST_VALIDATORS = Internal(_AUTH, "BEFORE_REQUEST_VALIDATORS", "mlflow_ext.auth", kind=dict)
# How the run-scoped validators find a run's experiment, which mlflow_ext.auth.memo remembers. Since 3.17:
# _run_requirement(run_id, action) -> (anchor, [Requirement, ...]), which authorize() resolves.
# What /api/3.0/mlflow/server-info answers, looked up at call time by its FastAPI route (the server runs
# uvicorn); mlflow_ext.artifact_access takes capabilities out of it.
SERVER_INFO_PAYLOAD = Internal(
    "mlflow.server.server_info_api",
    "build_server_info_payload",
    "mlflow_ext.artifact_access",
    params=(),
    replaced=True,
    since="3.17",
)
RUN_REQUIREMENT = Internal(
    _AUTH,
    "_run_requirement",
    "mlflow_ext.auth.memo",
    params=("run_id", "action"),
    replaced=True,
    since="3.17",
)
REQUIREMENT = Internal(
    _AUTH,
    "Requirement",
    "mlflow_ext.auth.memo",
    params=("resource_type", "resource_id", "action", "fallback_if_no_grant"),
    since="3.17",
)
RESOURCE_TYPE_EXPERIMENT = Internal(_AUTH, "RESOURCE_TYPE_EXPERIMENT", "mlflow_ext.auth.memo", kind=str)
RESOURCE_TYPE_RUN = Internal(_AUTH, "RESOURCE_TYPE_RUN", "mlflow_ext.auth.memo", kind=str, since="3.17")
# Up to 3.16: validate_can_{read,update,delete,manage}_run each call _get_permission_from_run_id(), which
# reads the request's run_id, reads the run for its experiment and returns the user's Permission on that
# experiment: _get_role_permission_or_default(_role_permission_for(username, "experiment", ...)).
RUN_PERMISSION = Internal(
    _AUTH, "_get_permission_from_run_id", "mlflow_ext.auth.memo", params=(), replaced=True, until="3.16"
)
ROLE_PERMISSION_FOR = Internal(
    _AUTH,
    "_role_permission_for",
    "mlflow_ext.auth.memo",
    params=(
        "username",
        "resource_type",
        "resource_key",
        "workspace_lookup_id",
        "workspace_fetcher",
        "workspace_label",
    ),
    until="3.16",
)
ROLE_PERMISSION_OR_DEFAULT = Internal(
    _AUTH,
    "_get_role_permission_or_default",
    "mlflow_ext.auth.memo",
    params=("role_permission_func",),
    until="3.16",
)
AUTHENTICATE_REQUEST = Internal(
    _AUTH, "authenticate_request", "mlflow_ext.auth.memo", params=(), until="3.16"
)
FIND_FASTAPI_VALIDATOR = Internal(
    _AUTH, "_find_fastapi_validator", "mlflow_ext.auth.asgi", params=("path", "method")
)
SCOPE_MATCHES_NATIVE_ROUTE = Internal(
    _AUTH, "_scope_matches_native_route", "mlflow_ext.auth.asgi", params=("native_routes", "scope")
)
NATIVE_FASTAPI_ROUTES = Internal(_AUTH, "_native_fastapi_routes", "mlflow_ext.auth.asgi", params=("app",))
KNOWN_UNGATED_FASTAPI_ROUTE_MARKERS = Internal(
    _AUTH, "_KNOWN_UNGATED_FASTAPI_ROUTE_MARKERS", "mlflow_ext.auth.asgi", kind=tuple
)
# Which requests MLflow's permission middleware hands to its native artifact routes, and whether it reads
# their body for an after-request handler (``auth.asgi`` streams uploads past ``BaseHTTPMiddleware``).
NATIVE_ARTIFACT_PATH = Internal(
    _AUTH, "_is_native_fastapi_proxy_artifact_path", "mlflow_ext.auth.asgi", params=("path", "method")
)
FIND_FASTAPI_AFTER_REQUEST_HANDLER = Internal(
    _AUTH, "_find_fastapi_after_request_handler", "mlflow_ext.auth.asgi", params=("path", "method")
)
BASIC_AUTH_FAIL_CLOSED = Internal(
    "mlflow.environment_variables",
    "MLFLOW_BASIC_AUTH_FAIL_CLOSED",
    "mlflow_ext.auth.asgi",
    attributes=("get",),
)
# What the two ``BaseHTTPMiddleware`` dispatchers of MLflow's FastAPI app (``workspace_context_middleware``
# and ``gateway_timing_middleware`` in mlflow.server.fastapi_app) do before they call the next app.
_WORKSPACE_HELPERS = "mlflow.server.workspace_helpers"
_WORKSPACE_CONTEXT = "mlflow.utils.workspace_context"
RESOLVE_REQUEST_WORKSPACE = Internal(
    _WORKSPACE_HELPERS,
    "resolve_workspace_for_request_if_enabled",
    "mlflow_ext.auth.asgi",
    params=("path", "header_value"),
)
WORKSPACE_HEADER = Internal(_WORKSPACE_HELPERS, "WORKSPACE_HEADER_NAME", "mlflow_ext.auth.asgi", kind=str)
SET_REQUEST_WORKSPACE = Internal(
    _WORKSPACE_CONTEXT, "set_server_request_workspace", "mlflow_ext.auth.asgi", params=("workspace",)
)
CLEAR_REQUEST_WORKSPACE = Internal(
    _WORKSPACE_CONTEXT, "clear_server_request_workspace", "mlflow_ext.auth.asgi", params=()
)
ADD_STATIC_PREFIX = Internal(_HANDLERS, "_add_static_prefix", "mlflow_ext.auth.asgi", params=("route",))
# The validators mlflow_ext.auth.policy wraps, found by identity in BEFORE_REQUEST_VALIDATORS. The
# alias, version-delete and model-delete routes got validators of their own in 3.17; up to 3.16 they share
# the registry's generic update/delete validators with other routes, so policy finds them by path there.
AUTH_VALIDATORS = (
    *(
        Internal(_AUTH, name, "mlflow_ext.auth.policy", params=())
        for name in (
            "validate_can_create_experiment",
            "validate_can_create_registered_model",
            "validate_can_list_users",
        )
    ),
    *(
        Internal(_AUTH, name, "mlflow_ext.auth.policy", params=(), since="3.17")
        for name in (
            "validate_can_set_model_or_prompt_version_alias",
            "validate_can_delete_model_or_prompt_version_alias",
            "validate_can_delete_model_or_prompt_version",
            "validate_can_delete_registered_model_or_prompt_cascade",
        )
    ),
)

# The functions with which MLflow reads a request's parameters: an exception raised in one of them
# means a malformed request (mlflow_ext.auth.guard answers it 400), recognised on the traceback.
REQUEST_READING_FRAMES = (
    *(
        Internal(_HANDLERS, name, "mlflow_ext.auth.guard", frame=True)
        for name in (
            "_get_request_json",
            "_get_normalized_request_json",
            "_get_request_message",
            "_validate_request_json_with_schema",
        )
    ),
    Internal(_AUTH, "_get_request_param", "mlflow_ext.auth.guard", frame=True),
)
# MLflow's auth hook, which runs the validators: a TypeError or the like raised below it comes from a
# parameter of a shape the validators did not expect (mlflow_ext.auth.guard answers it 400).
REQUEST_VALIDATION_FRAME = Internal(_AUTH, "_before_request", "mlflow_ext.auth.guard", frame=True)

# --- the registry ---
IS_PROMPT = Internal(
    "mlflow.entities.model_registry",
    "RegisteredModel._is_prompt",
    "mlflow_ext.auth.promotion_gates",
    params=("self",),
)

# --- the client: runs of this process (mlflow_ext.run_context) ---
ACTIVE_RUN_STACK = Internal(
    _FLUENT, "_active_run_stack", "mlflow_ext.run_context", attributes=("get_all_thread_values",)
)
LAST_ACTIVE_RUN_ID = Internal(
    _FLUENT, "_last_active_run_id", "mlflow_ext.run_context", attributes=("get_all_thread_values",)
)
START_RUN = Internal(_FLUENT, "start_run", "mlflow_ext.run_context", frame=True)
NOTEBOOK_PATH_FROM_SESSIONS = Internal(
    "mlflow.tracking.context.jupyter_notebook_context",
    "_get_notebook_path_from_sessions",
    "mlflow_ext.run_context",
    params=(),
)

# --- the S3 artifact repository (mlflow_ext.artifacts) ---
S3_CLIENT = Internal(
    _S3_REPO, "S3ArtifactRepository._get_s3_client", "mlflow_ext.artifacts", params=("self",)
)
S3_BUCKET_OWNER_PARAMS = Internal(
    _S3_REPO,
    "S3ArtifactRepository._bucket_owner_params",
    "mlflow_ext.artifacts",
    kind=dict,
    instance_args=("s3://bucket/prefix",),
)
STREAM_UPLOAD = Internal(
    _ARTIFACT_REPO,
    "StreamUploadMixin.log_artifact_from_stream",
    "mlflow_ext.artifacts",
    params=("self", "stream", "artifact_file_name", "artifact_path"),
    overridden_by="mlflow_ext.artifacts:StreamingS3ArtifactRepository",
)
ASYNC_STREAM_UPLOAD = Internal(
    _ARTIFACT_REPO,
    "StreamUploadMixin.log_artifact_from_async_stream",
    "mlflow_ext.artifacts",
    params=("self", "chunks", "artifact_file_name", "artifact_path"),
    overridden_by="mlflow_ext.artifacts:StreamingS3ArtifactRepository",
)
# Overridden so that a missing object is RESOURCE_DOES_NOT_EXIST (a 404), not an internal error.
DOWNLOAD_FILE = Internal(
    _S3_REPO,
    "S3ArtifactRepository._download_file",
    "mlflow_ext.artifacts",
    params=("self", "remote_file_path", "local_path"),
    overridden_by="mlflow_ext.artifacts:StreamingS3ArtifactRepository",
)

# --- the PostgreSQL tracking store (mlflow_ext.tracking_store) ---
_VALIDATION = "mlflow.utils.validation"
_TRACKING_STORE = "mlflow_ext.tracking_store"
_SQL_STORE = "mlflow.store.tracking.sqlalchemy_store"
_TRACKING_MODELS = "mlflow.store.tracking.dbmodels.models"
# MLflow's own validators, so a bad value gets MLflow's exact error (code and message).
VALIDATE_RUN_ID = Internal(_VALIDATION, "_validate_run_id", _TRACKING_STORE, params=("run_id",))
VALIDATE_METRIC = Internal(
    _VALIDATION, "_validate_metric", _TRACKING_STORE, params=("key", "value", "timestamp", "step", "path")
)
VALIDATE_PARAM = Internal(_VALIDATION, "_validate_param", _TRACKING_STORE, params=("key", "value", "path"))
VALIDATE_TAG = Internal(_VALIDATION, "_validate_tag", _TRACKING_STORE, params=("key", "value", "path"))
VALIDATE_BATCH_LOG_DATA = Internal(
    _VALIDATION, "_validate_batch_log_data", _TRACKING_STORE, params=("metrics", "params", "tags")
)
VALIDATE_BATCH_LOG_LIMITS = Internal(
    _VALIDATION, "_validate_batch_log_limits", _TRACKING_STORE, params=("metrics", "params", "tags")
)
VALIDATE_PARAM_KEYS_UNIQUE = Internal(
    _VALIDATION, "_validate_param_keys_unique", _TRACKING_STORE, params=("params",)
)
# The hot paths the store replaces: their signatures must stay MLflow's.
STORE_HOT_PATHS = tuple(
    Internal(
        _SQL_STORE,
        f"SqlAlchemyStore.{name}",
        _TRACKING_STORE,
        params=params,
        overridden_by="mlflow_ext.tracking_store:PostgresTrackingStore",
    )
    for name, params in (
        ("log_batch", ("self", "run_id", "metrics", "params", "tags")),
        ("log_metric", ("self", "run_id", "metric")),
        ("log_param", ("self", "run_id", "param")),
        ("set_tag", ("self", "run_id", "tag")),
        ("get_run", ("self", "run_id")),
        (
            "_search_runs",
            (
                "self",
                "experiment_ids",
                "filter_string",
                "run_view_type",
                "max_results",
                "order_by",
                "page_token",
            ),
        ),
    )
)
# What the read paths (get_run, _search_runs) reuse of MLflow's own search, so its filters, order, checks
# and page tokens stay MLflow's.
SEARCH_RUNS_ORDER_BY = Internal(
    _SQL_STORE, "_get_orderby_clauses", _TRACKING_STORE, params=("order_by_list", "session")
)
SEARCH_RUNS_FILTERS = Internal(
    _SQL_STORE, "_get_sqlalchemy_filter_clauses", _TRACKING_STORE, params=("parsed", "session", "dialect")
)
PARSE_EXPERIMENT_IDS = Internal(
    _VALIDATION, "_parse_experiment_ids", _TRACKING_STORE, params=("experiment_ids",)
)
RUN_MODEL = Internal(
    _TRACKING_MODELS,
    "SqlRun",
    _TRACKING_STORE,
    attributes=(
        "run_uuid",
        "name",
        "experiment_id",
        "user_id",
        "status",
        "start_time",
        "end_time",
        "lifecycle_stage",
        "artifact_uri",
    ),
)
STORE_READ_HELPERS = tuple(
    Internal(_SQL_STORE, f"SqlAlchemyStore.{name}", _TRACKING_STORE, params=params)
    for name, params in (
        ("_get_run_inputs", ("self", "session", "run_uuids")),
        ("_get_model_outputs_bulk", ("self", "run_ids", "session")),
        ("_validate_max_results_param", ("self", "max_results", "allow_null")),
        ("_filter_experiment_ids", ("self", "session", "experiment_ids")),
    )
)
RUN_DATASET_INPUTS, RUN_MODEL_OUTPUTS, VALIDATE_MAX_RESULTS, FILTER_EXPERIMENT_IDS = STORE_READ_HELPERS
# The tables and columns the fast path writes in plain SQL.
TRACKING_TABLES = tuple(
    Internal(_TRACKING_MODELS, f"{model}.__tablename__", _TRACKING_STORE, kind=str, value=table)
    for model, table in (
        ("SqlRun", "runs"),
        ("SqlMetric", "metrics"),
        ("SqlLatestMetric", "latest_metrics"),
        ("SqlParam", "params"),
        ("SqlTag", "tags"),
    )
)
TRACKING_COLUMNS = tuple(
    Internal(_TRACKING_MODELS, f"{model}.{column}.key", _TRACKING_STORE, kind=str, value=column)
    for model, columns in (
        ("SqlRun", ("run_uuid", "lifecycle_stage")),
        ("SqlMetric", ("key", "value", "timestamp", "step", "is_nan", "run_uuid")),
        ("SqlLatestMetric", ("key", "value", "timestamp", "step", "is_nan", "run_uuid")),
        ("SqlParam", ("key", "value", "run_uuid")),
        ("SqlTag", ("key", "value", "run_uuid")),
    )
    for column in columns
)
# --- the PostgreSQL registry store (mlflow_ext.registry_store) ---
_REGISTRY_STORE = "mlflow_ext.registry_store"
VALIDATE_MODEL_NAME = Internal(_VALIDATION, "_validate_model_name", _REGISTRY_STORE, params=("model_name",))
VALIDATE_MODEL_ALIAS_NAME = Internal(
    _VALIDATION, "_validate_model_alias_name", _REGISTRY_STORE, params=("model_alias_name",)
)
REGISTRY_ACTIVE_WORKSPACE = Internal(
    _REGISTRY_SQL_STORE, "SqlAlchemyStore._get_active_workspace", _REGISTRY_STORE, params=("self",)
)
REGISTRY_HOT_PATHS = tuple(
    Internal(
        _REGISTRY_SQL_STORE,
        f"SqlAlchemyStore.{name}",
        _REGISTRY_STORE,
        params=params,
        overridden_by="mlflow_ext.registry_store:PostgresRegistryStore",
    )
    for name, params in (
        ("get_model_version_by_alias", ("self", "name", "alias")),
        ("search_registered_models", ("self", "filter_string", "max_results", "order_by", "page_token")),
    )
)
# MLflow's own ORDER BY and filter query of search_registered_models, reused as they are.
REGISTERED_MODELS_ORDER_BY = Internal(
    _REGISTRY_SQL_STORE,
    "SqlAlchemyStore._parse_search_registered_models_order_by",
    _REGISTRY_STORE,
    params=("order_by_list",),  # a classmethod
)
REGISTERED_MODELS_FILTER_QUERY = Internal(
    _REGISTRY_SQL_STORE,
    "SqlAlchemyStore._get_search_registered_model_filter_query",
    _REGISTRY_STORE,
    params=("self", "session", "parsed_filters", "dialect"),
)
REGISTERED_MODEL_MODEL = Internal(
    "mlflow.store.model_registry.dbmodels.models",
    "SqlRegisteredModel",
    _REGISTRY_STORE,
    attributes=("name", "creation_time", "last_updated_time", "description", "workspace"),
)
# The tables and columns the registry's fast path reads in plain SQL.
_REGISTRY_MODELS = "mlflow.store.model_registry.dbmodels.models"
REGISTRY_TABLES = tuple(
    Internal(_REGISTRY_MODELS, f"{model}.__tablename__", _REGISTRY_STORE, kind=str, value=table)
    for model, table in (
        ("SqlRegisteredModel", "registered_models"),
        ("SqlModelVersion", "model_versions"),
        ("SqlModelVersionTag", "model_version_tags"),
        ("SqlRegisteredModelTag", "registered_model_tags"),
        ("SqlRegisteredModelAlias", "registered_model_aliases"),
    )
)
REGISTRY_COLUMNS = tuple(
    Internal(_REGISTRY_MODELS, f"{model}.{column}.key", _REGISTRY_STORE, kind=str, value=column)
    for model, columns in (
        ("SqlRegisteredModel", ("workspace", "name")),
        (
            "SqlModelVersion",
            (
                "workspace",
                "name",
                "version",
                "creation_time",
                "last_updated_time",
                "description",
                "user_id",
                "current_stage",
                "source",
                "run_id",
                "status",
                "status_message",
                "run_link",
            ),
        ),
        ("SqlModelVersionTag", ("workspace", "name", "version", "key", "value")),
        ("SqlRegisteredModelTag", ("workspace", "name", "key", "value")),
        ("SqlRegisteredModelAlias", ("workspace", "name", "alias", "version")),
    )
    for column in columns
)

# Where MLflow's server keeps its default artifact root and read replica for the stores it builds.
SERVER_ARTIFACT_ROOT_ENV_VAR = Internal(
    "mlflow.tracking._tracking_service.utils",
    "_SERVER_ARTIFACT_ROOT_ENV_VAR",
    _TRACKING_STORE,
    kind=str,
    value="_MLFLOW_SERVER_ARTIFACT_ROOT",
)
READ_REPLICA_ENV_VAR = Internal(
    "mlflow.server.constants",
    "READ_REPLICA_BACKEND_STORE_URI_ENV_VAR",
    _TRACKING_STORE,
    kind=str,
    value="_MLFLOW_SERVER_READ_REPLICA_BACKEND_STORE",
)

# --- the client's REST store (mlflow_ext.rest_store) ---
_REST_STORE = "mlflow.store.tracking.rest_store"
_CLIENT_REST_STORE = "mlflow_ext.rest_store"
# How MLflow's client sends a request body it has built (``log_batch`` hands its body to it as MLflow's does).
REST_CALL_ENDPOINT = Internal(
    _REST_STORE, "RestStore._call_endpoint", _CLIENT_REST_STORE, params=("self", "api", "json_body")
)
# The two methods the client's store replaces: their signatures must stay MLflow's.
REST_LOG_METRIC = Internal(
    _REST_STORE,
    "RestStore.log_metric",
    _CLIENT_REST_STORE,
    params=("self", "run_id", "metric"),
    overridden_by="mlflow_ext.rest_store:FastRestStore",
)
REST_LOG_BATCH = Internal(
    _REST_STORE,
    "RestStore.log_batch",
    _CLIENT_REST_STORE,
    params=("self", "run_id", "metrics", "params", "tags"),
    overridden_by="mlflow_ext.rest_store:FastRestStore",
)
# What the client store's kept-alive post (mlflow_ext.rest_post) leaves to MLflow's ``http_request``: a
# request with a workspace or a Databricks traffic id, or request-header providers beyond MLflow's own;
# the statuses MLflow retries; and the exception MLflow raises for an answer it does not retry.
_REST_POST = "mlflow_ext.rest_post"
REQUEST_WORKSPACE = Internal("mlflow.utils.workspace_context", "get_request_workspace", _REST_POST, params=())
DATABRICKS_TRAFFIC_ID = Internal(
    "mlflow.environment_variables", "_MLFLOW_DATABRICKS_TRAFFIC_ID", _REST_POST, attributes=("get",)
)
REQUEST_HEADER_PROVIDERS = Internal(
    "mlflow.tracking.request_header.registry", "_request_header_provider_registry", _REST_POST
)
RETRIED_HTTP_STATUSES = Internal(
    "mlflow.utils.request_utils", "_TRANSIENT_FAILURE_RESPONSE_CODES", _REST_POST, kind=frozenset
)
VERIFY_REST_RESPONSE = Internal(
    "mlflow.utils.rest_utils", "verify_rest_response", _REST_POST, params=("response", "endpoint")
)
# MLflow's builder for http and https tracking URIs, which the store's builder replaces and, turned off,
# calls; the store is built as it builds RestStore (``get_default_host_creds`` bound to the URI).
GET_REST_STORE = Internal(
    "mlflow.tracking._tracking_service.utils", "_get_rest_store", _CLIENT_REST_STORE, params=("store_uri",)
)

INTERNALS: tuple[Internal, ...] = (
    LATEST_SCHEMA_REVISION,
    IS_EMPTY_DATABASE,
    INITIALIZE_TABLES,
    UPGRADE_DB,
    AUTH_USERS_TABLE,
    AUTH_USERNAME_COLUMN,
    MODEL_REGISTRY_STORE,
    TRACKING_STORE,
    DISABLE_IF_ARTIFACTS_ONLY,
    REGISTRY_SESSION,
    MODEL_VERSION_ROW,
    AUTH_STORE,
    AUTH_CONFIG,
    DISABLED_LEGACY_ADMIN_LOGIN,
    GET_REQUEST_PARAM,
    IS_UNPROTECTED_ROUTE,
    BEFORE_REQUEST_VALIDATORS,
    RUN_REQUIREMENT,
    SERVER_INFO_PAYLOAD,
    REQUIREMENT,
    RESOURCE_TYPE_EXPERIMENT,
    RESOURCE_TYPE_RUN,
    RUN_PERMISSION,
    ROLE_PERMISSION_FOR,
    ROLE_PERMISSION_OR_DEFAULT,
    AUTHENTICATE_REQUEST,
    FIND_FASTAPI_VALIDATOR,
    SCOPE_MATCHES_NATIVE_ROUTE,
    NATIVE_FASTAPI_ROUTES,
    KNOWN_UNGATED_FASTAPI_ROUTE_MARKERS,
    NATIVE_ARTIFACT_PATH,
    FIND_FASTAPI_AFTER_REQUEST_HANDLER,
    BASIC_AUTH_FAIL_CLOSED,
    RESOLVE_REQUEST_WORKSPACE,
    WORKSPACE_HEADER,
    SET_REQUEST_WORKSPACE,
    CLEAR_REQUEST_WORKSPACE,
    ADD_STATIC_PREFIX,
    *AUTH_VALIDATORS,
    *REQUEST_READING_FRAMES,
    REQUEST_VALIDATION_FRAME,
    IS_PROMPT,
    ACTIVE_RUN_STACK,
    LAST_ACTIVE_RUN_ID,
    START_RUN,
    NOTEBOOK_PATH_FROM_SESSIONS,
    S3_CLIENT,
    S3_BUCKET_OWNER_PARAMS,
    STREAM_UPLOAD,
    ASYNC_STREAM_UPLOAD,
    DOWNLOAD_FILE,
    VALIDATE_RUN_ID,
    VALIDATE_METRIC,
    VALIDATE_PARAM,
    VALIDATE_TAG,
    VALIDATE_BATCH_LOG_DATA,
    VALIDATE_BATCH_LOG_LIMITS,
    VALIDATE_PARAM_KEYS_UNIQUE,
    *STORE_HOT_PATHS,
    SEARCH_RUNS_ORDER_BY,
    SEARCH_RUNS_FILTERS,
    PARSE_EXPERIMENT_IDS,
    RUN_MODEL,
    *STORE_READ_HELPERS,
    *TRACKING_TABLES,
    *TRACKING_COLUMNS,
    VALIDATE_MODEL_NAME,
    VALIDATE_MODEL_ALIAS_NAME,
    REGISTRY_ACTIVE_WORKSPACE,
    *REGISTRY_HOT_PATHS,
    REGISTERED_MODELS_ORDER_BY,
    REGISTERED_MODELS_FILTER_QUERY,
    REGISTERED_MODEL_MODEL,
    *REGISTRY_TABLES,
    *REGISTRY_COLUMNS,
    SERVER_ARTIFACT_ROOT_ENV_VAR,
    READ_REPLICA_ENV_VAR,
    REST_CALL_ENDPOINT,
    REST_LOG_METRIC,
    REST_LOG_BATCH,
    GET_REST_STORE,
    REQUEST_WORKSPACE,
    DATABRICKS_TRAFFIC_ID,
    REQUEST_HEADER_PROVIDERS,
    RETRIED_HTTP_STATUSES,
    VERIFY_REST_RESPONSE,
)


# --- resolution ---


def mlflow_version() -> str:
    from mlflow.version import VERSION

    return str(VERSION)


# The MLflow minors this table was checked against: the pin (requirements/server.lock) and the previous
# minor (requirements/server-3.16.lock), from which `make upgrade` is tested.
SUPPORTED_MINORS = ("3.16", "3.17")


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def applies(internal: Internal) -> bool:
    """True when the installed MLflow is a version that has ``internal`` (see ``since`` / ``until``)."""
    installed = _minor(mlflow_version())
    if internal.since is not None and installed < _minor(internal.since):
        return False
    return internal.until is None or installed <= _minor(internal.until)


def missing(internal: Internal, reason: object) -> str:
    """The message for an internal this MLflow lacks or changed: names it, its user and the version."""
    return (
        f"MLflow {mlflow_version()}: {internal.qualname} (used by {internal.used_by}) {reason}; "
        "adapt mlflow_ext/mlflow_internals.py to this MLflow version"
    )


def resolve(internal: Internal) -> Any:
    """The internal itself, looked up now (never cached: a replaced attribute must be read again)."""
    try:
        target: Any = importlib.import_module(internal.module)
        for part in internal.name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise MlflowInternalMissing(missing(internal, f"is missing ({exc})")) from exc
    return target


def _member(internal: Internal, obj: Any) -> Any:
    """The internal's last name read on ``obj``: a bound method or an instance attribute."""
    try:
        return getattr(obj, internal.name.rsplit(".", 1)[-1])
    except AttributeError as exc:
        raise MlflowInternalMissing(missing(internal, f"is missing ({exc})")) from exc


def _check_call(
    internal: Internal, params: tuple[str, ...], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    if len(args) > len(params) or any(key not in params[len(args) :] for key in kwargs):
        raise TypeError(f"{internal.qualname} is listed in INTERNALS with the parameters {params}")


def _call(internal: Internal, *args: Any, **kwargs: Any) -> Any:
    """Call a module-level internal with arguments the table lists."""
    _check_call(internal, internal.params or (), args, kwargs)
    return resolve(internal)(*args, **kwargs)


def _call_method(internal: Internal, obj: Any, *args: Any) -> Any:
    """Call an internal method on ``obj`` (its table parameters start with ``self``)."""
    _check_call(internal, (internal.params or ())[1:], args, {})
    return _member(internal, obj)(*args)


# --- the tracking schema ---


def latest_tracking_revision() -> str:
    """The Alembic head of this MLflow's tracking schema."""
    return str(_call(LATEST_SCHEMA_REVISION))


def is_empty_database(engine: Any) -> bool:
    """True when the tracking database has no tables yet."""
    return bool(_call(IS_EMPTY_DATABASE, engine))


def initialize_tracking_tables(engine: Any) -> None:
    """Create the tracking schema at head on an empty database."""
    _call(INITIALIZE_TABLES, engine)


def upgrade_tracking_schema(engine: Any) -> None:
    """Run the tracking schema's Alembic migrations up to head."""
    _call(UPGRADE_DB, engine)


# --- the server's stores ---


def registry_store() -> Any:
    """The model registry store of this server process (as MLflow's handlers use it)."""
    return _call(MODEL_REGISTRY_STORE)


def tracking_store() -> Any:
    """The tracking store of this server process (as MLflow's handlers use it)."""
    return _call(TRACKING_STORE)


def disable_if_artifacts_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """``view`` as MLflow wraps its tracking views: refused on a server started with --artifacts-only."""
    return _call(DISABLE_IF_ARTIFACTS_ONLY, view)


def set_model_version_user(name: str, version: str, user: str) -> bool:
    """Fill ``user_id`` of a version in this server's registry when it is empty; False when nothing was
    written (a registry that is not MLflow's SQL store, a version gone or with a user already)."""
    store = registry_store()
    sessions = getattr(store, _member_name(REGISTRY_SESSION), None)
    if sessions is None:  # not the SQL store: nowhere to record it
        return False
    row = resolve(MODEL_VERSION_ROW)
    with sessions() as session:
        updated = (
            session.query(row)
            .filter(row.name == name, row.version == int(version), row.user_id.is_(None))
            .update({row.user_id: user}, synchronize_session=False)
        )
    return bool(updated)


def _member_name(internal: Internal) -> str:
    return internal.name.rsplit(".", 1)[-1]


# --- the basic-auth app ---


def auth_store() -> Any:
    """MLflow's auth store instance (users, grants, roles), shared by its validators and REST handlers."""
    return resolve(AUTH_STORE)


def auth_config() -> Any:
    """The auth INI as MLflow read it when ``mlflow.server.auth`` was imported."""
    return resolve(AUTH_CONFIG)


def is_disabled_legacy_admin_login(username: str, password: str) -> bool:
    """True for the old default admin password, which MLflow refuses even when it still matches."""
    return bool(_call(DISABLED_LEGACY_ADMIN_LOGIN, username, password))


def request_param(name: str) -> str:
    """A parameter of the current Flask request, read as MLflow's validators read it (raises when absent)."""
    return str(_call(GET_REQUEST_PARAM, name))


def is_unprotected_route(path: str) -> bool:
    """True for the routes MLflow's auth serves without login (static files, health, version)."""
    return bool(_call(IS_UNPROTECTED_ROUTE, path))


def route_validators() -> dict[tuple[str, str], Callable[[], bool]]:
    """A copy of MLflow's table (path, method) -> validator of the Flask routes."""
    return dict(resolve(BEFORE_REQUEST_VALIDATORS))


def set_route_validator(path: str, method: str, validator: Callable[[], bool]) -> None:
    """Make ``validator`` the authorization decision of a Flask route (admins skip it, as for MLflow's)."""
    resolve(BEFORE_REQUEST_VALIDATORS)[(path, method)] = validator


def auth_validator(name: str) -> Callable[[], bool] | None:
    """One of MLflow's validators listed in ``AUTH_VALIDATORS``, by name; None on a version without it."""
    for internal in AUTH_VALIDATORS:
        if internal.name == name:
            if not applies(internal):
                return None
            validator: Callable[[], bool] = resolve(internal)
            return validator
    raise KeyError(f"{name} is not listed in AUTH_VALIDATORS")


def remember_run_experiments(
    lookup: Callable[[str], str | None], remember: Callable[[str, str], None]
) -> None:
    """Make MLflow's run-scoped validators take a run's experiment from ``lookup`` before reading the run,
    and hand every experiment they read to ``remember``; their decision is MLflow's own either way.

    MLflow looks its resolver up in its module on every call, so replacing the module attribute reaches
    every run-scoped validator. Replacing twice (an app created twice in one process) wraps MLflow's own.
    """
    if applies(RUN_REQUIREMENT):
        _remember_through_run_requirement(lookup, remember)
    else:
        _remember_through_run_permission(lookup, remember)


def withhold_server_capabilities(names: tuple[str, ...]) -> None:
    """Make MLflow's server-info answer false for each capability in ``names``; the rest is MLflow's."""
    if applies(SERVER_INFO_PAYLOAD):
        current = resolve(SERVER_INFO_PAYLOAD)
        _replace(SERVER_INFO_PAYLOAD, _withholding(getattr(current, "__wrapped__", current), names))


def _withholding(
    original: Callable[[], dict[str, Any]], names: tuple[str, ...]
) -> Callable[[], dict[str, Any]]:
    @functools.wraps(original)
    def build_server_info_payload() -> dict[str, Any]:
        return {**original(), **dict.fromkeys(names, False)}

    return build_server_info_payload


def _replace(internal: Internal, replacement: Callable[..., Any]) -> None:
    resolve(internal)  # fails loudly if MLflow no longer has it
    setattr(importlib.import_module(internal.module), internal.name, replacement)


def _remember_through_run_requirement(
    lookup: Callable[[str], str | None], remember: Callable[[str, str], None]
) -> None:
    # MLflow 3.17 and later: _run_requirement(run_id, action) answers the experiment anchor and the
    # requirements (read on the experiment, then `action` on its runs with the experiment's grant as
    # fallback), or None for a run that does not exist (which denies).
    current = resolve(RUN_REQUIREMENT)
    original = getattr(current, "__wrapped__", current)

    @functools.wraps(original)
    def _run_requirement(run_id: str, action: str) -> Any:
        if isinstance(run_id, str) and run_id:
            experiment_id = lookup(run_id)
            if experiment_id is not None:
                experiment_type = resolve(RESOURCE_TYPE_EXPERIMENT)
                experiment = (experiment_type, experiment_id)
                return experiment, [
                    _call(REQUIREMENT, experiment_type, experiment_id, "read"),
                    _call(
                        REQUIREMENT,
                        resolve(RESOURCE_TYPE_RUN),
                        "*",
                        action,
                        fallback_if_no_grant=(experiment,),
                    ),
                ]
        resolved = original(run_id, action)
        if resolved is not None and isinstance(run_id, str) and run_id:
            remember(run_id, str(resolved[0][1]))
        return resolved

    _replace(RUN_REQUIREMENT, _run_requirement)


def _remember_through_run_permission(
    lookup: Callable[[str], str | None], remember: Callable[[str, str], None]
) -> None:
    # MLflow 3.16 (no _run_requirement, Requirement or RESOURCE_TYPE_RUN): the run-scoped validators ask
    # _get_permission_from_run_id() for the user's Permission on the run's experiment. This replacement
    # does what 3.16.1's does, in the same order (request parameter, run, user, grant), except that a
    # remembered run is not read again. A run that does not exist raises from get_run as in MLflow.
    current = resolve(RUN_PERMISSION)
    original = getattr(current, "__wrapped__", current)

    @functools.wraps(original)
    def _get_permission_from_run_id() -> Any:
        run_id = _call(GET_REQUEST_PARAM, "run_id")
        cacheable = isinstance(run_id, str) and bool(run_id)
        experiment_id = lookup(run_id) if cacheable else None
        if experiment_id is None:
            experiment_id = tracking_store().get_run(run_id).info.experiment_id
            if cacheable:
                remember(run_id, str(experiment_id))
        username = _call(AUTHENTICATE_REQUEST).username
        get_experiment = tracking_store().get_experiment
        role_permission = _call(
            ROLE_PERMISSION_FOR,
            username,
            "experiment",
            experiment_id,
            experiment_id,
            get_experiment,
            "experiment",
        )
        return _call(ROLE_PERMISSION_OR_DEFAULT, role_permission)

    _replace(RUN_PERMISSION, _get_permission_from_run_id)


def fastapi_validator(path: str, method: str) -> Any:
    """The validator MLflow's FastAPI permission middleware applies to a request, or None."""
    return _call(FIND_FASTAPI_VALIDATOR, path, method)


def matches_native_fastapi_route(native_routes: list[Any], scope: Any) -> bool:
    """True when an ASGI scope is served by one of FastAPI's own routes (not handed on to Flask)."""
    return bool(_call(SCOPE_MATCHES_NATIVE_ROUTE, native_routes, scope))


def native_fastapi_routes(app: Any) -> list[Any]:
    """The FastAPI app's own routes, as MLflow's permission middleware snapshots them."""
    return list(_call(NATIVE_FASTAPI_ROUTES, app))


def ungated_fastapi_route_markers() -> tuple[str, ...]:
    """Path fragments of native FastAPI routes MLflow's fail-closed net lets through."""
    return tuple(resolve(KNOWN_UNGATED_FASTAPI_ROUTE_MARKERS))


def is_native_artifact_path(path: str, method: str) -> bool:
    """True when MLflow serves this artifact request on its native FastAPI route (upload or download)."""
    return bool(_call(NATIVE_ARTIFACT_PATH, path, method))


def fastapi_after_request_handler(path: str, method: str) -> Any:
    """The handler MLflow's FastAPI permission middleware runs after the call (it reads the body), or None."""
    return _call(FIND_FASTAPI_AFTER_REQUEST_HANDLER, path, method)


def basic_auth_fail_closed() -> bool:
    """``MLFLOW_BASIC_AUTH_FAIL_CLOSED`` as MLflow's auth reads it."""
    return bool(resolve(BASIC_AUTH_FAIL_CLOSED).get())


def workspace_header_name() -> str:
    """The request header that names a workspace."""
    return str(resolve(WORKSPACE_HEADER))


def request_workspace(path: str, header_value: str | None) -> str | None:
    """The workspace MLflow's FastAPI middleware binds to a request (None: none); raises as it does."""
    workspace = _call(RESOLVE_REQUEST_WORKSPACE, path, header_value)
    return workspace.name if workspace else None


def set_request_workspace(workspace: str | None) -> None:
    _call(SET_REQUEST_WORKSPACE, workspace)


def clear_request_workspace() -> None:
    _call(CLEAR_REQUEST_WORKSPACE)


def gateway_path_prefix() -> str:
    """The path prefix of the gateway routes (after ``--static-prefix``), as MLflow's timing middleware
    computes it."""
    return str(_call(ADD_STATIC_PREFIX, "/gateway/"))


# --- the registry ---


def is_prompt(model: Any) -> bool:
    """True when a registered model is a prompt (MLflow keeps prompts in the registry)."""
    return bool(_call_method(IS_PROMPT, model))


# --- the client: runs of this process ---


def active_runs_by_thread() -> dict[int, list[Any]]:
    """The stack of active runs (``ActiveRun``) of every thread, by thread ident."""
    return dict(resolve(ACTIVE_RUN_STACK).get_all_thread_values())


def last_active_run_ids_by_thread() -> dict[int, str | None]:
    """The id of the run each thread ended last, by thread ident."""
    return dict(resolve(LAST_ACTIVE_RUN_ID).get_all_thread_values())


def is_request_reading_frame(frame: FrameType) -> bool:
    """True when ``frame`` runs one of the functions with which MLflow reads a request's parameters."""
    module, name = frame.f_globals.get("__name__"), frame.f_code.co_name
    return any(name == internal.name and module == internal.module for internal in REQUEST_READING_FRAMES)


def is_request_validation_frame(frame: FrameType) -> bool:
    """True when ``frame`` runs MLflow's auth hook (authentication and the validators)."""
    internal = REQUEST_VALIDATION_FRAME
    return frame.f_code.co_name == internal.name and frame.f_globals.get("__name__") == internal.module


def is_start_run_frame(frame: FrameType) -> bool:
    """True when ``frame`` runs ``mlflow.start_run`` itself."""
    return frame.f_code.co_name == START_RUN.name and frame.f_globals.get("__name__") == START_RUN.module


def notebook_path_from_sessions() -> str | None:
    """The notebook of this kernel, asked of the running Jupyter servers; None when none answers."""
    found = _call(NOTEBOOK_PATH_FROM_SESSIONS)
    return str(found) if found else None


# --- the S3 artifact repository ---


def download_s3_file(repository: Any, remote_file_path: str, local_path: str) -> None:
    """MLflow's download of one object of the S3 repository (the method ours overrides)."""
    args = (repository, remote_file_path, local_path)
    assert DOWNLOAD_FILE.params is not None
    _check_call(DOWNLOAD_FILE, DOWNLOAD_FILE.params, args, {})
    resolve(DOWNLOAD_FILE)(*args)


def s3_client(repo: Any) -> Any:
    """The boto3 client an ``S3ArtifactRepository`` uses, with its credentials and endpoint."""
    return _call_method(S3_CLIENT, repo)


def s3_bucket_owner_params(repo: Any) -> dict[str, str]:
    """The ``ExpectedBucketOwner`` argument an ``S3ArtifactRepository`` adds to its S3 calls (or none)."""
    return dict(_member(S3_BUCKET_OWNER_PARAMS, repo))


# --- the PostgreSQL tracking store ---


def validate_run_id(run_id: str) -> None:
    """MLflow's check of a run id (INVALID_PARAMETER_VALUE with MLflow's message)."""
    _call(VALIDATE_RUN_ID, run_id)


def validate_metric(key: str, value: Any, timestamp: Any, step: Any, path: str = "") -> None:
    """MLflow's check of one metric."""
    _call(VALIDATE_METRIC, key, value, timestamp, step, path)


def validate_param(key: str, value: Any, path: str = "") -> Any:
    """MLflow's check of one param; returns the Param as MLflow stores it (a long value truncated when
    MLflow is told to truncate)."""
    return _call(VALIDATE_PARAM, key, value, path)


def validate_tag(key: str, value: Any, path: str = "") -> Any:
    """MLflow's check of one run tag; returns the RunTag as MLflow stores it."""
    return _call(VALIDATE_TAG, key, value, path)


def validate_batch(
    metrics: list[Any], params: list[Any], tags: list[Any], metrics_checked: bool = False
) -> tuple[list[Any], list[Any], list[Any]]:
    """MLflow's checks of a log_batch request, in MLflow's order: every entity, the limits, unique param
    keys. Returns the metrics, params and tags as MLflow stores them. ``metrics_checked``: the caller has
    checked each metric as ``_validate_batch_log_data`` does (which returns them unchanged)."""
    checked, params, tags = _call(VALIDATE_BATCH_LOG_DATA, [] if metrics_checked else metrics, params, tags)
    metrics = metrics if metrics_checked else checked
    _call(VALIDATE_BATCH_LOG_LIMITS, metrics, params, tags)
    _call(VALIDATE_PARAM_KEYS_UNIQUE, params)
    return metrics, params, tags


def search_runs_order_by(order_by: list[str] | None, session: Any) -> tuple[list[Any], list[Any], list[Any]]:
    """MLflow's ORDER BY of ``search_runs``: (select columns, order clauses, outer joins)."""
    return _call(SEARCH_RUNS_ORDER_BY, order_by, session)


def search_runs_filters(
    parsed: list[Any], session: Any, dialect: str
) -> tuple[list[Any], list[Any], list[Any]]:
    """MLflow's filters of ``search_runs``: (attribute filters, joined subqueries, dataset subqueries)."""
    return _call(SEARCH_RUNS_FILTERS, parsed, session, dialect)


def parse_experiment_ids(experiment_ids: list[Any]) -> list[int]:
    """MLflow's parse of experiment ids (its error for a bad one)."""
    return _call(PARSE_EXPERIMENT_IDS, experiment_ids)


def mlflow_search_runs(store: Any, *args: Any) -> Any:
    """MLflow's own ``SqlAlchemyStore._search_runs`` on ``store`` (which overrides it)."""
    (internal,) = (item for item in STORE_HOT_PATHS if item.name.endswith("._search_runs"))
    _check_call(internal, internal.params or (), (store, *args), {})
    return resolve(internal)(store, *args)


def run_model() -> Any:
    """MLflow's ORM model of the ``runs`` table."""
    return resolve(RUN_MODEL)


def validate_max_results(store: Any, max_results: int | None) -> None:
    """MLflow's check of ``search_runs``' ``max_results`` (None allowed)."""
    _call_method(VALIDATE_MAX_RESULTS, store, max_results, True)


def filter_experiment_ids(store: Any, session: Any, experiment_ids: list[int]) -> list[int]:
    """The store's hook on the experiments a search may read."""
    return _call_method(FILTER_EXPERIMENT_IDS, store, session, experiment_ids)


def run_dataset_inputs(store: Any, session: Any, run_ids: list[str]) -> list[list[Any]]:
    """MLflow's dataset inputs of these runs, a list per run in their order."""
    return _call_method(RUN_DATASET_INPUTS, store, session, run_ids)


def run_model_outputs(store: Any, session: Any, run_ids: list[str]) -> dict[str, list[Any]]:
    """MLflow's model outputs of these runs, by run id."""
    return _call_method(RUN_MODEL_OUTPUTS, store, run_ids, session)


def validate_model_name(name: str) -> None:
    """MLflow's check of a registered model's name."""
    _call(VALIDATE_MODEL_NAME, name)


def validate_model_alias_name(alias: str) -> None:
    """MLflow's check of an alias."""
    _call(VALIDATE_MODEL_ALIAS_NAME, alias)


def registered_models_order_by(store: Any, order_by: list[str] | None) -> list[Any]:
    """MLflow's ORDER BY clauses of ``search_registered_models`` (its error for a bad key)."""
    _check_call(REGISTERED_MODELS_ORDER_BY, REGISTERED_MODELS_ORDER_BY.params or (), (order_by,), {})
    return list(_member(REGISTERED_MODELS_ORDER_BY, store)(order_by))


def registered_models_filter_query(store: Any, session: Any, parsed_filters: list[Any], dialect: str) -> Any:
    """MLflow's filtered ``select(SqlRegisteredModel)`` of ``search_registered_models`` (prompts left out
    unless asked for)."""
    return _call_method(REGISTERED_MODELS_FILTER_QUERY, store, session, parsed_filters, dialect)


def registered_model_model() -> Any:
    """MLflow's ORM model of the ``registered_models`` table."""
    return resolve(REGISTERED_MODEL_MODEL)


def registry_workspace(store: Any) -> str:
    """The workspace the registry store reads (MLflow's default one without workspaces)."""
    return str(_call_method(REGISTRY_ACTIVE_WORKSPACE, store))


def server_artifact_root_env_var() -> str:
    """The variable in which ``mlflow server`` hands its default artifact root to the stores it builds."""
    return str(resolve(SERVER_ARTIFACT_ROOT_ENV_VAR))


def read_replica_env_var() -> str:
    """The variable in which ``mlflow server`` hands the read replica's URI to the stores it builds."""
    return str(resolve(READ_REPLICA_ENV_VAR))


# --- the client's REST store ---


def call_rest_endpoint(store: Any, api: Any, json_body: str) -> Any:
    """Send ``json_body`` as the request of ``api`` through MLflow's REST store ``store``."""
    return _call_method(REST_CALL_ENDPOINT, store, api, json_body)


def plain_rest_request() -> bool:
    """Whether MLflow's ``http_request`` would add nothing to a request but its own providers' headers
    and the credentials: no workspace, no Databricks traffic id, no request-header provider from a plugin."""
    if _call(REQUEST_WORKSPACE) or resolve(DATABRICKS_TRAFFIC_ID).get():
        return False
    return all(type(p).__module__.startswith("mlflow.") for p in resolve(REQUEST_HEADER_PROVIDERS))


def retried_http_statuses() -> frozenset[int]:
    """The statuses MLflow's client retries a request on."""
    return frozenset(resolve(RETRIED_HTTP_STATUSES))


def verify_rest_answer(status: int, body: bytes, headers: dict[str, str], endpoint: str) -> None:
    """Raise what MLflow's client raises for an answer of ``status`` with ``body`` to ``endpoint``, if it
    raises for it (it accepts a 200 whose body is a JSON object, or empty)."""
    import requests

    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers)
    response.encoding = "utf-8"
    _call(VERIFY_REST_RESPONSE, response, endpoint)


def mlflow_rest_store(store_uri: str) -> Any:
    """MLflow's own tracking store for an http(s) URI, built by MLflow's builder."""
    return _call(GET_REST_STORE, store_uri)
