"""The auth REST API's paths and the platform rights: what the server's routes (``routes``, ``store``) and the
CLI (`mlflow-ext tokens`, `users`, `grant`) agree on.

Plain constants, importing nothing: the CLI names these before it knows the server is there, and a command
whose server is unreachable fails without loading MLflow, Flask or SQLAlchemy (tests/unit/test_cli_errors.py).
"""

from __future__ import annotations

PREFIX = "/api/2.0/mlflow-ext"
TOKENS_CREATE = f"{PREFIX}/tokens/create"
TOKENS_LIST = f"{PREFIX}/tokens/list"
TOKENS_REVOKE = f"{PREFIX}/tokens/revoke"
RIGHTS_GRANT = f"{PREFIX}/rights/grant"
RIGHTS_REVOKE = f"{PREFIX}/rights/revoke"
RIGHTS_LIST = f"{PREFIX}/rights/list"
SERVICE_ACCOUNTS_CREATE = f"{PREFIX}/service-accounts/create"
SERVICE_ACCOUNTS_LIST = f"{PREFIX}/service-accounts/list"
LOCKOUTS_LIST = f"{PREFIX}/lockouts/list"
LOCKOUTS_CLEAR = f"{PREFIX}/lockouts/clear"
AUTH_CHECK = f"{PREFIX}/auth/check"

# MLflow's own user and permission APIs, which the CLI calls next to ours.
USERS_API = "/api/2.0/mlflow/users"
PERMISSIONS_API = "/api/3.0/mlflow/users/permissions"

RIGHTS = ("create_experiment", "create_registered_model", "promote")
