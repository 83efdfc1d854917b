"""Which promotion policy `mlflow-ext promote` and `rollback` check: a file, the server's, or the built-in.

``--policy FILE`` (or ``MLFLOW_EXT_PROMOTION_POLICY``) always wins. Without it the server's effective
policy is read from the auth app (mlflow_ext.policy.served), so a client that cannot read the server's
file still checks the gates the server will check, before it writes a tag or moves an alias. Only when
the server has no policy (or serves none: another auth app, or none) does the built-in policy apply.
Every outcome says which one was used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from mlflow_ext.errors import ConfigError, PromotionError
from mlflow_ext.policy import rules, served

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChosenPolicy:
    policy: rules.Policy
    origin: str  # "file", "server" or "built-in"
    path: str | None  # the file (on this host for "file", on the server for "server")
    sha256: str | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "path": self.path,
            "sha256": self.sha256,
            "description": self.describe(),
        }

    def describe(self) -> str:
        if self.origin == "file":
            return f"the file {self.path} (sha256 {self.sha256})"
        if self.origin == "server":
            return f"the server's policy {self.path} (sha256 {self.sha256})"
        return f"the built-in policy ({self.note})" if self.note else "the built-in policy"


def from_file(path: str) -> ChosenPolicy:
    text = rules.read_text(path)
    return ChosenPolicy(rules.load(path), "file", path, served.sha256(text))


def fetch(tracking_uri: str | None) -> tuple[served.ServedPolicy | None, str]:
    """The server's policy, or None and why there is none. Raises when the server cannot tell."""
    from mlflow.tracking import get_tracking_uri
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    uri = tracking_uri or get_tracking_uri()
    if not uri or not uri.startswith(("http://", "https://")):
        return None, f"the tracking URI {uri!r} is no server"
    try:
        response = http_request(
            get_default_host_creds(uri), served.PATH, "GET", max_retries=0, raise_on_status=False
        )
    except Exception as exc:
        raise PromotionError(
            f"cannot reach {uri} to read its promotion policy: {type(exc).__name__}"
        ) from None
    if response.status_code == 404:
        return None, "the server serves no promotion policy"
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        message = (body.get("message") if isinstance(body, dict) else None) or response.text[:300]
        if isinstance(body, dict) and body.get("error_code") == "INVALID_STATE":
            raise ConfigError(f"the server's promotion policy is not usable: {message}")
        raise PromotionError(
            f"cannot read the server's promotion policy (HTTP {response.status_code}): {message}; "
            "name a policy file with --policy to go on without it"
        )
    document = served.from_document(body)
    return document, "" if document is not None else "the server has no promotion policy"


def choose(policy_path: str | None, tracking_uri: str | None) -> ChosenPolicy:
    """The policy to check: ``policy_path`` if given, else the server's, else the built-in one."""
    if policy_path:
        return from_file(policy_path)
    document, why = fetch(tracking_uri)
    if document is None:
        _logger.debug("built-in promotion policy: %s", why)
        return ChosenPolicy(rules.BUILTIN, "built-in", None, None, why)
    return ChosenPolicy(document.policy, "server", document.path, document.sha256)
