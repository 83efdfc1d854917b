"""Registering the bridge's webhook in MLflow, idempotently.

MLflow never returns a webhook's secret, so the description carries a fingerprint of it (an HMAC of a fixed
text under the secret: it identifies the secret without revealing it). Same name, URL, events, status and
fingerprint: nothing to do. Otherwise the webhook is created, or updated with the secret.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from mlflow_ext.events import SUBSCRIBED

DEFAULT_NAME = "mlflow-ext-bridge"


def fingerprint(secret: str) -> str:
    digest = hmac.new(secret.encode(), b"mlflow-ext bridge webhook secret", hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest[:16]


def description(secret: str) -> str:
    return f"mlflow-ext bridge: registry events to GoCD (secret {fingerprint(secret)})"


def _find(client: Any, name: str) -> Any:
    token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        for webhook in page:
            if webhook.name == name:
                return webhook
        token = page.token
        if not token:
            return None


def register(
    client: Any, url: str, secret: str, name: str = DEFAULT_NAME, dry_run: bool = False
) -> dict[str, Any]:
    """Create or update the webhook; ``changed`` is false when it already matched."""
    wanted_events = sorted(SUBSCRIBED)
    wanted_description = description(secret)
    existing = _find(client, name)
    if existing is None:
        webhook_id = None
        if not dry_run:
            webhook_id = client.create_webhook(
                name=name,
                url=url,
                events=wanted_events,
                description=wanted_description,
                secret=secret,
                status="ACTIVE",
            ).webhook_id
        return {
            "changed": True,
            "action": "create",
            "webhook_id": webhook_id,
            "name": name,
            "url": url,
            "events": wanted_events,
            "dry_run": dry_run,
        }
    differences = []
    if existing.url != url:
        differences.append("url")
    if sorted(str(e) for e in existing.events) != wanted_events:
        differences.append("events")
    if (existing.description or "") != wanted_description:
        differences.append("secret")
    if str(existing.status) != "ACTIVE":
        differences.append("status")
    if differences and not dry_run:
        client.update_webhook(
            existing.webhook_id,
            url=url,
            events=wanted_events,
            description=wanted_description,
            secret=secret,
            status="ACTIVE",
        )
    return {
        "changed": bool(differences),
        "action": "update" if differences else "none",
        "webhook_id": existing.webhook_id,
        "name": name,
        "url": url,
        "events": wanted_events,
        "differences": differences,
        "dry_run": dry_run,
    }
