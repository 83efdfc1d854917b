"""Readiness and metrics on the converged host: /ready through the proxy, /metrics refused to anonymous
remote callers and served to admins and to loopback scrapers, with the readiness and textfile metrics; the
bridge's on its own loopback port.
Bounded: a few requests, about 2 s."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.request
from pathlib import Path

import pytest

from tests.infra.conftest import TLS_CERT

pytestmark = pytest.mark.usefixtures("converged")

SERVER = "http://127.0.0.1:5000"
BRIDGE = "http://127.0.0.1:5100"
TEXTFILE_DIR = Path("/var/lib/mlflow-platform/metrics")


def https_get(path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=TLS_CERT)
    connection = http.client.HTTPSConnection("localhost", 443, timeout=10, context=context)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read().decode()


def local_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def test_ready_through_the_proxy_without_credentials():
    status, body = https_get("/ready")
    assert status == 200, body
    assert json.loads(body)["checks"] == {
        "tracking_database": "ok",
        "auth_database": "ok",
        "artifact_store": "ok",
    }


def test_metrics_are_refused_to_anonymous_callers_through_the_proxy():
    status, body = https_get("/metrics")
    assert status == 401
    assert "mlflow_server_ready" not in body


def test_metrics_are_served_to_an_admin_through_the_proxy(secrets_dir):
    password = (secrets_dir / "mlflow_admin_password").read_text().strip()
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    status, body = https_get("/metrics", {"Authorization": f"Basic {token}"})
    assert status == 200
    assert 'mlflow_server_ready{store="tracking_database"} 1' in body


def test_metrics_on_loopback_carry_the_server_and_the_textfiles():
    probe = TEXTFILE_DIR / "zz-infra-test.prom"
    probe.write_text("mlflow_platform_infra_probe 1\n")
    try:
        server = local_get(SERVER + "/metrics")
    finally:
        probe.unlink()
    assert 'mlflow_server_ready{store="artifact_store"} 1' in server
    assert "mlflow_http_request_total" in server
    assert "mlflow_platform_infra_probe 1" in server
    backup = TEXTFILE_DIR / "backup.prom"
    if backup.exists():
        assert "mlflow_backup_last_run_success" in server


def test_bridge_metrics_on_loopback():
    """The converge of this suite points the bridge at the fake GoCD, so it runs (see conftest)."""
    bridge = local_get(BRIDGE + "/metrics")
    assert "mlflow_bridge_outbox_up 1.0" in bridge
    assert 'mlflow_bridge_outbox_rows{status="parked"}' in bridge
    assert "mlflow_bridge_delivery_latency_seconds_bucket" in bridge
