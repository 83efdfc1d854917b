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
import threading
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


class ReadyWatch:
    """Polls /ready every 50 ms in a thread and records when each status was first seen after a mark."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.seen.append((time.monotonic(), ready_status()))
            time.sleep(0.05)

    def first(self, status: int, since: float, limit: float) -> float | None:
        """Seconds from `since` to the first answer `status` after it, waiting up to `limit` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            found = [at for at, seen in list(self.seen) if at >= since and seen == status]
            if found:
                return found[0] - since
            time.sleep(0.05)
        return None


def test_ready_follows_postgresql_down_and_back():
    """Poll /ready through the proxy while PostgreSQL stops (systemctl returns once it is stopped) and starts
    (systemctl returns once it accepts connections): 503 within 2 s of the stop, 200 within 5 s of the start.
    Prints the times from when each command was issued and from when it returned."""
    assert ready_status() == 200
    watch = ReadyWatch()
    watch.thread.start()
    stop_issued = stop_done = start_issued = start_done = 0.0
    try:
        stop_issued = time.monotonic()
        subprocess.run(["systemctl", "stop", POSTGRES_UNIT], check=True, timeout=120)
        stop_done = time.monotonic()
        down = watch.first(503, stop_issued, 30)
    finally:
        start_issued = time.monotonic()
        subprocess.run(["systemctl", "start", POSTGRES_UNIT], check=True, timeout=120)
        start_done = time.monotonic()
        up = watch.first(200, start_issued, 60)
        watch.stop.set()
        watch.thread.join(10)
    print(
        f"\n/ready: PostgreSQL's stop took {stop_done - stop_issued:.2f} s, 503 seen {down} s after it began;"
        f" its start took {start_done - start_issued:.2f} s, 200 seen {up} s after it began"
    )
    assert down is not None and down - (stop_done - stop_issued) <= READY_DOWN_SECONDS, f"503 after {down} s"
    assert up is not None and up - (start_done - start_issued) <= READY_UP_SECONDS, f"200 after {up} s"


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
