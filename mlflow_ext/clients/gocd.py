"""The GoCD REST client: schedule pipelines, read their status and history, approve manual stages.

GoCD versions every endpoint through the Accept header (a wrong version is a 404), wants JSON bodies
declared as such (else 415) and a ``X-GoCD-Confirm: true`` header on a POST without body (else 400).
Failures come out as two errors: GoCDUnavailable when retrying later can help (no answer, timeout, 5xx)
and GoCDRejected with GoCD's own message when it cannot (4xx). The token never appears in either.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote

import requests

from mlflow_ext.errors import ConfigError, GoCDRejected, GoCDUnavailable

# Accept versions per endpoint, from https://api.gocd.org/current/ (pipeline_operations v1,
# pipeline_instance v1, stage_operations v2).
PIPELINE_API = 1
STAGE_API = 2


class GoCDClient:
    """One GoCD server, one keep-alive session. ``base_url`` may end in ``/go`` or not."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError("The GoCD URL must start with http:// or https://")
        base = base_url.rstrip("/")
        self.base_url = base[: -len("/go")] if base.endswith("/go") else base
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "mlflow-ext-gocd-client"
        if token:
            self._auth = "bearer"
            self._session.headers["Authorization"] = f"bearer {token}"
        elif username:
            if password is None:
                raise ConfigError("GoCD basic auth needs a password along with the user name")
            self._auth = "basic"
            self._session.auth = (username, password)
        else:
            self._auth = "none"

    def __repr__(self) -> str:
        return f"GoCDClient(base_url={self.base_url!r}, auth={self._auth!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> GoCDClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- pipelines ---------------------------------------------------------------------------------

    def schedule(self, pipeline: str, variables: Mapping[str, str], secure: Collection[str] = ()) -> str:
        """Trigger ``pipeline`` with these environment variables (names in ``secure`` sent as secure);
        returns GoCD's message. Every name must be declared by the pipeline, or GoCD answers 422."""
        body = {
            "environment_variables": [
                {"name": name, "value": value, "secure": name in secure} for name, value in variables.items()
            ],
            "update_materials_before_scheduling": True,
        }
        return self._post(_pipeline_path(pipeline, "schedule"), PIPELINE_API, pipeline, body)

    def status(self, pipeline: str) -> dict[str, Any]:
        """``{"paused", "paused_cause", "paused_by", "locked", "schedulable"}``."""
        return self._call("GET", _pipeline_path(pipeline, "status"), PIPELINE_API, pipeline)

    def history(self, pipeline: str, page_size: int = 10) -> list[dict[str, Any]]:
        """The newest ``page_size`` instances (GoCD accepts 10 to 100), newest first."""
        path = f"{_pipeline_path(pipeline, 'history')}?page_size={int(page_size)}"
        return list(self._call("GET", path, PIPELINE_API, pipeline)["pipelines"])

    def instance(self, pipeline: str, counter: int) -> dict[str, Any]:
        return self._call("GET", _pipeline_path(pipeline, str(int(counter))), PIPELINE_API, pipeline)

    def run_stage(self, pipeline: str, counter: int, stage: str) -> str:
        """Run (approve) a stage of an instance, e.g. a manual deploy gate; returns GoCD's message."""
        path = f"/go/api/stages/{_segment(pipeline)}/{int(counter)}/{_segment(stage)}/run"
        return self._post(path, STAGE_API, pipeline)

    def pause(self, pipeline: str, cause: str) -> str:
        return self._post(_pipeline_path(pipeline, "pause"), PIPELINE_API, pipeline, {"pause_cause": cause})

    def unpause(self, pipeline: str) -> str:
        return self._post(_pipeline_path(pipeline, "unpause"), PIPELINE_API, pipeline)

    def instance_url(self, pipeline: str, counter: int) -> str:
        """A link for people: the instance's value stream map in GoCD's UI."""
        return f"{self.base_url}/go/pipelines/value_stream_map/{_segment(pipeline)}/{int(counter)}"

    # -- transport ---------------------------------------------------------------------------------

    def _post(self, path: str, version: int, pipeline: str, body: dict[str, Any] | None = None) -> str:
        return str(self._call("POST", path, version, pipeline, body)["message"])

    def _call(
        self, method: str, path: str, version: int, pipeline: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"Accept": f"application/vnd.go.cd.v{version}+json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        elif method == "POST":
            headers["X-GoCD-Confirm"] = "true"
        url = self.base_url + path
        try:
            response = self._session.request(
                method, url, headers=headers, data=data, timeout=self.timeout, allow_redirects=False
            )
        except requests.Timeout as exc:
            raise GoCDUnavailable(f"GoCD at {self.base_url} did not answer within {self.timeout:g}s") from exc
        except requests.RequestException as exc:
            raise GoCDUnavailable(f"GoCD at {self.base_url} is unreachable ({type(exc).__name__})") from exc
        status = response.status_code
        if status >= 500:
            raise GoCDUnavailable(f"GoCD answered {status} for pipeline {pipeline}: {_message(response)}")
        # 4xx, and redirects too (a wrong URL, a login page): retrying the same request cannot help.
        if status >= 300:
            raise GoCDRejected(status, _message(response), pipeline)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise GoCDUnavailable(f"GoCD answered {status} for pipeline {pipeline} without a JSON object")
        return payload


def _pipeline_path(pipeline: str, tail: str) -> str:
    return f"/go/api/pipelines/{_segment(pipeline)}/{tail}"


def _segment(name: str) -> str:
    return quote(name, safe="")


def _message(response: requests.Response) -> str:
    """GoCD's error text: the ``message`` of its JSON body, else the start of whatever it sent."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("message"):
        return str(payload["message"])
    text = " ".join(response.text.split())[:200]
    return text or response.reason or f"HTTP {response.status_code}"
