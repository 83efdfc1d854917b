"""Permanently delete runs and experiments deleted longer ago than a number of days, with their artifacts;
installed by the retention role, run by the mlflow-gc service with the tracking server's environment file.

  mlflow-platform-gc --older-than-days DAYS --metrics-file FILE

It runs MLflow's own `mlflow gc` in this process, against the server's tracking database
(MLFLOW_BACKEND_STORE_URI, password from PGPASSFILE), and resolves the runs' `mlflow-artifacts:/` URIs to the
server's MLFLOW_ARTIFACTS_DESTINATION, as the server does, so the artifacts are deleted straight from the
store (AWS_* and MLFLOW_S3_ENDPOINT_URL) without going through the server or its auth. Each removed run and
experiment is printed (the unit's log); the outcome goes to the Prometheus text file FILE:
mlflow_gc_last_run_success, mlflow_gc_last_run_timestamp_seconds, mlflow_gc_last_success_timestamp_seconds,
mlflow_gc_deleted_runs and mlflow_gc_deleted_experiments (of the last run). Exit 0 on success, 1 when the
collection failed, 2 on bad configuration, each with a message on stderr naming the problem.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

REQUIRED_ENV = ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION")
DELETED_LINE = re.compile(r"^(Run|Experiment) with ID \S+ has been permanently deleted\.$", re.MULTILINE)


class ConfigError(Exception):
    """The job's configuration is unusable; the message names the setting."""


def parse_days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not math.isfinite(days) or days < 0:
        raise ConfigError(
            f"--older-than-days (retention_gc_older_than_days) must be a number of days >= 0, got {text!r}"
        )
    return days


def older_than(days: float) -> str:
    """`mlflow gc --older-than` for DAYS: whole seconds, which its parser takes exactly."""
    return f"{round(days * 86400)}s"


def use_artifacts_destination(destination: str) -> None:
    """Resolve mlflow-artifacts:/PATH to DESTINATION/PATH, as the server's artifact proxy does."""
    from mlflow.store.artifact.artifact_repository_registry import (
        _artifact_repository_registry,
        get_artifact_repository,
    )

    def destination_repository(artifact_uri: str, *_: object, **__: object) -> object:
        path = urlparse(artifact_uri).path.lstrip("/")
        return get_artifact_repository(destination.rstrip("/") + "/" + path)

    _artifact_repository_registry.register("mlflow-artifacts", destination_repository)


def collect(days: float) -> str:
    """Run MLflow's gc; returns what it printed (also printed here). Raises on failure."""
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not set: run with the tracking server's environment file")
    from mlflow.cli import gc

    use_artifacts_destination(os.environ["MLFLOW_ARTIFACTS_DESTINATION"])
    backend = os.environ["MLFLOW_BACKEND_STORE_URI"]
    printed = io.StringIO()
    out = sys.stdout

    class Tee(io.TextIOBase):
        def write(self, text: str) -> int:
            printed.write(text)
            return out.write(text)

    with contextlib.redirect_stdout(Tee()):
        gc.main(
            ["--older-than", older_than(days), "--backend-store-uri", backend, "--tracking-uri", backend],
            prog_name="mlflow gc",
            standalone_mode=False,
        )
    sys.stdout.flush()
    return printed.getvalue()


def previous_success(metrics_file: Path) -> str | None:
    with contextlib.suppress(OSError):
        match = re.search(
            r"^mlflow_gc_last_success_timestamp_seconds (\S+)$", metrics_file.read_text(), re.MULTILINE
        )
        if match:
            return match.group(1)
    return None


def write_metrics(metrics_file: Path, ok: bool, runs: int, experiments: int) -> None:
    now = f"{time.time():.0f}"
    success = now if ok else previous_success(metrics_file)
    lines = [
        "# HELP mlflow_gc_last_run_success 1 if the last mlflow gc run succeeded, 0 if it failed.",
        "# TYPE mlflow_gc_last_run_success gauge",
        f"mlflow_gc_last_run_success {int(ok)}",
        "# HELP mlflow_gc_last_run_timestamp_seconds When the last mlflow gc run ended.",
        "# TYPE mlflow_gc_last_run_timestamp_seconds gauge",
        f"mlflow_gc_last_run_timestamp_seconds {now}",
    ]
    if success is not None:
        lines += [
            "# HELP mlflow_gc_last_success_timestamp_seconds When the last successful mlflow gc run ended.",
            "# TYPE mlflow_gc_last_success_timestamp_seconds gauge",
            f"mlflow_gc_last_success_timestamp_seconds {success}",
        ]
    lines += [
        "# HELP mlflow_gc_deleted_runs Runs the last mlflow gc run deleted for good.",
        "# TYPE mlflow_gc_deleted_runs gauge",
        f"mlflow_gc_deleted_runs {runs}",
        "# HELP mlflow_gc_deleted_experiments Experiments the last mlflow gc run deleted for good.",
        "# TYPE mlflow_gc_deleted_experiments gauge",
        f"mlflow_gc_deleted_experiments {experiments}",
    ]
    # The job runs as the server's user, which may write this file but not its directory: rewritten in
    # place, in one write.
    fd = os.open(metrics_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, ("\n".join(lines) + "\n").encode())
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow-platform-gc", description=__doc__.splitlines()[0])
    parser.add_argument("--older-than-days", required=True, help="days since a run or experiment was deleted")
    parser.add_argument(
        "--metrics-file", required=True, type=Path, help="Prometheus text file of the outcome"
    )
    args = parser.parse_args(argv)
    runs = experiments = 0
    try:
        days = parse_days(args.older_than_days)
        print(f"mlflow gc: deleting runs and experiments deleted more than {days:g} days ago", flush=True)
        printed = collect(days)
        kinds = DELETED_LINE.findall(printed)
        runs, experiments = kinds.count("Run"), kinds.count("Experiment")
    except ConfigError as error:
        print(f"mlflow-platform-gc: bad configuration: {error}", file=sys.stderr)
        write_metrics(args.metrics_file, False, 0, 0)
        return 2
    except Exception as error:  # anything MLflow, the database or the store raised: recorded, then exit 1
        print(f"mlflow-platform-gc: mlflow gc failed: {type(error).__name__}: {error}", file=sys.stderr)
        write_metrics(args.metrics_file, False, 0, 0)
        return 1
    print(f"mlflow gc: done, {runs} runs and {experiments} experiments deleted for good", flush=True)
    write_metrics(args.metrics_file, True, runs, experiments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
