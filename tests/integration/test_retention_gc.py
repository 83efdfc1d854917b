"""The retention role's gc job (ansible/roles/retention/files/mlflow_platform_gc.py) against a real platform.

It runs with the server's own environment, as the mlflow-gc unit does with the server's env file."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.services import VENV_BIN, Platform

GC = Path(__file__).parents[2] / "ansible/roles/retention/files/mlflow_platform_gc.py"
DAY_MS = 86_400_000


def run_gc(platform: Platform, days: str, metrics: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "python"), str(GC), "--older-than-days", days, "--metrics-file", str(metrics)],
        env={"PATH": os.environ["PATH"], **platform.server.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def objects(platform: Platform, prefix: str) -> list[str]:
    listing = platform.s3.client().list_objects_v2(Bucket=platform.bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def run_prefix(run) -> str:
    # mlflow-artifacts:/EXPERIMENT/RUN/artifacts -> EXPERIMENT/RUN/artifacts/ in the bucket
    return run.info.artifact_uri.split(":", 1)[1].lstrip("/") + "/"


@pytest.fixture
def client(platform, monkeypatch):
    for name, value in platform.client_env().items():
        monkeypatch.setenv(name, value)
    from mlflow import MlflowClient

    return MlflowClient()


def logged_run(client, experiment_id: str, tmp: Path):
    run = client.create_run(experiment_id)
    artifact = tmp / f"{run.info.run_id}.txt"
    artifact.write_text("model bytes")
    client.log_artifact(run.info.run_id, str(artifact))
    client.log_metric(run.info.run_id, "loss", 0.5)
    return client.get_run(run.info.run_id)


def test_gc_removes_what_was_deleted_long_ago_with_its_artifacts_keeps_the_rest(platform, client, tmp_path):
    from mlflow.exceptions import MlflowException

    experiment = client.create_experiment("retention-gc")
    old, recent, live = (logged_run(client, experiment, tmp_path) for _ in range(3))
    client.delete_run(old.info.run_id)
    client.delete_run(recent.info.run_id)
    # Deleted "long ago": 40 days before the job's 30-day limit, straight in the tracking database.
    platform.postgres.psql(  # the ids are MLflow's own: hex and digits
        f"UPDATE runs SET deleted_time = deleted_time - {40 * DAY_MS} WHERE run_uuid = '{old.info.run_id}'",  # noqa: S608
        database="mlflow",
    )
    gone_experiment = client.create_experiment("retention-gc-deleted")
    gone_run = logged_run(client, gone_experiment, tmp_path)
    client.delete_experiment(gone_experiment)
    # Deleting the experiment deleted its runs at the same moment: both happened long ago.
    platform.postgres.psql(
        f"UPDATE experiments SET last_update_time = last_update_time - {40 * DAY_MS} "  # noqa: S608
        f"WHERE experiment_id = {int(gone_experiment)}; "
        f"UPDATE runs SET deleted_time = deleted_time - {40 * DAY_MS} "
        f"WHERE experiment_id = {int(gone_experiment)}",
        database="mlflow",
    )
    for run in (old, recent, live, gone_run):
        assert objects(platform, run_prefix(run)), "the test's artifacts were not uploaded"

    metrics = tmp_path / "gc.prom"
    result = run_gc(platform, "30", metrics)

    assert result.returncode == 0, result.stderr
    assert f"Run with ID {old.info.run_id} has been permanently deleted." in result.stdout
    assert f"Experiment with ID {gone_experiment} has been permanently deleted." in result.stdout
    for run in (old, gone_run):
        with pytest.raises(MlflowException, match=r"not found|does not exist|RESOURCE_DOES_NOT_EXIST"):
            client.get_run(run.info.run_id)
        assert objects(platform, run_prefix(run)) == []
    for run in (recent, live):
        assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
        assert objects(platform, run_prefix(run)) == [run_prefix(run) + f"{run.info.run_id}.txt"]
    assert client.get_run(recent.info.run_id).info.lifecycle_stage == "deleted"
    text = metrics.read_text()
    assert "mlflow_gc_last_run_success 1\n" in text
    assert "mlflow_gc_deleted_runs 2\n" in text and "mlflow_gc_deleted_experiments 1\n" in text
    assert "mlflow_gc_last_success_timestamp_seconds " in text

    # A second run finds nothing more to do and says so.
    again = run_gc(platform, "30", metrics)
    assert again.returncode == 0, again.stderr
    assert "0 runs and 0 experiments deleted" in again.stdout
    assert client.get_run(recent.info.run_id).info.lifecycle_stage == "deleted"


@pytest.mark.parametrize("days", ["thirty", "-1", "nan", ""])
def test_an_age_that_is_not_a_number_of_days_fails_clearly_and_deletes_nothing(platform, client, days):
    experiment = client.create_experiment(f"retention-gc-bad-{days or 'empty'}")
    run = client.create_run(experiment)
    client.delete_run(run.info.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "gc.prom"
        result = run_gc(platform, days, metrics)
        assert result.returncode == 2
        assert "retention_gc_older_than_days" in result.stderr and f"got {days!r}" in result.stderr
        assert "mlflow_gc_last_run_success 0\n" in metrics.read_text()
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
