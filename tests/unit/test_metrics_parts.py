"""The metrics endpoints' parts: textfiles, who counts as a local scraper, an outbox that is down."""

from __future__ import annotations

from pathlib import Path

from mlflow_ext.auth.metrics import is_local_scraper, textfile_metrics
from mlflow_ext.bridge import metrics as bridge_metrics


def test_textfiles_are_read_in_name_order_and_files_being_written_are_not(tmp_path: Path):
    (tmp_path / "gc.prom").write_text("mlflow_gc_last_run_success 1")
    (tmp_path / "backup.prom").write_text("mlflow_backup_last_run_success 1\n")
    (tmp_path / "backup.prom.tmp").write_text("half_written 1\n")
    (tmp_path / "notes.txt").write_text("not metrics\n")
    assert (
        textfile_metrics(str(tmp_path)) == b"mlflow_backup_last_run_success 1\nmlflow_gc_last_run_success 1\n"
    )


def test_a_missing_or_unset_textfile_directory_gives_nothing(tmp_path: Path):
    assert textfile_metrics(str(tmp_path / "missing")) == b""
    assert textfile_metrics(None) == b""


def test_only_loopback_callers_not_forwarded_by_the_proxy_are_local_scrapers():
    assert is_local_scraper({"client": ("127.0.0.1", 5555), "headers": []})
    assert is_local_scraper({"client": ("::1", 5555), "headers": []})
    assert not is_local_scraper({"client": ("10.0.0.7", 5555), "headers": []})
    assert not is_local_scraper(
        {"client": ("127.0.0.1", 5555), "headers": [(b"x-forwarded-for", b"127.0.0.1")]}
    )
    assert not is_local_scraper({"client": None, "headers": []})


def test_an_outbox_that_does_not_answer_is_reported_down_and_the_process_metrics_remain():
    def down() -> dict[str, int]:
        raise OSError("connection refused")

    text = bridge_metrics.render(down).decode()
    assert "mlflow_bridge_outbox_up 0.0" in text
    assert "mlflow_bridge_outbox_rows" not in text
    assert 'mlflow_bridge_gocd_errors_total{kind="unavailable"}' in text
    up = bridge_metrics.render(lambda: {"pending": 3, "parked": 1}).decode()
    assert 'mlflow_bridge_outbox_rows{status="parked"} 1.0' in up


def test_readiness_bounds_a_hanging_check_and_names_what_failed():
    import asyncio
    import json
    import threading
    import time

    from mlflow_ext.auth.ready import Readiness, answer

    release = threading.Event()

    def hangs() -> None:
        release.wait(5)

    def fails() -> None:
        raise OSError("connection refused to postgresql://secret@db:5432/mlflow")

    readiness = Readiness(
        {"tracking_database": lambda: None, "auth_database": fails, "artifact_store": hangs}, 0.3
    )
    started = time.monotonic()
    states = asyncio.run(readiness.states())
    took = time.monotonic() - started
    release.set()
    assert took < 1.0
    assert states == {
        "tracking_database": "ok",
        "auth_database": "unavailable",
        "artifact_store": "timed out",
    }
    status, body = answer(states)
    assert status == 503
    assert json.loads(body)["message"] == "Not ready: artifact_store timed out, auth_database unavailable."
    assert b"secret" not in body and b"5432" not in body
    assert answer({"tracking_database": "ok"})[0] == 200
