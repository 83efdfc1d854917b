"""REST endpoints of mlflow-ext-auth, under ``/api/2.0/mlflow-ext/``.

Each route is registered on MLflow's Flask app and given a validator in MLflow's
``BEFORE_REQUEST_VALIDATORS``, exactly like MLflow's own user routes: admins may do everything; other
users may create (when signed in with their password, not a token), list and revoke their own tokens.
Rights, service accounts and lockouts are admin-only.

=====================================================  ======  ==========================================
path                                                   method  body / query
=====================================================  ======  ==========================================
/api/2.0/mlflow-ext/tokens/create                      POST    name, username?, expires_in_seconds?
/api/2.0/mlflow-ext/tokens/list                        GET     username?, include_revoked?
/api/2.0/mlflow-ext/tokens/revoke                      POST    id
/api/2.0/mlflow-ext/rights/grant                       POST    username, right, resource?
/api/2.0/mlflow-ext/rights/revoke                      POST    username, right, resource?
/api/2.0/mlflow-ext/rights/list                        GET     username?
/api/2.0/mlflow-ext/service-accounts/create            POST    username, description?
/api/2.0/mlflow-ext/service-accounts/list              GET
/api/2.0/mlflow-ext/lockouts/list                      GET
/api/2.0/mlflow-ext/lockouts/clear                     POST    username? | address?
/api/2.0/mlflow-ext/promotion/policy                   GET     (none; any authenticated user)
/api/2.0/mlflow-ext/auth/check                         GET     (none: the credentials only)
=====================================================  ======  ==========================================

``auth/check`` is what the proxy asks (nginx ``auth_request``) before it reads the body of an upload:
204 for valid credentials of any user, otherwise the answer of ``authn`` (401 with ``WWW-Authenticate``,
or 429). The credentials are verified by the same ``before_request`` hook as every other route, so
they go through the credential cache and a failure is counted toward lockout once, as for any request.

The token secret appears once, in the answer to ``tokens/create``; only its hash is stored.
``promotion/policy`` serves the server's promotion policy read only (mlflow_ext.policy.served), so that
``mlflow-ext promote`` checks the gates the server will check even where it cannot read the file.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)

from mlflow_ext import mlflow_internals
from mlflow_ext.auth import authn, lockout, promotion_gates
from mlflow_ext.auth.paths import (
    AUTH_CHECK,
    LOCKOUTS_CLEAR,
    LOCKOUTS_LIST,
    RIGHTS,
    RIGHTS_GRANT,
    RIGHTS_LIST,
    RIGHTS_REVOKE,
    SERVICE_ACCOUNTS_CREATE,
    SERVICE_ACCOUNTS_LIST,
    TOKENS_CREATE,
    TOKENS_LIST,
    TOKENS_REVOKE,
)
from mlflow_ext.auth.store import now_ms
from mlflow_ext.errors import ConfigError
from mlflow_ext.policy import served

PROMOTION_POLICY = served.PATH
MAX_NAME = 255


def _params() -> dict[str, Any]:
    if request.method == "GET":
        return dict(request.args)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise MlflowException("Expected a JSON object as the request body.", INVALID_PARAMETER_VALUE)
    return body


def _text(params: dict[str, Any], name: str, required: bool = True, default: str | None = None) -> str | None:
    value = params.get(name, default)
    if value is None or value == "":
        if required:
            raise MlflowException(f"Missing value for required parameter '{name}'.", INVALID_PARAMETER_VALUE)
        return default
    if not isinstance(value, str) or len(value) > MAX_NAME or not value.isprintable():
        raise MlflowException(
            f"Parameter '{name}' must be printable text of at most {MAX_NAME} characters.",
            INVALID_PARAMETER_VALUE,
        )
    return value


def _sender() -> str:
    return str(authn.authenticate_request().username)  # type: ignore[union-attr]


def _is_admin(username: str) -> bool:
    return bool(authn.state().users.get_user(username).is_admin)


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes")


# --- handlers -----------------------------------------------------------------------------------


def create_token() -> Any:
    st = authn.state()
    params = _params()
    sender = _sender()
    name = _text(params, "name")
    username = _text(params, "username", required=False, default=sender)
    assert name is not None and username is not None
    expires_in = params.get("expires_in_seconds")
    expires_at = None
    if expires_in is not None:
        if (
            not isinstance(expires_in, int)
            or isinstance(expires_in, bool)
            or not 1 <= expires_in <= 10 * 365 * 86400
        ):
            raise MlflowException(
                "expires_in_seconds must be a whole number of seconds between 1 and 3650 days.",
                INVALID_PARAMETER_VALUE,
            )
        expires_at = now_ms() + expires_in * 1000
    if not st.users.has_user(username):
        raise MlflowException(f"User {username!r} does not exist.", RESOURCE_DOES_NOT_EXIST)
    try:
        record, secret = st.ext.create_token(username, name, sender, expires_at)
    except ValueError as exc:
        raise MlflowException(str(exc), RESOURCE_ALREADY_EXISTS) from None
    st.audit.record(
        "token.created",
        actor=sender,
        address=authn.current_address(),
        user=username,
        token_id=record.id,
        name=name,
        expires_at=expires_at,
        service_account=st.ext.is_service_account(username),
    )
    return jsonify({"token": secret, "token_info": record.to_json()})


def list_tokens() -> Any:
    st = authn.state()
    params = _params()
    username = _text(params, "username", required=False)
    if username is None and not _is_admin(_sender()):
        username = _sender()
    records = st.ext.list_tokens(username, include_revoked=_flag(params.get("include_revoked", "false")))
    at = now_ms()
    return jsonify({"tokens": [r.to_json(at) for r in records]})


def _token_id(params: dict[str, Any]) -> int:
    value = params.get("id")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise MlflowException(
            "Parameter 'id' must be a token id (a positive number).", INVALID_PARAMETER_VALUE
        )
    return value


def revoke_token() -> Any:
    st = authn.state()
    token_id = _token_id(_params())
    if st.ext.get_token(token_id) is None:
        raise MlflowException(f"Token {token_id} does not exist.", RESOURCE_DOES_NOT_EXIST)
    sender = _sender()
    record = st.ext.revoke_token(token_id, sender)
    assert record is not None
    st.audit.record(
        "token.revoked",
        actor=sender,
        address=authn.current_address(),
        user=record.username,
        token_id=token_id,
        name=record.name,
        service_account=st.ext.is_service_account(record.username),
    )
    return jsonify({"token_info": record.to_json()})


def _right_params() -> tuple[str, str, str]:
    params = _params()
    username = _text(params, "username")
    right = _text(params, "right")
    resource = _text(params, "resource", required=False, default="*")
    assert username is not None and right is not None and resource is not None
    if right not in RIGHTS:
        raise MlflowException(
            f"Parameter 'right' must be one of {', '.join(RIGHTS)}.", INVALID_PARAMETER_VALUE
        )
    if right != "promote" and resource != "*":
        raise MlflowException(f"The {right} right takes no resource.", INVALID_PARAMETER_VALUE)
    return username, right, resource


def _answer_right_change(event: str, changed: bool, username: str, right: str, resource: str) -> Any:
    if changed:
        authn.state().audit.record(
            event,
            actor=_sender(),
            address=authn.current_address(),
            user=username,
            right=right,
            resource=resource,
        )
    return jsonify({"changed": changed})


def grant_right() -> Any:
    st = authn.state()
    username, right, resource = _right_params()
    if not st.users.has_user(username):
        raise MlflowException(f"User {username!r} does not exist.", RESOURCE_DOES_NOT_EXIST)
    changed = st.ext.grant_right(username, right, resource, _sender())
    return _answer_right_change("right.granted", changed, username, right, resource)


def revoke_right() -> Any:
    username, right, resource = _right_params()
    changed = authn.state().ext.revoke_right(username, right, resource)
    return _answer_right_change("right.revoked", changed, username, right, resource)


def list_rights() -> Any:
    username = _text(_params(), "username", required=False)
    return jsonify({"rights": authn.state().ext.list_rights(username)})


def create_service_account() -> Any:
    st = authn.state()
    params = _params()
    username = _text(params, "username")
    description = _text(params, "description", required=False, default="")
    assert username is not None and description is not None
    if st.users.has_user(username):
        if st.ext.is_service_account(username):
            raise MlflowException(f"Service account {username!r} already exists.", RESOURCE_ALREADY_EXISTS)
        raise MlflowException(f"A user named {username!r} already exists.", RESOURCE_ALREADY_EXISTS)
    # Service accounts sign in with tokens only: the password is random and never shown.
    st.users.create_user(username, secrets.token_urlsafe(32))
    st.ext.add_service_account(username, _sender(), description)
    st.audit.record(
        "service_account.created", actor=_sender(), address=authn.current_address(), user=username
    )
    return jsonify({"service_account": {"username": username, "description": description}})


def list_service_accounts() -> Any:
    return jsonify({"service_accounts": authn.state().ext.list_service_accounts()})


def list_lockouts() -> Any:
    locks = authn.state().ext.active_locks(now_ms())
    return jsonify(
        {"lockouts": [{"key": key, "locked_until": until} for key, until in sorted(locks.items())]}
    )


def clear_lockout() -> Any:
    st = authn.state()
    params = _params()
    username = _text(params, "username", required=False)
    address = _text(params, "address", required=False)
    if (username is None) == (address is None):
        raise MlflowException("Give exactly one of 'username' or 'address'.", INVALID_PARAMETER_VALUE)
    key = lockout.user_key(username) if username is not None else lockout.address_key(str(address))
    changed = st.ext.unlock(key)
    st.audit.record("auth.unlocked", actor=_sender(), address=authn.current_address(), key=key)
    return jsonify({"changed": changed})


def check_auth() -> Any:
    # Reached only once MLflow's before_request hook has authenticated the request.
    return "", 204


def get_promotion_policy() -> Any:
    try:
        return jsonify(served.document(promotion_gates.configured_path()))
    except ConfigError as exc:  # the server refuses protected-alias moves with the same error
        raise MlflowException(f"promotion gates unavailable: {exc}", INVALID_STATE) from None


# --- validators (non-admins; admins skip them, as for MLflow's routes) ------------------------------


def _own_username(params: dict[str, Any]) -> bool:
    username = params.get("username")
    return username in (None, "", _sender())


def can_create_token() -> bool:
    # A token may not mint further tokens: self-service needs the password, or a single sign-on session.
    return authn.auth_method() in ("password", "session") and _own_username(_params())


def can_list_tokens() -> bool:
    return _own_username(_params())


def can_revoke_token() -> bool:
    record = authn.state().ext.get_token(_token_id(_params()))
    return record is not None and record.username == _sender()


def admin_only() -> bool:
    return False


def can_read_promotion_policy() -> bool:
    # Any authenticated user: the gates a promotion must pass are no secret to those who promote.
    return True


def any_user() -> bool:
    return True


ROUTES: list[tuple[str, str, Callable[[], Any], Callable[[], bool]]] = [
    (TOKENS_CREATE, "POST", create_token, can_create_token),
    (TOKENS_LIST, "GET", list_tokens, can_list_tokens),
    (TOKENS_REVOKE, "POST", revoke_token, can_revoke_token),
    (RIGHTS_GRANT, "POST", grant_right, admin_only),
    (RIGHTS_REVOKE, "POST", revoke_right, admin_only),
    (RIGHTS_LIST, "GET", list_rights, admin_only),
    (SERVICE_ACCOUNTS_CREATE, "POST", create_service_account, admin_only),
    (SERVICE_ACCOUNTS_LIST, "GET", list_service_accounts, admin_only),
    (LOCKOUTS_LIST, "GET", list_lockouts, admin_only),
    (LOCKOUTS_CLEAR, "POST", clear_lockout, admin_only),
    (PROMOTION_POLICY, "GET", get_promotion_policy, can_read_promotion_policy),
    (AUTH_CHECK, "GET", check_auth, any_user),
]


def register(flask_app: Flask) -> None:
    from mlflow.server.handlers import catch_mlflow_exception

    for path, method, handler, validator in ROUTES:
        flask_app.add_url_rule(
            path,
            endpoint="mlflow_ext_" + handler.__name__,
            view_func=catch_mlflow_exception(handler),
            methods=[method],
        )
        mlflow_internals.set_route_validator(path, method, validator)
