"""Retention after the converge: the gc job on its timer, log rotation, private logs; timers fire.

Bounded: about 30 s (one gc run, which loads MLflow, and a probe timer that fires within seconds)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.infra.conftest import MLFLOW_ENV_FILE

pytestmark = pytest.mark.usefixtures("converged")

GC_PROM = "/var/lib/mlflow-platform/metrics/gc.prom"
LOGROTATE_CONF = "/etc/logrotate.d/mlflow-platform"
UNIT_LOGS = "/var/log/journal"


def test_gc_timer_is_installed_and_enabled(host):
    timer = host.file("/etc/systemd/system/mlflow-gc.timer")
    assert timer.exists and re.search(r"(?m)^OnCalendar=\S", timer.content_string)
    assert host.run("systemctl is-enabled mlflow-gc.timer").stdout.strip() == "enabled"
    unit = host.file("/etc/systemd/system/mlflow-gc.service").content_string
    # The server's own configuration, not a copy of its secrets; hardened as the services are.
    assert f"EnvironmentFile={MLFLOW_ENV_FILE}" in unit and "User=mlflow" in unit
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
        assert line in unit
    assert not re.search(r"(?m)^Environment=", unit)


def test_one_run_of_the_gc_service_succeeds_and_records_it(host):
    started = time.time()
    result = host.run("timeout 120 systemctl start mlflow-gc")
    assert result.rc == 0, result.stderr
    metrics = host.file(GC_PROM).content_string
    assert re.search(r"(?m)^mlflow_gc_last_run_success 1$", metrics), metrics
    stamp = re.search(r"(?m)^mlflow_gc_last_success_timestamp_seconds (\d+)$", metrics)
    assert stamp and int(stamp.group(1)) >= int(started)
    log = host.file(f"{UNIT_LOGS}/mlflow-gc.service.log").content_string
    assert "runs and 0 experiments deleted for good" in log or "experiments deleted for good" in log


def test_logrotate_accepts_the_configuration(host):
    result = host.run(f"logrotate -d {LOGROTATE_CONF}")
    assert result.rc == 0, result.stderr
    assert f"{UNIT_LOGS}/mlflow-server.service.log" in result.stderr + result.stdout
    assert host.run("systemctl is-enabled logrotate.timer").stdout.strip() == "enabled"


def test_the_audit_log_is_readable_by_root_and_adm_only(host):
    env = dict(
        line.split("=", 1) for line in host.file(MLFLOW_ENV_FILE).content_string.splitlines() if "=" in line
    )
    destination = env["MLFLOW_EXT_AUDIT_LOG"]
    # stderr: the server's unit log, which the systemctl replacement writes.
    path = f"{UNIT_LOGS}/mlflow-server.service.log" if destination == "stderr" else destination
    audit = host.file(path)
    assert audit.exists
    assert audit.group == "adm" and audit.mode & 0o777 == 0o640, (path, oct(audit.mode), audit.group)
    # Nobody else can read it.
    assert host.run(f"su -s /bin/sh -c 'cat {path}' nobody").rc != 0


def test_an_enabled_timer_starts_its_service_when_it_elapses(host, tmp_path: Path):
    """The systemctl replacement ignores timers; the systemd_compat supervisor fires them."""
    name = "mlflow-platform-timer-probe"
    marker = f"/run/{name}.fired"
    units = {
        f"/etc/systemd/system/{name}.service": f"[Service]\nType=oneshot\nExecStart=/bin/touch {marker}\n",
        f"/etc/systemd/system/{name}.timer": "[Timer]\nOnCalendar=*:*:*\n[Install]\nWantedBy=timers.target\n",
    }
    try:
        for path, text in units.items():
            Path(path).write_text(text)
        host.run(f"rm -f {marker}")
        assert host.run(f"systemctl enable {name}.timer").rc == 0
        # Twice: a oneshot that ran is inactive again, not "up once" for good.
        for elapse in ("first", "second"):
            deadline = time.monotonic() + 15
            while not host.file(marker).exists and time.monotonic() < deadline:
                time.sleep(0.5)
            assert host.file(marker).exists, (
                f"the {elapse} elapse did not start the timer's service within 15 s"
            )
            host.run(f"rm -f {marker}")
    finally:
        host.run(f"systemctl disable {name}.timer")
        time.sleep(2)  # a start the supervisor began before the disable ends first
        for path in units:
            Path(path).unlink(missing_ok=True)
        host.run(f"rm -f {marker} /var/lib/systemd/timers/stamp-{name}.timer")
