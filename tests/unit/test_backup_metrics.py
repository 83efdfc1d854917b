"""backup.prom as the backup program writes it: one file for every kind, a failure keeps the last success."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = (
    Path(__file__).resolve().parents[2]
    / "ansible"
    / "roles"
    / "backup"
    / "files"
    / "mlflow_platform_backup.py"
)


def _program():
    spec = importlib.util.spec_from_file_location("mlflow_platform_backup", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _samples(path: Path) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in path.read_text().splitlines() if not line.startswith("#"))


def test_each_kind_keeps_the_others_and_a_failure_keeps_the_last_success(tmp_path):
    program = _program()
    metrics = tmp_path / "metrics" / "backup.prom"
    program.record(str(metrics), "postgres", True)
    program.record(str(metrics), "artifacts", True)
    first = _samples(metrics)
    program.record(str(metrics), "postgres", False)
    after = _samples(metrics)
    assert after['mlflow_backup_last_run_success{kind="postgres"}'] == "0"
    assert after['mlflow_backup_last_run_success{kind="artifacts"}'] == "1"
    success = 'mlflow_backup_last_success_timestamp_seconds{kind="postgres"}'
    assert after[success] == first[success]
    assert metrics.stat().st_mode & 0o777 == 0o644


def test_a_failed_run_exits_1_says_why_and_records_0(tmp_path, capsys):
    program = _program()
    config = tmp_path / "backup.json"
    config.write_text(
        '{"secrets_paths": ["/nonexistent/secrets"], "secrets_location": "/backups/secrets",'
        f' "metrics_file": "{tmp_path}/backup.prom"}}'
    )
    assert program.main(["--config", str(config), "secrets"]) == 1
    assert "secrets: FAILED: none of secrets_paths exists" in capsys.readouterr().err
    assert 'mlflow_backup_last_run_success{kind="secrets"} 0' in (tmp_path / "backup.prom").read_text()
