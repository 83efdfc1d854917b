"""Authorization added on top of MLflow's: create rights, admin-only user listing, protected aliases.

MLflow decides each route with a validator from ``mlflow.server.auth.BEFORE_REQUEST_VALIDATORS`` (admins
skip them). Rather than a second permission system, this module wraps the validators of the routes it
tightens, so every route still has exactly one authorization decision and MLflow's own checks still run:

- create experiment / create registered model: the user also needs the ``create_experiment`` /
  ``create_registered_model`` right (``mlflow-ext grant right``), unless ``MLFLOW_EXT_AUTH_OPEN_CREATE``
  opens it to everyone. Creating a model that already exists passes through, so the client's
  ``register_model`` (create, then "already exists") keeps working for users who may add versions.
- list users: admins only (MLflow lets any user list every account).
- protected aliases (``MLFLOW_EXT_PROTECTED_ALIASES``, compared case-insensitively): setting, moving or
  deleting one, and deleting or renaming a model or version that carries one, needs the ``promote``
  right on that model (or on ``*``) on top of MLflow's EDIT/MANAGE check. Setting or moving one also
  passes the promotion gates of ``MLFLOW_EXT_PROMOTION_POLICY`` and leaves the promotion audit tags on
  the version (mlflow_ext.auth.promotion_gates), for admins too.

Denials raise ``MlflowException(PERMISSION_DENIED)``; MLflow's hook turns them into a 403 whose message
names the missing right. An after-request hook audits grant and protected-alias changes, bumps the
generation counter after password changes and user deletions, and forgets a deleted user's tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

from mlflow_ext import mlflow_internals
from mlflow_ext.auth import authn
from mlflow_ext.auth import promotion_gates as promotion

_ALIAS_SUFFIX = "/mlflow/registered-models/alias"
_DELETE_VERSION_SUFFIX = "/mlflow/model-versions/delete"
_DELETE_MODEL_SUFFIX = "/mlflow/registered-models/delete"
_RENAME_MODEL_SUFFIX = "/mlflow/registered-models/rename"
_GRANT_SUFFIXES = ("/mlflow/users/permissions/grant", "/mlflow/users/permissions/revoke")
_MEMO = "_mlflow_ext_protected"


def _param(name: str) -> str:
    return mlflow_internals.request_param(name)


def _username() -> str:
    result = authn.authenticate_request()
    username = getattr(result, "username", None)
    if not username:
        raise MlflowException("not authenticated", PERMISSION_DENIED)
    return str(username)


def _deny(message: str) -> bool:
    raise MlflowException(f"Permission denied: {message}", PERMISSION_DENIED)


# --- create rights ------------------------------------------------------------------------------


def may_create(kind: str) -> bool:
    """``kind`` is "experiments" or "registered_models"."""
    st = authn.state()
    if kind in st.settings.open_create:
        return True
    return st.ext.has_right(_username(), "create_" + kind[:-1])


def _create_experiment_check() -> bool:
    if may_create("experiments"):
        return True
    return _deny(
        "creating experiments requires the create_experiment right; an admin grants it with "
        "`mlflow-ext grant right <user> create_experiment`."
    )


def _create_registered_model_check() -> bool:
    if may_create("registered_models"):
        return True
    try:
        mlflow_internals.registry_store().get_registered_model(_param("name"))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    else:
        return True  # the handler answers RESOURCE_ALREADY_EXISTS, as without auth
    return _deny(
        "registering a new model requires the create_registered_model right; an admin grants it with "
        "`mlflow-ext grant right <user> create_registered_model`."
    )


def _list_users_check() -> bool:
    return _deny("only admins may list users.")


# --- protected aliases --------------------------------------------------------------------------


def is_protected(alias: str) -> bool:
    return alias.lower() in {a.lower() for a in authn.state().settings.protected_aliases}


def protected_change() -> dict[str, Any] | None:
    """The protected aliases this request would set, move or remove; memoised per request.

    Read before the handler runs (after it, a deleted model is gone): from the request for the alias
    routes, from the registry for deletes and renames.
    """
    if _MEMO in g:
        return g.get(_MEMO)
    change: dict[str, Any] | None = None
    path, method = request.path, request.method
    if path.endswith(_ALIAS_SUFFIX) and method in ("POST", "DELETE"):
        alias = _param("alias")
        if is_protected(alias):
            change = {
                "action": "set" if method == "POST" else "delete",
                "name": _param("name"),
                "aliases": [alias],
            }
            if method == "POST":
                change["version"] = _param("version")
    elif path.endswith((_DELETE_VERSION_SUFFIX, _DELETE_MODEL_SUFFIX, _RENAME_MODEL_SUFFIX)) and method in (
        "DELETE",
        "POST",
    ):
        registry = mlflow_internals.registry_store()
        name = _param("name")
        try:
            if path.endswith(_DELETE_VERSION_SUFFIX):
                version = _param("version")
                aliases = list(registry.get_model_version(name, version).aliases)
                action = "delete_version"
            else:
                aliases = list(registry.get_registered_model(name).aliases)
                action = "delete_model" if path.endswith(_DELETE_MODEL_SUFFIX) else "rename_model"
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            aliases, action = [], ""
        protected = [a for a in aliases if is_protected(a)]
        if protected:
            change = {"action": action, "name": name, "aliases": protected}
    setattr(g, _MEMO, change)
    return change


def has_promote(username: str, model_name: str) -> bool:
    return authn.state().ext.has_right(username, "promote", model_name)


def _protected_alias_check() -> bool:
    change = protected_change()
    if change is None:
        return True
    username = _username()
    if has_promote(username, change["name"]):
        return True
    st = authn.state()
    aliases = ", ".join(repr(a) for a in change["aliases"])
    st.audit.record("alias.protected_denied", actor=username, address=authn.current_address(), **change)
    verb = {
        "set": "setting or moving",
        "delete": "deleting",
        "delete_version": "deleting a version that carries",
        "delete_model": "deleting a model that carries",
        "rename_model": "renaming a model that carries",
    }[change["action"]]
    return _deny(
        f"{verb} the protected alias {aliases} of registered model {change['name']!r} requires the "
        f"promote right on {change['name']!r}; an admin grants it with "
        f"`mlflow-ext grant right {username} promote --model {change['name']}`."
    )


# --- installation -------------------------------------------------------------------------------


def _then(first: Callable[[], bool], original: Callable[[], bool]) -> Callable[[], bool]:
    def validator() -> bool:
        return first() and original()

    validator.__name__ = f"mlflow_ext_{getattr(first, '__name__', 'check')}"
    validator.__wrapped__ = original  # type: ignore[attr-defined]
    return validator


def _is_protected_alias_route(path: str, method: str) -> bool:
    """The routes that can set, move or remove a protected alias (``protected_change`` reads them)."""
    if path.endswith(_ALIAS_SUFFIX):
        return method in ("POST", "DELETE")
    if path.endswith((_DELETE_VERSION_SUFFIX, _DELETE_MODEL_SUFFIX)):
        return method == "DELETE"
    return path.endswith(_RENAME_MODEL_SUFFIX) and method == "POST"


def wrap_validators() -> dict[str, int]:
    """Wrap MLflow's validators in place; returns how many routes each rule covers (for tests)."""
    mlflow_validator = mlflow_internals.auth_validator
    alias = ("alias", _protected_alias_check)
    rules = {
        "validate_can_create_experiment": ("create_experiment", _create_experiment_check),
        "validate_can_create_registered_model": ("create_registered_model", _create_registered_model_check),
        "validate_can_list_users": ("list_users", _list_users_check),
        "validate_can_set_model_or_prompt_version_alias": alias,
        "validate_can_delete_model_or_prompt_version_alias": alias,
        "validate_can_delete_model_or_prompt_version": alias,
        "validate_can_delete_registered_model_or_prompt_cascade": alias,
    }
    # A validator this MLflow lacks is None: up to 3.16 the alias routes share the registry's generic
    # validators with other routes, so those are found by path below (rename is, on every version).
    by_validator = {
        validator: rule for name, rule in rules.items() if (validator := mlflow_validator(name)) is not None
    }
    counts: dict[str, int] = {}
    for (path, method), validator in mlflow_internals.route_validators().items():
        rule = by_validator.get(validator)
        if rule is None and _is_protected_alias_route(path, method):
            rule = alias
        if rule is not None:
            mlflow_internals.set_route_validator(path, method, _then(rule[1], validator))
            counts[rule[0]] = counts.get(rule[0], 0) + 1
    return counts


def _before_request() -> Response | None:
    """After MLflow's hook: note protected-alias changes of admins too, for the audit; gate and tag
    the version a protected alias is set to (everyone, admins included)."""
    if mlflow_internals.is_unprotected_route(request.path) or request.method not in ("POST", "DELETE"):
        return None
    if request.path.endswith(
        (_ALIAS_SUFFIX, _DELETE_VERSION_SUFFIX, _DELETE_MODEL_SUFFIX, _RENAME_MODEL_SUFFIX)
    ):
        change = protected_change()
        if change is not None and change["action"] == "set":
            try:
                promotion.check(change, _username())
            except MlflowException as exc:
                return Response(
                    exc.serialize_as_json(), status=exc.get_http_status_code(), mimetype="application/json"
                )
    return None


def _request_fields(*names: str) -> dict[str, Any]:
    body = request.get_json(silent=True) if request.is_json else None
    source: dict[str, Any] = body if isinstance(body, dict) else dict(request.args)
    return {name: source.get(name) for name in names if name in source}


# The paths whose successful writes the after-request hook audits (besides protected-alias changes).
_AUDITED_SUFFIXES = (
    *_GRANT_SUFFIXES,
    "/mlflow/roles",
    "/mlflow/users/update-admin",
    "/mlflow/users/update-password",
    "/mlflow/users/delete",
    "/mlflow/users/create",
)


def _after_request(response: Response) -> Response:
    promotion.after_request(response.status_code)
    if response.status_code >= 400 or request.method == "GET":
        return response
    path = request.path
    change = g.get(_MEMO)
    if not change and not path.endswith(_AUDITED_SUFFIXES) and "/mlflow/roles/" not in path:
        return response  # nothing to audit or bump (tracking calls): skip the rest
    result = g.get("_mlflow_ext_authorization")
    actor = getattr(result, "username", None)
    if not actor:
        return response
    st = authn.state()
    address = authn.current_address()
    if path.endswith(_GRANT_SUFFIXES):
        st.audit.record(
            "grant.changed",
            actor=actor,
            address=address,
            action=path.rsplit("/", 1)[1],
            **_request_fields("username", "resource_type", "resource_id", "permission"),
        )
    elif "/mlflow/roles/" in path or path.endswith("/mlflow/roles"):
        st.audit.record(
            "grant.changed", actor=actor, address=address, action="role", method=request.method, path=path
        )
    elif path.endswith("/mlflow/users/update-admin"):
        st.ext.bump_generation()
        st.audit.record(
            "grant.changed",
            actor=actor,
            address=address,
            action="admin",
            **_request_fields("username", "is_admin"),
        )
    elif path.endswith("/mlflow/users/update-password"):
        st.ext.bump_generation()
        st.audit.record("user.password_changed", actor=actor, address=address, **_request_fields("username"))
    elif path.endswith("/mlflow/users/delete"):
        fields = _request_fields("username")
        if fields.get("username"):
            st.ext.forget_user(str(fields["username"]))
        st.audit.record("user.deleted", actor=actor, address=address, **fields)
    elif path.endswith("/mlflow/users/create"):
        st.audit.record("user.created", actor=actor, address=address, **_request_fields("username"))
    if change:
        st.audit.record("alias.protected_changed", actor=actor, address=address, **change)
    return response


def install(flask_app: Flask) -> dict[str, int]:
    counts = wrap_validators()
    promotion.configure(authn.state().settings.promotion_policy)
    flask_app.before_request(_before_request)
    flask_app.after_request(_after_request)
    return counts
