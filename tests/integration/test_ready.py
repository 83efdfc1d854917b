"""Readiness and metrics of a real server (auth on, Postgres and SeaweedFS of its own).

``/ready`` must follow the stores: 503 within 2 s of PostgreSQL stopping, 200 within 5 s of it coming
back, 503 when the bucket hangs; anonymous, and naming no address, database or bucket. ``/metrics`` is
served to a local scraper and to an admin, with the textfile metrics, and refused to anyone else.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import requests

from mlflow_ext.auth.ready import CACHE_SECONDS
from tests.support.services import Platform, running_platform

pytestmark = pytest.mark.integration

DOWN_LIMIT_SECONDS = 2.0
UP_LIMIT_SECONDS = 5.0
POLL_SECONDS = 0.05
TEXTFILE = 'mlflow_backup_last_run_success{kind="postgres"} 1\n'


@pytest.fixture(scope="module")
def own_platform(tmp_path_factory) -> Iterator[Platform]:
    textfiles = tmp_path_factory.mktemp("metrics")
    (textfiles / "backup.prom").write_text(TEXTFILE)
    (textfiles / "backup.prom.tmp").write_text("half_written_metric 1\n")
    multiprocess = tmp_path_factory.mktemp("prometheus")
    env = {"MLFLOW_EXT_METRICS_TEXTFILE_DIR": str(textfiles), "MLFLOW_EXPOSE_PROMETHEUS": str(multiprocess)}
    with running_platform(extra_env=env) as started:
        yield started


def ready(platform: Platform) -> requests.Response:
    return requests.get(platform.tracking_uri + "/ready", timeout=10)


def seconds_until(platform: Platform, status: int, limit: float) -> tuple[float, requests.Response]:
    """Seconds from now until /ready answers ``status``, and that answer; fails past ``limit`` (plus a
    margin, so that the measured time is reported)."""
    start = time.monotonic()
    while time.monotonic() - start < limit + 5:
        answer = ready(platform)
        if answer.status_code == status:
            return time.monotonic() - start, answer
        time.sleep(POLL_SECONDS)
    pytest.fail(f"/ready did not answer {status} within {limit + 5:.0f} s")


def assert_leaks_nothing(platform: Platform, text: str) -> None:
    for secret in (
        platform.bucket,
        str(platform.postgres.port),
        str(platform.s3.port),
        "postgresql",
        "mlflow_auth",
    ):
        assert secret not in text


def test_ready_when_every_store_answers(own_platform):
    answer = ready(own_platform)
    assert answer.status_code == 200, answer.text
    assert answer.json()["checks"] == {
        "tracking_database": "ok",
        "auth_database": "ok",
        "artifact_store": "ok",
    }
    assert requests.get(own_platform.tracking_uri + "/health", timeout=10).status_code == 200


def test_ready_follows_postgres_down_and_up(own_platform):
    platform = own_platform
    assert ready(platform).status_code == 200
    platform.postgres.halt()
    try:
        down, answer = seconds_until(platform, 503, DOWN_LIMIT_SECONDS)
        body = answer.json()
        assert body["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert body["checks"]["tracking_database"] != "ok"
        assert body["checks"]["auth_database"] != "ok"
        assert body["checks"]["artifact_store"] == "ok"
        assert "tracking_database" in body["message"] and "auth_database" in body["message"]
        assert_leaks_nothing(platform, answer.text)
    finally:
        platform.postgres.resume()
    up, _ = seconds_until(platform, 200, UP_LIMIT_SECONDS)
    print(f"\n/ready: 503 {down:.2f} s after PostgreSQL stopped, 200 {up:.2f} s after it was back")
    assert down <= DOWN_LIMIT_SECONDS
    assert up <= UP_LIMIT_SECONDS


def test_ready_is_503_while_the_bucket_hangs(own_platform):
    platform = own_platform
    assert platform.s3.process is not None
    seconds_until(platform, 200, UP_LIMIT_SECONDS)
    os.killpg(platform.s3.process.pid, signal.SIGSTOP)
    try:
        time.sleep(CACHE_SECONDS)  # no worker answers from an outcome older than the hang
        started = time.monotonic()
        answer = ready(platform)
        took = time.monotonic() - started
    finally:
        os.killpg(platform.s3.process.pid, signal.SIGCONT)
    assert answer.status_code == 503, answer.text
    assert answer.json()["checks"]["artifact_store"] == "timed out", answer.text
    assert answer.json()["checks"]["tracking_database"] == "ok"
    assert took < 2.0, f"/ready took {took:.2f} s with a hanging bucket"
    assert_leaks_nothing(platform, answer.text)
    seconds_until(platform, 200, UP_LIMIT_SECONDS)


def test_metrics_served_to_local_scrapers_and_admins_only(own_platform):
    platform = own_platform
    url = platform.tracking_uri + "/metrics"
    requests.get(platform.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    # Each worker's gauge holds its own last check: one that last saw an earlier test's hanging bucket says
    # so until it checks again, which a /ready on it does.
    deadline = time.monotonic() + 10
    while True:
        local = requests.get(url, timeout=10)
        if 'mlflow_server_ready{store="artifact_store"} 1' in local.text or time.monotonic() > deadline:
            break
        ready(platform)
        time.sleep(CACHE_SECONDS / 4)
    assert local.status_code == 200
    assert TEXTFILE in local.text
    assert "half_written_metric" not in local.text
    assert "mlflow_http_request_total" in local.text
    assert 'mlflow_server_ready{store="tracking_database"} 1' in local.text
    assert 'mlflow_server_ready{store="artifact_store"} 1' in local.text

    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    anonymous = requests.get(url, headers=forwarded, timeout=10)
    assert anonymous.status_code == 401
    assert TEXTFILE not in anonymous.text

    admin = requests.get(
        url, headers=forwarded, auth=(platform.admin_username, platform.admin_password), timeout=10
    )
    assert admin.status_code == 200
    assert TEXTFILE in admin.text
    assert "mlflow_http_request_total" in admin.text
