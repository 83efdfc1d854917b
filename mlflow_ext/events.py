"""The webhook payloads the bridge acts on, parsed strictly: anything else is answered 4xx.

MLflow's body is ``{"entity", "action", "timestamp", "data"}``; ``timestamp`` is the ISO time MLflow sent
the event (microseconds), which orders deliveries of the same alias that arrive out of order.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from mlflow_ext.errors import EventError

ALIAS_CREATED = "model_version_alias.created"
ALIAS_DELETED = "model_version_alias.deleted"
VERSION_CREATED = "model_version.created"
TAG_SET = "model_version_tag.set"
# The events the bridge subscribes to (register-webhook) and routes.
SUBSCRIBED = (ALIAS_CREATED, ALIAS_DELETED, VERSION_CREATED, TAG_SET)
ROUTABLE = (ALIAS_CREATED, VERSION_CREATED, TAG_SET)
# Tags the platform itself writes: routing them would loop (feedback, reports, promotion audit).
RESERVED_TAG_PREFIXES = ("gocd.", "deploy.", "promotion.")

_VERSION = re.compile(r"[1-9][0-9]{0,18}")
_MAX_TEXT = 5000


@dataclass(frozen=True)
class Event:
    """One registry event. ``alias`` is set for alias events, ``tag_key``/``tag_value`` for tag events."""

    event: str
    model: str
    version: str | None = None
    alias: str | None = None
    tag_key: str | None = None
    tag_value: str | None = None
    run_id: str | None = None
    # Microseconds since the epoch, as MLflow stamped the event; None when unknown (reconcile).
    sent_us: int | None = None

    @property
    def reserved_tag(self) -> bool:
        return self.tag_key is not None and self.tag_key.startswith(RESERVED_TAG_PREFIXES)


def _text(data: dict, key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > _MAX_TEXT:
        raise EventError(422, f"data.{key} must be a non-empty string")
    return value


def _version(data: dict) -> str:
    value = data.get("version")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _VERSION.fullmatch(value):
        raise EventError(422, "data.version must be a model version number")
    return value


def _sent_us(value: object) -> int:
    if not isinstance(value, str) or len(value) > 64:
        raise EventError(422, "timestamp must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise EventError(422, "timestamp must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise EventError(422, "timestamp must carry a time zone")
    return int(moment.timestamp() * 1_000_000)


def parse(body: bytes) -> Event | None:
    """The event in a webhook body; None for well-formed events the bridge does not act on."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EventError(400, "body is not JSON") from None
    if not isinstance(document, dict):
        raise EventError(400, "body must be a JSON object")
    entity, action, data = document.get("entity"), document.get("action"), document.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not isinstance(data, dict):
        raise EventError(422, "body must have string entity and action and an object data")
    sent_us = _sent_us(document.get("timestamp"))
    name = f"{entity}.{action}"
    if name not in SUBSCRIBED:
        return None
    model = _text(data, "name")
    assert model is not None
    if name == ALIAS_CREATED:
        return Event(name, model, _version(data), alias=_text(data, "alias"), sent_us=sent_us)
    if name == ALIAS_DELETED:
        return Event(name, model, alias=_text(data, "alias"), sent_us=sent_us)
    if name == VERSION_CREATED:
        return Event(
            name, model, _version(data), run_id=_text(data, "run_id", required=False), sent_us=sent_us
        )
    value = data.get("value")
    if value is not None and (not isinstance(value, str) or len(value) > _MAX_TEXT):
        raise EventError(422, "data.value must be a string")
    return Event(name, model, _version(data), tag_key=_text(data, "key"), tag_value=value, sent_us=sent_us)
