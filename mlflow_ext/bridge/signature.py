"""Webhook authenticity: MLflow's ``X-MLflow-Signature`` scheme, checked in constant time.

MLflow signs ``"<delivery id>.<timestamp>.<raw body>"`` with HMAC-SHA256 under the webhook's secret and
sends ``v1,<base64 digest>``. A header may carry several space-separated signatures (the Standard
Webhooks convention, useful while a secret is rotated); any one matching is enough.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from mlflow_ext.errors import SignatureError

DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"
_DELIVERY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The header value MLflow would send (used by tests and benchmarks)."""
    digest = hmac.new(
        secret.encode("utf-8"), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(
    secret: str,
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    max_skew: float,
) -> tuple[str, int]:
    """Check headers, signature and freshness; return (delivery id, timestamp) or raise SignatureError.

    The signature is checked before anything derived from the body or the headers is trusted; the
    timestamp is part of the signed content, so a replayed delivery cannot be refreshed.
    """
    if not delivery_id or not timestamp or not signature:
        raise SignatureError(401, "missing webhook signature headers")
    if not _DELIVERY_ID.fullmatch(delivery_id) or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError(400, "malformed webhook delivery id or timestamp")
    expected = sign(secret, delivery_id, timestamp, body).encode("ascii")
    matched = False
    for candidate in signature.split():
        # Compare every candidate, whatever the outcome, in constant time.
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    if not matched:
        raise SignatureError(401, "webhook signature does not match")
    sent = int(timestamp)
    if abs(now - sent) > max_skew:
        raise SignatureError(401, "webhook timestamp is outside the accepted window")
    return delivery_id, sent
