"""The server's effective promotion policy, as the auth app serves it and ``mlflow-ext promote`` reads it.

The policy file is usually readable only by the server's group, so a client cannot read it; the server
serves it instead, read only, to any authenticated user: ``GET /api/2.0/mlflow-ext/promotion/policy``
answers ``{"policy": null}`` when the server has no policy (``MLFLOW_EXT_PROMOTION_POLICY`` unset), or
``{"policy": {"path", "yaml", "sha256"}}``: the file's path on the server, its YAML text exactly as the
server parses it, and the SHA-256 of that text. The client parses the same text with the same code, so
it checks exactly the gates the server will check, and its rules name the server's file in messages.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from mlflow_ext.errors import ConfigError
from mlflow_ext.policy import rules

PATH = "/api/2.0/mlflow-ext/promotion/policy"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def document(path: str | None) -> dict[str, Any]:
    """The route's answer for the policy file at ``path`` (None: none). ConfigError if it does not load."""
    if not path:
        return {"policy": None}
    text = rules.read_text(path)
    rules.from_text(text, path)  # served only if the server itself can use it
    return {"policy": {"path": path, "yaml": text, "sha256": sha256(text)}}


@dataclass(frozen=True)
class ServedPolicy:
    policy: rules.Policy
    path: str  # on the server
    sha256: str


def from_document(body: Any) -> ServedPolicy | None:
    """Parse the route's answer; None when the server has no policy. ConfigError when it is unusable."""
    if not isinstance(body, dict) or "policy" not in body:
        raise ConfigError("the server's promotion policy answer is not {'policy': ...}")
    served = body["policy"]
    if served is None:
        return None
    if not isinstance(served, dict) or not all(
        isinstance(served.get(k), str) for k in ("path", "yaml", "sha256")
    ):
        raise ConfigError("the server's promotion policy answer lacks path, yaml or sha256")
    if sha256(served["yaml"]) != served["sha256"]:
        raise ConfigError(f"the server's promotion policy {served['path']} does not match its sha256")
    return ServedPolicy(rules.from_text(served["yaml"], served["path"]), served["path"], served["sha256"])
