"""Promote, roll back and report: the registry side of a release.

``promote`` checks the gates, writes the audit tags on the version, and only then moves the alias
(the webhook that starts the release fires the moment it moves); if the server refuses the move, the
version's previous tags are put back. ``rollback`` moves an alias back to the version its holder
replaced (``promotion.from_version``): relative gates are skipped, since the version being left is
the yardstick they would use; lineage and absolute gates and the promote right still apply.
``report`` writes a deployment's outcome on the version (``deploy.*`` tags).

Library code: raises PromotionRejected (a gate failed), PromotionError (anything else), never exits.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow_ext.errors import PromotionDenied, PromotionError, PromotionNotFound, PromotionRejected
from mlflow_ext.lineage import (
    DEPLOY_ALIAS,
    DEPLOY_AT,
    DEPLOY_COUNTER,
    DEPLOY_MESSAGE,
    DEPLOY_PIPELINE,
    DEPLOY_STAGE,
    DEPLOY_STATUS,
    DEPLOY_URL,
)
from mlflow_ext.policy import audit
from mlflow_ext.policy.gates import (
    Candidate,
    GateResult,
    evaluate,
    failed,
    read_holder,
    read_version,
    refusal,
)
from mlflow_ext.policy.rules import BUILTIN, Policy
from mlflow_ext.run_context import pipeline_url

_logger = logging.getLogger(__name__)

# Tags `mlflow-ext report` writes on the version (keys in mlflow_ext.lineage, which reads them back).
DEPLOY_KEYS = (
    DEPLOY_STATUS,
    DEPLOY_AT,
    DEPLOY_MESSAGE,
    DEPLOY_STAGE,
    DEPLOY_PIPELINE,
    DEPLOY_COUNTER,
    DEPLOY_URL,
    DEPLOY_ALIAS,
)
DEPLOY_STATUSES = ("deployed", "failed")
_MAX_TAG_VALUE = 5000  # MLflow's limit on a model-version tag value


@dataclass
class Outcome:
    model: str
    version: str
    alias: str
    action: str  # promote or rollback
    from_version: str | None
    changed: bool
    dry_run: bool
    policy: str
    gates: list[GateResult] = field(default_factory=list)
    tags: dict[str, str | None] = field(default_factory=dict)
    refused: bool = False
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _client(client: Any | None, tracking_uri: str | None) -> Any:
    if client is not None:
        return client
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _message(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def current_user(client: Any) -> str:
    """Who the server says we are (mlflow-ext-auth, basic-auth), else the configured or OS user."""
    from mlflow.tracking import get_tracking_uri
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    uri = getattr(getattr(client, "_tracking_client", None), "tracking_uri", None) or get_tracking_uri()
    if uri and uri.startswith(("http://", "https://")):
        try:
            response = http_request(
                get_default_host_creds(uri),
                "/api/2.0/mlflow/users/current",
                "GET",
                max_retries=0,
                raise_on_status=False,
            )
            if response.status_code == 200:
                name = (response.json().get("user") or {}).get("username")
                if name:
                    return str(name)
        except Exception as exc:  # no auth app, or an older server: fall back to what we were told
            _logger.debug("users/current unavailable: %s", exc)
    if os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return os.environ["MLFLOW_TRACKING_USERNAME"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _read(client: Any, model: str, version: str) -> Candidate:
    from mlflow.exceptions import MlflowException

    try:
        return read_version(client, model, version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise PromotionNotFound(f"registered model {model!r} has no version {version}") from None
        raise PromotionError(f"cannot read {model!r} version {version}: {_message(exc)}") from None


def _holder(client: Any, model: str, alias: str) -> Candidate | None:
    from mlflow.exceptions import MlflowException

    try:
        return read_holder(client, model, alias)
    except MlflowException as exc:
        raise PromotionError(f"cannot read @{alias} of {model!r}: {_message(exc)}") from None


def _write_tags(
    client: Any, model: str, version: str, current: Mapping[str, str], tags: Mapping[str, str | None]
) -> None:
    for key, value in tags.items():
        if value is None:
            if key in current:
                client.delete_model_version_tag(model, version, key)
        elif current.get(key) != value:
            client.set_model_version_tag(model, version, key, value)


def _move(
    client: Any,
    candidate: Candidate,
    holder: Candidate | None,
    alias: str,
    *,
    reason: str | None,
    policy: Policy,
    dry_run: bool,
) -> Outcome:
    """Gates, then tags, then the alias; tags restored when the server refuses the move.

    A move back to the version the holder replaced is a rollback, whichever command asked for it."""
    from mlflow.exceptions import MlflowException

    model, version = candidate.name, candidate.version
    rules = policy.rules_for(model, alias)
    from_version = holder.version if holder is not None else None
    rollback = audit.is_rollback(holder.version_tags if holder else None, version, alias)
    action = "rollback" if rollback else "promote"
    if holder is not None and holder.version == version:
        return Outcome(
            model, version, alias, action, from_version, False, dry_run, rules.source,
            message=f"version {version} already holds @{alias}",
        )  # fmt: skip
    results = evaluate(rules, candidate, holder, alias, rollback=rollback)
    outcome = Outcome(model, version, alias, action, from_version, True, dry_run, rules.source, results)
    if failed(results):
        outcome.changed, outcome.refused = False, True
        outcome.message = refusal(model, version, alias, results, rules.source)
        raise PromotionRejected(outcome.message, outcome)
    tags = audit.tags_for(
        by=current_user(client), alias=alias, from_version=from_version, reason=reason, rollback=rollback
    )
    outcome.tags = tags
    if dry_run:
        outcome.message = f"would move @{alias} of {model!r} to version {version}"
        return outcome
    before = dict(candidate.version_tags)
    try:
        _write_tags(client, model, version, before, tags)
    except MlflowException as exc:
        _restore(client, model, version, before)
        raise _refused(f"cannot tag {model!r} version {version}: {_message(exc)}", exc) from None
    try:
        client.set_registered_model_alias(model, alias, version)
    except MlflowException as exc:
        _restore(client, model, version, before)
        text = _message(exc)
        if (getattr(exc, "json", None) or {}).get("error_class") == PromotionRejected.SERVER_ERROR_CLASS:
            outcome.changed, outcome.refused = False, True
            outcome.message = f"the server refused: {text}"
            raise PromotionRejected(outcome.message, outcome) from None
        raise _refused(f"cannot move @{alias} of {model!r} to version {version}: {text}", exc) from None
    outcome.message = f"@{alias} of {model!r} now points at version {version}"
    return outcome


def _refused(message: str, exc: Any) -> PromotionError:
    """The error of a change the server refused: denied (exit 11) when it refused the caller."""
    if getattr(exc, "error_code", None) in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return PromotionDenied(message)
    return PromotionError(message)


def _restore(client: Any, model: str, version: str, before: Mapping[str, str]) -> None:
    """Put the audit keys back as they were (best effort: the first failure is not hidden)."""
    current = dict(client.get_model_version(model, version).tags or {})
    for key in audit.KEYS:
        if key in before:
            if current.get(key) != before[key]:
                client.set_model_version_tag(model, version, key, before[key])
        elif key in current:
            client.delete_model_version_tag(model, version, key)


def promote(
    model: str,
    version: str,
    alias: str,
    *,
    reason: str | None = None,
    policy: Policy = BUILTIN,
    dry_run: bool = False,
    client: Any | None = None,
    tracking_uri: str | None = None,
) -> Outcome:
    """Move ``@alias`` of ``model`` to ``version`` once every gate passes."""
    client = _client(client, tracking_uri)
    candidate = _read(client, model, str(version))
    holder = _holder(client, model, alias)
    return _move(client, candidate, holder, alias, reason=reason, policy=policy, dry_run=dry_run)


def rollback(
    model: str,
    alias: str,
    *,
    reason: str | None = None,
    policy: Policy = BUILTIN,
    dry_run: bool = False,
    client: Any | None = None,
    tracking_uri: str | None = None,
) -> Outcome:
    """Move ``@alias`` back to the version its current holder replaced."""
    client = _client(client, tracking_uri)
    holder = _holder(client, model, alias)
    if holder is None:
        raise PromotionError(f"@{alias} of {model!r} points at no version: nothing to roll back")
    recorded_alias = holder.version_tags.get(audit.PROMOTION_ALIAS)
    previous = holder.version_tags.get(audit.PROMOTION_FROM_VERSION)
    if not previous or (recorded_alias or "").lower() != alias.lower():
        what = (
            f"records its promotion to @{recorded_alias}, not @{alias}"
            if recorded_alias and recorded_alias.lower() != alias.lower()
            else f"records no version @{alias} held before it ({audit.PROMOTION_FROM_VERSION})"
        )
        raise PromotionError(
            f"cannot roll back @{alias} of {model!r}: version {holder.version} {what}; "
            f"promote the version you want with `mlflow-ext promote {model} <version> --to {alias}`"
        )
    candidate = _read(client, model, previous)
    reason = reason or f"rollback from version {holder.version}"
    return _move(client, candidate, holder, alias, reason=reason, policy=policy, dry_run=dry_run)


# --- report -------------------------------------------------------------------------------------


def deploy_tags(
    status: str,
    *,
    stage: str | None,
    message: str | None,
    environ: Mapping[str, str],
    at: str | None = None,
) -> dict[str, str | None]:
    """The deploy.* tags of one report; None removes a tag left by an earlier report."""
    if status not in DEPLOY_STATUSES:
        raise PromotionError(f"status must be one of {', '.join(DEPLOY_STATUSES)}, got {status!r}")
    pipeline = environ.get("GO_PIPELINE_NAME") or None
    counter = environ.get("GO_PIPELINE_COUNTER") or None
    server = environ.get("GO_SERVER_URL") or None
    url = pipeline_url(server, pipeline, counter) if server and pipeline and counter else None
    return {
        DEPLOY_STATUS: status,
        DEPLOY_AT: at or audit.now_iso(),
        DEPLOY_MESSAGE: message[:_MAX_TAG_VALUE] if message else None,
        DEPLOY_STAGE: stage or environ.get("GO_STAGE_NAME") or None,
        DEPLOY_PIPELINE: pipeline,
        DEPLOY_COUNTER: counter,
        DEPLOY_URL: url,
        DEPLOY_ALIAS: environ.get("MLFLOW_MODEL_ALIAS") or None,
    }


def report(
    model: str,
    version: str,
    status: str,
    *,
    stage: str | None = None,
    message: str | None = None,
    environ: Mapping[str, str] | None = None,
    dry_run: bool = False,
    client: Any | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Write a deployment's outcome on the version; returns what was (or would be) written."""
    from mlflow.exceptions import MlflowException

    tags = deploy_tags(
        status, stage=stage, message=message, environ=os.environ if environ is None else environ
    )
    client = _client(client, tracking_uri)
    try:
        current = dict(client.get_model_version(model, str(version)).tags or {})
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise PromotionNotFound(f"registered model {model!r} has no version {version}") from None
        raise PromotionError(f"cannot read {model!r} version {version}: {_message(exc)}") from None
    result = {
        "model": model,
        "version": str(version),
        "status": status,
        "changed": True,
        "dry_run": dry_run,
        "tags": {key: value for key, value in tags.items() if value is not None},
    }
    if not dry_run:
        try:
            _write_tags(client, model, str(version), current, tags)
        except MlflowException as exc:
            raise PromotionError(f"cannot tag {model!r} version {version}: {_message(exc)}") from None
    return result
