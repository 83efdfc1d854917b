"""Readiness and metrics on the converged host: /ready through the proxy, and how fast it follows PostgreSQL
stopping and coming back; /metrics refused to anonymous remote callers and served to admins and to loopback
scrapers, with the readiness and textfile metrics; the bridge's on its own loopback port.
Bounded: about 20 s, most of it PostgreSQL stopping and starting."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.infra.conftest import TLS_CERT

pytestmark = pytest.mark.usefixtures("converged")

SERVER = "http://127.0.0.1:5000"
BRIDGE = "http://127.0.0.1:5100"
TEXTFILE_DIR = Path("/var/lib/mlflow-platform/metrics")
POSTGRES_UNIT = "postgresql@15-main"
# The readiness promise (docs/operations.md): 503 within 2 s of PostgreSQL stopping, 200 within 5 s of it
# answering again.
READY_DOWN_SECONDS = 2.0
READY_UP_SECONDS = 5.0


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


def ready_status() -> int:
    """/ready's status through the proxy, as a load balancer or monitor sees it."""
    try:
        return https_get("/ready")[0]
    except OSError:
        return 0


def seconds_until(status: int, limit: float) -> float | None:
    """Poll /ready every 50 ms; seconds until it answers `status`, None if not within `limit`."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < limit:
        if ready_status() == status:
            return elapsed
        time.sleep(0.05)
    return None


def test_ready_follows_postgresql_down_and_back():
    """Stop PostgreSQL (systemctl returns once it is stopped), time /ready's first 503; start it (systemctl
    returns once it accepts connections), time the first 200. Prints both."""
    assert ready_status() == 200
    down = up = None
    try:
        subprocess.run(["systemctl", "stop", POSTGRES_UNIT], check=True, timeout=120)
        down = seconds_until(503, 30)
    finally:
        subprocess.run(["systemctl", "start", POSTGRES_UNIT], check=True, timeout=120)
        up = seconds_until(200, 60)
    print(f"\n/ready: 503 after {down} s of PostgreSQL stopped, 200 after {up} s of it started")
    assert down is not None and down <= READY_DOWN_SECONDS, f"/ready took {down} s to answer 503"
    assert up is not None and up <= READY_UP_SECONDS, f"/ready took {up} s to answer 200 again"


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
