"""End to end, playing the GoCD agent: the generated pipelines of the example catalog, run task by task.

1. `mlflow-ext gocd generate` turns gocd/examples/catalog.yaml (pointed at a git checkout of the example
   project, the test platform and a free port) into YAML config-repo pipelines and the bridge's routing file.
2. The build pipeline's `exec` tasks run in order in the checkout with the GO_* variables a GoCD agent sets:
   train (the example's entry point), register, evaluate.
3. `mlflow-ext promote` moves @champion to the new version; the MLflow server's webhook reaches
   `mlflow-ext bridge serve` (a real subprocess), which schedules the release pipeline on the fake GoCD.
4. The release pipeline's tasks run with the variables the fake recorded for that schedule, honouring
   `run_if` and approving the production deploy gate through GoCD's API: verify-data, evaluate, deploy (a
   real venv, served as a supervised process), smoke-test, report. The model answers on its endpoint and
   the version carries deploy.status=deployed.
5. A second release after the test data changed stops at verify-data, and its `run_if: failed` task records
   deploy.status=failed with the stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from mlflow_ext.clients.gocd import GoCDClient
from tests.support.bridge import GOCD_USER, Bridge, webhook_env
from tests.support.fake_gocd import FakeGoCD
from tests.support.gitrepo import git
from tests.support.services import VENV_BIN, Platform, free_ports, running_platform

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "gocd" / "examples" / "catalog.yaml"
EXAMPLE = "examples/iris-classifier"
MODEL = "iris-classifier"
BUILD = f"{MODEL}-build"
RELEASE = f"{MODEL}-release-champion"
TOKEN = "gocd-token-for-the-agent-play-0123"
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


class Agent:
    """Runs a pipeline's stages, jobs and exec tasks in order, the way a GoCD agent does."""

    def __init__(self, checkout: Path, base_env: dict[str, str], gocd: GoCDClient) -> None:
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
            if index > 0 and (definition.get("approval") or {}).get("type") == "manual":
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
                        TaskRun(stage, job, argv, run_if, result.returncode, result.stdout, result.stderr)
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


@dataclass
class World:
    platform: Platform
    gocd: FakeGoCD
    bridge: Bridge
    agent: Agent
    checkout: Path
    pipelines: dict[str, Any]
    port: int
    client: Any


def make_checkout(path: Path) -> Path:
    """A git repository holding the example project at its place in the platform repository."""
    target = path / EXAMPLE
    shutil.copytree(REPO / EXAMPLE, target, ignore=shutil.ignore_patterns("mlruns", "__pycache__", "*.db"))
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "ci@example.com")
    git(path, "config", "user.name", "CI")
    git(path, "remote", "add", "origin", "https://git.example.com/ml/mlflow-platform.git")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "iris classifier")
    return path


def generate(workdir: Path, tracking_uri: str, port: int) -> tuple[dict[str, Any], str]:
    """The example catalog, pointed at this test's platform and port, through `mlflow-ext gocd generate`."""
    catalog = yaml.safe_load(CATALOG.read_text())
    catalog["tracking_uri"] = tracking_uri
    entry = next(model for model in catalog["models"] if model["name"] == MODEL)
    entry["aliases"]["champion"]["deploy"] = {"port": port}
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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("agentplay")
    checkout = make_checkout(workdir / "checkout")
    (port,) = free_ports(1)
    with running_platform(extra_env=webhook_env()) as platform, FakeGoCD(tokens={TOKEN: GOCD_USER}) as gocd:
        pipelines, routes = generate(workdir, platform.tracking_uri, port)
        for name, pipeline in pipelines.items():
            stages = [next(iter(entry)) for entry in pipeline["stages"]]
            manual = [
                stage
                for index, (stage, entry) in enumerate(zip(stages, pipeline["stages"], strict=True))
                if index > 0 and (entry[stage].get("approval") or {}).get("type") == "manual"
            ]
            gocd.add_pipeline(
                name, variables=pipeline.get("environment_variables") or {}, stages=stages, manual=manual
            )
        bridge = Bridge(
            platform,
            gocd.url,
            TOKEN,
            routes,
            extra_env={"MLFLOW_EXT_BRIDGE_PUBLIC_TRACKING_URI": platform.tracking_uri},
        ).prepare()
        bridge.start()
        time.sleep(2)  # MLflow's per-worker webhook cache (TTL 1 s) forgets the empty list
        agent_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GO_", "AWS_"))}
        agent_env |= {
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            # The agent's own MLflow account; the pipelines carry only the tracking URI.
            "MLFLOW_TRACKING_USERNAME": platform.admin_username,
            "MLFLOW_TRACKING_PASSWORD": platform.admin_password,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_EXT_DEPLOY_ROOT": str(workdir / "deployments"),
            "MLFLOW_EXT_DEPLOY_MODE": "process",
            "HOME": str(workdir),
        }
        from mlflow import MlflowClient

        from tests.support.environ import patched_environ

        try:
            with patched_environ(platform.client_env()):
                yield World(
                    platform,
                    gocd,
                    bridge,
                    Agent(checkout, agent_env, GoCDClient(gocd.url, token=TOKEN)),
                    checkout,
                    pipelines,
                    port,
                    MlflowClient(tracking_uri=platform.tracking_uri),
                )
        finally:
            subprocess.run(
                [str(VENV_BIN / "mlflow-ext"), "deploy", "--name", f"{MODEL}-champion", "--remove"],
                env=agent_env,
                capture_output=True,
                check=False,
            )
            bridge.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def built(world: World) -> list[TaskRun]:
    return world.agent.run(BUILD, world.pipelines[BUILD], counter=1)


def test_the_build_pipeline_trains_registers_and_evaluates(world, built):
    assert executed(built) == [
        ("train", "entry point", 0),
        ("register", "register", 0),
        ("evaluate", "evaluate", 0),
    ], describe(built)
    version = world.client.get_model_version(MODEL, "1")
    assert version.tags["build.pipeline"] == BUILD and version.tags["build.counter"] == "1"
    assert version.tags["evaluation.status"] == "passed"
    run = world.client.get_run(version.run_id)
    assert run.data.tags["lineage.ci.pipeline"] == BUILD
    assert run.data.tags["lineage.ci.stage"] == "train"
    assert run.data.tags["lineage.code.commit"] == git(world.checkout, "rev-parse", "HEAD").strip()
    assert run.data.tags["lineage.data.test.csv.role"] == "test"


@pytest.fixture(scope="module")
def scheduled(world: World, built: list[TaskRun]):
    result = subprocess.run(
        [
            "mlflow-ext",
            "promote",
            MODEL,
            "1",
            "--to",
            "champion",
            "--reason",
            "first model",
            "--output",
            "json",
        ],
        env={**world.agent.base_env, "MLFLOW_TRACKING_URI": world.platform.tracking_uri},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["changed"] is True
    (schedule,) = world.gocd.wait_for_schedules(1, RELEASE, timeout=60)
    return schedule


def test_the_bridge_schedules_the_release_with_every_variable(world, scheduled):
    assert scheduled.approver == GOCD_USER
    version = world.client.get_model_version(MODEL, "1")
    assert scheduled.variables == {
        "MLFLOW_MODEL_NAME": MODEL,
        "MLFLOW_MODEL_VERSION": "1",
        "MLFLOW_MODEL_ALIAS": "champion",
        "MLFLOW_RUN_ID": version.run_id,
        "MLFLOW_MODEL_URI": f"models:/{MODEL}/1",
        "MLFLOW_TRACKING_URI": world.platform.tracking_uri,
    }


@pytest.fixture(scope="module")
def released(world: World, scheduled) -> list[TaskRun]:
    return world.agent.run(RELEASE, world.pipelines[RELEASE], scheduled.counter, scheduled.variables)


def test_the_release_pipeline_deploys_and_reports(world, scheduled, released):
    assert executed(released) == [
        ("verify-data", "verify-data", 0),
        ("evaluate", "evaluate", 0),
        ("deploy", "deploy", 0),
        ("smoke-test", "smoke-test", 0),
        ("report", "report", 0),
    ], describe(released)
    assert all(run.returncode is None for run in released if run.run_if == "failed")
    # The production deploy gate was approved through GoCD's API before the stage ran.
    instance = GoCDClient(world.gocd.url, token=TOKEN).instance(RELEASE, scheduled.counter)
    deploy_stage = next(stage for stage in instance["stages"] if stage["name"] == "deploy")
    assert deploy_stage["approval_type"] == "manual" and deploy_stage["approved_by"] == GOCD_USER

    tags = world.client.get_model_version(MODEL, "1").tags
    assert tags["deploy.status"] == "deployed"
    assert tags["deploy.pipeline"] == RELEASE and tags["deploy.counter"] == str(scheduled.counter)
    assert tags["deploy.name"] == f"{MODEL}-champion" and tags["deploy.target"] == "local"
    assert tags["deploy.endpoint"] == f"http://127.0.0.1:{world.port}"
    assert tags["evaluation.status"] == "passed"

    row = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
    answer = requests.post(
        f"{tags['deploy.endpoint']}/invocations", json={"dataframe_records": [row]}, timeout=30
    ).json()
    assert answer == {"predictions": ["virginica"]}


def test_a_release_on_changed_test_data_stops_at_verify_data_and_says_so(world, released):
    data = world.checkout / EXAMPLE / "data" / "test.csv"
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:-1]) + "\n")  # one row fewer
    git(world.checkout, "commit", "-q", "-am", "drop a test row")
    variables = {
        "MLFLOW_MODEL_NAME": MODEL,
        "MLFLOW_MODEL_VERSION": "1",
        "MLFLOW_MODEL_ALIAS": "champion",
        "MLFLOW_RUN_ID": "",
        "MLFLOW_MODEL_URI": f"models:/{MODEL}/1",
        "MLFLOW_TRACKING_URI": world.platform.tracking_uri,
    }
    world.agent.gocd.schedule(RELEASE, variables)
    schedule = world.gocd.wait_for_schedules(2, RELEASE)[-1]
    runs = world.agent.run(RELEASE, world.pipelines[RELEASE], schedule.counter, schedule.variables)
    assert executed(runs) == [("verify-data", "verify-data", 7), ("verify-data", "report", 0)], describe(runs)
    assert "rows: recorded 30, found 29 (-1)" in runs[0].stderr
    tags = world.client.get_model_version(MODEL, "1").tags
    assert tags["deploy.status"] == "failed" and tags["deploy.stage"] == "verify-data"
    assert tags["deploy.counter"] == str(schedule.counter)
    # The running deployment was not touched.
    assert requests.get(f"http://127.0.0.1:{world.port}/ping", timeout=10).status_code == 200
