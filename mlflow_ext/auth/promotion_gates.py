"""Promotion gates and audit tags inside the mlflow-ext-auth app, for protected aliases.

Called by mlflow_ext.auth.policy for every request that sets or moves a protected alias, after
MLflow's authentication and the promote-right check (and for admins too, who skip validators):

1. With ``MLFLOW_EXT_PROMOTION_POLICY`` set, the version must pass the policy's gates for that model
   and alias, exactly as ``mlflow-ext promote`` checks them; otherwise the request is refused with
   ``MlflowException(PERMISSION_DENIED)`` (HTTP 403) whose message names every failed gate and what it
   found. A move back to the version the holder replaced (its ``promotion.from_version``) is a
   rollback: relative gates are skipped. Without the setting no gate applies.
2. The audit tags: when the version's ``promotion.*`` tags already describe this move (same alias,
   same previous holder and action, written in the last ten minutes, as ``mlflow-ext promote`` leaves
   them) they are kept, ``promotion.by`` corrected to the authenticated user; otherwise the server
   writes them (without a reason). Either way they are in place before the handler moves the alias,
   and the after-request hook restores them when the handler fails.

Prompts (registered models tagged ``mlflow.prompt.is_prompt``) have no runs: gates skip them.
The policy file is read when the app is created and again whenever its modification time changes;
a file that has become invalid refuses protected-alias moves (fail closed) until it is fixed.
"""

from __future__ import annotations

from typing import Any

from mlflow_ext import mlflow_internals
from mlflow_ext.auth import authn
from mlflow_ext.errors import ConfigError, PromotionRejected
from mlflow_ext.policy import audit
from mlflow_ext.policy.gates import StoreReader, evaluate, failed, read_holder, read_version, refusal
from mlflow_ext.policy.rules import Policy, load

_RESTORE = "_mlflow_ext_promotion_restore"


_policy_path: str | None = None


def configure(path: str | None) -> None:
    """Called once when the app is created. Raises ConfigError when the file is invalid."""
    global _policy_path
    if path:
        load(path)
    _policy_path = path


def configured_path() -> str | None:
    """The policy file named by ``MLFLOW_EXT_PROMOTION_POLICY``, if any (served by ``routes``)."""
    return _policy_path


def configured_policy() -> Policy | None:
    """The configured policy as the file is now: a changed file is read again, a broken one raises."""
    return load(_policy_path) if _policy_path else None


def _reader() -> StoreReader:
    return StoreReader(mlflow_internals.registry_store(), mlflow_internals.tracking_store())


def _is_prompt(reader: StoreReader, name: str) -> bool:
    return mlflow_internals.is_prompt(reader.registry.get_registered_model(name))


def check(change: dict[str, Any], username: str) -> None:
    """Gate and tag one protected-alias ``set``; raises MlflowException to refuse it."""
    from flask import g
    from mlflow.entities.model_registry import ModelVersionTag
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_STATE, PERMISSION_DENIED

    if change.get("action") != "set":
        return
    name, version, alias = str(change["name"]), str(change.get("version")), str(change["aliases"][0])
    reader = _reader()
    try:
        if _is_prompt(reader, name):
            return
        candidate = read_version(reader, name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return  # the handler gives its own answer
        raise
    holder = read_holder(reader, name, alias)
    if holder is not None and holder.version == candidate.version:
        return  # the alias does not move
    rollback = audit.is_rollback(holder.version_tags if holder else None, version, alias)
    try:
        policy = configured_policy()
    except ConfigError as exc:
        raise MlflowException(f"promotion gates unavailable: {exc}", INVALID_STATE) from None
    if policy is not None:
        rules = policy.rules_for(name, alias)
        results = evaluate(rules, candidate, holder, alias, rollback=rollback)
        if failed(results):
            _audit_refusal(username, name, version, alias, [r.gate for r in failed(results)])
            raise MlflowException(
                refusal(name, version, alias, results, rules.source),
                PERMISSION_DENIED,
                error_class=PromotionRejected.SERVER_ERROR_CLASS,
                failed_gates=[r.gate for r in failed(results)],
            )

    from_version = holder.version if holder is not None else None
    current = dict(candidate.version_tags)
    if audit.describes(current, alias, from_version, rollback):
        wanted: dict[str, str | None] = {audit.PROMOTION_BY: username}
    else:
        wanted = audit.tags_for(
            by=username, alias=alias, from_version=from_version, reason=None, rollback=rollback
        )
    registry = reader.registry
    before = audit.snapshot(current)
    changed = False
    for key, value in wanted.items():
        if value is None:
            if key in current:
                registry.delete_model_version_tag(name, version, key)
                changed = True
        elif current.get(key) != value:
            registry.set_model_version_tag(name, version, ModelVersionTag(key, value))
            changed = True
    if changed:
        setattr(g, _RESTORE, (name, version, before))


def _audit_refusal(username: str, name: str, version: str, alias: str, gates: list[str]) -> None:
    authn.state().audit.record(
        "alias.promotion_refused",
        actor=username,
        address=authn.current_address(),
        name=name,
        version=version,
        alias=alias,
        gates=gates,
    )


def after_request(status_code: int) -> None:
    """Restore the audit tags this request wrote when the alias did not move after all."""
    from flask import g
    from mlflow.entities.model_registry import ModelVersionTag

    pending = g.pop(_RESTORE, None)
    if pending is None or status_code < 400:
        return
    name, version, before = pending
    registry = _reader().registry
    current = dict(registry.get_model_version(name, version).tags or {})
    for key, value in before.items():
        if value is None:
            if key in current:
                registry.delete_model_version_tag(name, version, key)
        elif current.get(key) != value:
            registry.set_model_version_tag(name, version, ModelVersionTag(key, value))
