"""Clients never get presigned URLs of an artifact store only the servers reach: downloads go through the
server.

The platform's store listens where only its servers reach it (here 127.0.0.1, elsewhere a private address or
compose's ``seaweedfs:8333``). A presigned URL on that endpoint sends a client on another host to its own
loopback, and its model download never finishes."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
import requests
from flask import Flask
from mlflow import MlflowClient

from mlflow_ext import artifact_access
from tests.support.environ import patched_environ

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def logged(platform, tmp_path_factory):
    payload = os.urandom(3 * 2**20)
    path = tmp_path_factory.mktemp("artifact-access") / "model.bin"
    path.write_bytes(payload)
    with patched_environ(platform.client_env()):
        client = MlflowClient()
        experiment_id = client.create_experiment(f"access-{uuid.uuid4().hex[:8]}")
        run_id = client.create_run(experiment_id).info.run_id
        client.log_artifact(run_id, str(path), artifact_path="weights")
    return experiment_id, run_id, payload


def _get(platform, path: str) -> requests.Response:
    return requests.get(
        platform.tracking_uri + path, auth=(platform.admin_username, platform.admin_password), timeout=30
    )


def test_the_server_advertises_no_presigned_transfers(platform):
    info = _get(platform, "/api/3.0/mlflow/server-info")
    assert info.status_code == 200
    body = info.json()
    assert body["multipart_downloads_enabled"] is False
    assert body["multipart_uploads_enabled"] is False
    assert body["store_type"] == "SqlStore"  # the rest of MLflow's answer is untouched


def test_a_presigned_download_url_is_refused_with_not_implemented(platform, logged):
    experiment_id, run_id, _ = logged
    answer = _get(
        platform, f"/api/2.0/mlflow-artifacts/presigned/{experiment_id}/{run_id}/artifacts/weights/model.bin"
    )
    assert answer.status_code == 501
    assert answer.json()["error_code"] == "NOT_IMPLEMENTED"
    assert platform.s3.endpoint_url not in answer.text


def test_a_presigned_download_needs_credentials_first(platform, logged):
    experiment_id, run_id, _ = logged
    answer = requests.get(
        f"{platform.tracking_uri}/api/2.0/mlflow-artifacts/presigned/{experiment_id}/{run_id}/artifacts/weights/model.bin",
        timeout=30,
    )
    assert answer.status_code == 401


@pytest.mark.parametrize("forced", [None, "true"])
def test_a_client_downloads_through_the_server_even_when_it_asks_for_multipart(
    platform, logged, tmp_path, forced
):
    _, run_id, payload = logged
    env = platform.client_env() | ({"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": forced} if forced else {})
    with patched_environ(env):
        downloaded = MlflowClient().download_artifacts(run_id, "weights/model.bin", str(tmp_path))
    with open(downloaded, "rb") as handle:
        assert hashlib.sha256(handle.read()).digest() == hashlib.sha256(payload).digest()


def _app(environ: dict[str, str]) -> Flask:
    app = Flask(__name__)
    # As MLflow before 3.17 serves it: from Flask.
    app.add_url_rule("/api/3.0/mlflow/server-info", "info", lambda: {"multipart_downloads_enabled": True})
    app.add_url_rule(
        "/api/2.0/mlflow-artifacts/presigned/<path:p>", "presigned", lambda p: {"url": "http://s3/x"}
    )
    artifact_access.install(app, environ)
    return app


def test_the_setting_turns_presigned_urls_back_on_for_stores_clients_reach(monkeypatch):
    withheld: list[tuple[str, ...]] = []
    monkeypatch.setattr(artifact_access.mlflow_internals, "withhold_server_capabilities", withheld.append)
    on = _app({artifact_access.SETTING: "true"}).test_client()
    assert on.get("/api/2.0/mlflow-artifacts/presigned/1/r/artifacts/m").status_code == 200
    assert on.get("/api/3.0/mlflow/server-info").json == {"multipart_downloads_enabled": True}
    assert withheld == []
    off = _app({}).test_client()
    assert off.get("/api/2.0/mlflow-artifacts/presigned/1/r/artifacts/m").status_code == 501
    assert off.get("/api/3.0/mlflow/server-info").json["multipart_downloads_enabled"] is False
    assert withheld == [artifact_access.CAPABILITIES]
