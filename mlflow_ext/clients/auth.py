"""A small client for the auth REST API (MLflow's users and grants, and ours), used by the CLI.

Credentials come the way every MLflow client takes them: ``MLFLOW_TRACKING_TOKEN`` (Bearer) or
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``; TLS options from ``MLFLOW_TRACKING_*``.
"""

from __future__ import annotations

from typing import Any

from mlflow_ext.clients import tracking
from mlflow_ext.errors import AuthApiError


class AuthClient:
    def __init__(self, tracking_uri: str, username: str | None = None, password: str | None = None) -> None:
        from mlflow.utils.credentials import get_default_host_creds

        creds = get_default_host_creds(tracking_uri)
        if username is not None and password is not None:
            creds.username, creds.password, creds.token = username, password, None
        self.creds = creds

    def call(self, method: str, endpoint: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        from mlflow.utils.rest_utils import http_request

        payload = {k: v for k, v in (payload or {}).items() if v is not None}
        kwargs: dict[str, Any] = {"params": payload} if method == "GET" else {"json": payload}
        try:
            response = http_request(
                self.creds, endpoint, method, max_retries=0, raise_on_status=False, **kwargs
            )
        except Exception as exc:
            # The server answered the CLI's check a moment ago: say what broke, as that check would.
            raise AuthApiError(tracking.describe_failure(self.creds.host, exc)) from None
        if response.status_code >= 400:
            try:
                body = response.json()
                message = body.get("message") or response.text
            except ValueError:
                message = response.text
            raise AuthApiError(f"{method} {endpoint}: HTTP {response.status_code}: {message.strip()[:500]}")
        try:
            data = response.json() if response.text.strip() else {}
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {"result": data}
