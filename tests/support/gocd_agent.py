"""Playing a GoCD agent: generated pipelines run task by task, in a git checkout of the example projects.

Shared by the integration tests that run the example catalog's pipelines against a real platform:
`generate` turns a catalog into config-repo pipelines with `mlflow-ext gocd generate` (and validates them),
`make_checkout` builds the git material, `agent_env` the environment an agent's jobs inherit, and `Agent`
runs a pipeline's stages, jobs and exec tasks in order with the GO_* variables a GoCD agent sets, honouring
`run_if`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlflow_ext.clients.gocd import GoCDClient
from tests.support.bridge import GOCD_USER
from tests.support.gitrepo import git
from tests.support.services import VENV_BIN

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "gocd" / "examples" / "catalog.yaml"
GO_SERVER_URL = "https://gocd.example.com/go"


@dataclass
class TaskRun:
    stage: str
    job: str
    argv: list[str]
    run_if: str
    returncode: int | None  # None: skipped because of run_if
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0


class Agent:
    """Runs a pipeline's stages, jobs and exec tasks in order, the way a GoCD agent does.

    Manual gates after the first stage are approved through GoCD's API when a client is given; without
    one, the test itself is the approver.
    """

    def __init__(self, checkout: Path, base_env: dict[str, str], gocd: GoCDClient | None = None) -> None:
        self.checkout, self.base_env, self.gocd = checkout, base_env, gocd

    def job_env(self, pipeline: str, counter: int, stage: str, job: str, variables: dict[str, str]) -> dict:
        revision = git(self.checkout, "rev-parse", "HEAD").strip()
        return {
            **self.base_env,
            **variables,
            "GO_SERVER_URL": GO_SERVER_URL,
            "GO_PIPELINE_NAME": pipeline,
            "GO_PIPELINE_COUNTER": str(counter),
            "GO_PIPELINE_LABEL": str(counter),
            "GO_STAGE_NAME": stage,
            "GO_STAGE_COUNTER": "1",
            "GO_JOB_NAME": job,
            "GO_TRIGGER_USER": GOCD_USER,
            "GO_REVISION": revision,
            "GO_REVISION_CODE": revision,
        }

    def run(
        self, name: str, pipeline: dict[str, Any], counter: int, scheduled: dict[str, str] | None = None
    ) -> list[TaskRun]:
        """Every stage in order until one fails; manual gates after the first stage are approved through
        GoCD's API first (a schedule itself starts the first stage)."""
        variables = {key: str(value) for key, value in (pipeline.get("environment_variables") or {}).items()}
        variables.update(scheduled or {})
        runs: list[TaskRun] = []
        for index, entry in enumerate(pipeline["stages"]):
            ((stage, definition),) = entry.items()
            manual = (definition.get("approval") or {}).get("type") == "manual"
            if index > 0 and manual and self.gocd is not None:
                self.gocd.run_stage(name, counter, stage)
            stage_failed = False
            for job, job_definition in definition["jobs"].items():
                env = self.job_env(name, counter, stage, job, variables)
                job_failed = False
                for task in job_definition["tasks"]:
                    spec = task["exec"]
                    run_if = spec.get("run_if", "passed")
                    argv = [spec["command"], *spec.get("arguments", [])]
                    if (run_if == "passed" and job_failed) or (run_if == "failed" and not job_failed):
                        runs.append(TaskRun(stage, job, argv, run_if, None))
                        continue
                    started = time.monotonic()
                    result = subprocess.run(
                        argv,
                        cwd=self.checkout / spec.get("working_directory", "."),
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=900,
                        check=False,
                    )
                    runs.append(
                        TaskRun(
                            stage,
                            job,
                            argv,
                            run_if,
                            result.returncode,
                            result.stdout,
                            result.stderr,
                            round(time.monotonic() - started, 1),
                        )
                    )
                    job_failed = job_failed or result.returncode != 0
                stage_failed = stage_failed or job_failed
            if stage_failed:
                break
        return runs


def describe(runs: list[TaskRun]) -> str:
    lines = []
    for run in runs:
        state = "skipped" if run.returncode is None else f"exit {run.returncode}"
        lines.append(f"[{run.stage}] {' '.join(run.argv)} ({run.run_if}): {state}")
        if run.returncode:
            lines.append(run.stderr[-2000:])
    return "\n".join(lines)


def executed(runs: list[TaskRun]) -> list[tuple[str, str, int | None]]:
    """(stage, subcommand, exit code) of the tasks that ran."""
    return [
        (run.stage, run.argv[1] if run.argv[0] == "mlflow-ext" else "entry point", run.returncode)
        for run in runs
        if run.returncode is not None
    ]


def seconds_per_stage(runs: list[TaskRun]) -> dict[str, float]:
    """Seconds per stage of the tasks that ran, in stage order."""
    found: dict[str, float] = {}
    for run in runs:
        if run.returncode is not None:
            found[run.stage] = round(found.get(run.stage, 0.0) + run.seconds, 1)
    return found


def make_checkout(path: Path, examples: Iterable[str]) -> Path:
    """A git repository holding the example projects at their places in the platform repository."""
    for example in examples:
        shutil.copytree(
            REPO / example,
            path / example,
            ignore=shutil.ignore_patterns("mlruns", "__pycache__", "*.db", "spark-warehouse", "metastore_db"),
        )
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "ci@example.com")
    git(path, "config", "user.name", "CI")
    git(path, "remote", "add", "origin", "https://git.example.com/ml/mlflow-platform.git")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "example model projects")
    return path


def generate(workdir: Path, catalog: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`mlflow-ext gocd generate` of a catalog, then `mlflow-ext gocd validate`: every pipeline by name, and
    the routing file's text."""
    path = workdir / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    out, routes = workdir / "pipelines", workdir / "routes.yaml"
    result = subprocess.run(
        [
            str(VENV_BIN / "mlflow-ext"),
            "gocd",
            "generate",
            "--catalog",
            str(path),
            "--out",
            str(out),
            "--routes",
            str(routes),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    check = subprocess.run(
        [str(VENV_BIN / "mlflow-ext"), "gocd", "validate", str(out), "--routes", str(routes)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    pipelines: dict[str, Any] = {}
    for file in sorted(out.glob("*.gocd.yaml")):
        pipelines.update(yaml.safe_load(file.read_text())["pipelines"])
    return pipelines, routes.read_text()


def agent_env(workdir: Path, credentials: dict[str, str]) -> dict[str, str]:
    """The environment a GoCD agent's jobs inherit: this machine's, without MLflow, GoCD or AWS settings,
    plus the agent's own MLflow credentials (the pipelines carry only the tracking URI) and where the local
    deploy target keeps its deployments."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GO_", "AWS_"))}
    return env | {
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        **credentials,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_EXT_DEPLOY_ROOT": str(workdir / "deployments"),
        "MLFLOW_EXT_DEPLOY_MODE": "process",
        "HOME": str(workdir),
        # A GoCD agent keeps its pip cache between jobs: the deploy stage's venvs install from the
        # machine's (pyspark alone is a 400 MB wheel built from its sdist).
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip"),
    }


def remove_deployment(env: dict[str, str], name: str) -> None:
    """Stop and remove a local deployment (nothing happens when there is none)."""
    subprocess.run(
        [str(VENV_BIN / "mlflow-ext"), "deploy", "--name", name, "--remove"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
