"""End to end, playing the GoCD agent: the generated pipelines of the example catalog, run task by task.

Every model project of the catalog goes through the same steps (the tests are parametrized by project:
iris-classifier with scikit-learn, fasttext-classifier a fastText pyfunc, spark-classifier a Spark MLlib
pipeline), sharing one platform, fake GoCD, bridge and checkout:

1. `mlflow-ext gocd generate` turns gocd/examples/catalog.yaml (pointed at a git checkout of the example
   projects, the test platform and a free port per production deployment) into YAML config-repo pipelines and
   the bridge's routing file.
2. The build pipeline's `exec` tasks run in order in the checkout with the GO_* variables a GoCD agent sets:
   train (the example's entry point), register, evaluate.
3. `mlflow-ext promote` moves @production to the new version; the MLflow server's webhook reaches
   `mlflow-ext bridge serve` (a real subprocess), which schedules the release pipeline on the fake GoCD.
4. The release pipeline's tasks run with the variables the fake recorded for that schedule, honouring
   `run_if` and approving the production deploy gate through GoCD's API: verify-data, evaluate, deploy (a
   real venv, served as a supervised process), smoke-test, report. The model answers on its endpoint and
   the version carries deploy.status=deployed.
5. A second release after the test data's schema changed (a column renamed) stops at verify-data, and its
   `run_if: failed` task records deploy.status=failed with the stage.

Each task's time is recorded; the module prints a table of seconds per stage and project at the end (`-s`).
Bounded: one venv per requirements set (the deploy target caches it per deployment; pip uses the machine's
cache), Spark in local mode with one core, 512 MB driver, no web UI and loopback addresses only in the
stage processes, and each project's deployment is removed once its tests are done.
"""

from __future__ import annotations

import json
import shutil
import socket
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
from tests.support import gocd_agent
from tests.support.bridge import GOCD_USER, Bridge, webhook_env
from tests.support.fake_gocd import FakeGoCD
from tests.support.gitrepo import git
from tests.support.gocd_agent import (
    CATALOG,
    Agent,
    TaskRun,
    describe,
    executed,
    make_checkout,
    seconds_per_stage,
)
from tests.support.services import Platform, free_ports, running_platform

pytestmark = pytest.mark.integration

TOKEN = "gocd-token-for-the-agent-play-0123"
# Spark in the stage processes (evaluate and smoke-test load the model through pyfunc): bounded, no web UI,
# nothing listening beyond the loopback interface.
SPARK_UI_PORT = 4040  # Spark's default
SPARK_ENV = {
    "SPARK_LOCAL_IP": "127.0.0.1",
    "PYSPARK_SUBMIT_ARGS": (
        "--master local[1] --driver-memory 512m --conf spark.ui.enabled=false pyspark-shell"
    ),
}


@dataclass(frozen=True)
class Project:
    """A model project of the catalog and what its served model must answer."""

    model: str
    example: str
    rows: list[dict[str, Any]]  # sent to the deployment's /invocations
    answers: list[Any]  # what it must predict for them
    renamed: tuple[str, str]  # the test data's column renamed for the bad-input release

    @property
    def build(self) -> str:
        return f"{self.model}-build"

    @property
    def release(self) -> str:
        return f"{self.model}-release-production"

    @property
    def deployment(self) -> str:
        return f"{self.model}-production"


PROJECTS = [
    Project(
        "iris-classifier",
        "examples/iris-classifier",
        [{"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}],
        ["virginica"],
        ("petal_width", "petal_width_cm"),
    ),
    Project(
        "fasttext-classifier",
        "examples/fasttext-classifier",
        [
            {"text": "hello my parcel never arrived where is it"},
            {"text": "my invoice is wrong please refund me"},
        ],
        ["shipping", "billing"],
        ("text", "ticket"),
    ),
    Project(
        "spark-classifier",
        "examples/spark-classifier",
        [
            {"tenure_months": 2, "monthly_charge": 115.0, "support_calls": 6, "contract": "monthly"},
            {"tenure_months": 70, "monthly_charge": 20.0, "support_calls": 0, "contract": "two-year"},
        ],
        ["leaves", "stays"],
        ("contract", "contract_type"),
    ),
]


@dataclass
class World:
    platform: Platform
    gocd: FakeGoCD
    bridge: Bridge
    agent: Agent
    checkout: Path
    pipelines: dict[str, Any]
    ports: dict[str, int]  # production deployment's port per model
    client: Any
    timings: dict[str, dict[str, float]]  # model -> "<pipeline part>/<stage>" -> seconds

    def record(self, project: Project, part: str, seconds: dict[str, float]) -> None:
        self.timings.setdefault(project.model, {}).update(
            {f"{part}/{stage}": value for stage, value in seconds.items()}
        )


def timing_table(timings: dict[str, dict[str, float]]) -> str:
    steps = list(dict.fromkeys(step for found in timings.values() for step in found))
    models = list(timings)
    lines = ["seconds per stage".ljust(24) + "".join(model.rjust(21) for model in models)]
    for step in steps:
        cells = "".join(
            (f"{timings[model][step]:.1f}" if step in timings[model] else "-").rjust(21) for model in models
        )
        lines.append(step.ljust(24) + cells)
    totals = "".join(f"{sum(timings[model].values()):.1f}".rjust(21) for model in models)
    lines.append("total".ljust(24) + totals)
    return "\n".join(lines)


def generate(workdir: Path, tracking_uri: str, ports: dict[str, int]) -> tuple[dict[str, Any], str]:
    """The example catalog, pointed at this test's platform and ports, through `mlflow-ext gocd generate`."""
    catalog = yaml.safe_load(CATALOG.read_text())
    catalog["tracking_uri"] = tracking_uri
    assert {entry["name"] for entry in catalog["models"]} == set(ports), (
        "a catalog model without a project here"
    )
    for entry in catalog["models"]:
        entry["aliases"]["production"]["deploy"] = {"port": ports[entry["name"]]}
    return gocd_agent.generate(workdir, catalog)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("agentplay")
    checkout = make_checkout(workdir / "checkout", [project.example for project in PROJECTS])
    ports = dict(zip([project.model for project in PROJECTS], free_ports(len(PROJECTS)), strict=True))
    timings: dict[str, dict[str, float]] = {}
    started = time.monotonic()
    with running_platform(extra_env=webhook_env()) as platform, FakeGoCD(tokens={TOKEN: GOCD_USER}) as gocd:
        pipelines, routes = generate(workdir, platform.tracking_uri, ports)
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
        agent_env = (
            gocd_agent.agent_env(
                workdir,
                {
                    # The agent's own MLflow account; the pipelines carry only the tracking URI.
                    "MLFLOW_TRACKING_USERNAME": platform.admin_username,
                    "MLFLOW_TRACKING_PASSWORD": platform.admin_password,
                },
            )
            | SPARK_ENV
        )
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
                    ports,
                    MlflowClient(tracking_uri=platform.tracking_uri),
                    timings,
                )
        finally:
            for project in PROJECTS:
                remove_deployment(agent_env, project)
            bridge.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)
            if timings:
                print(f"\n{timing_table(timings)}\nmodule: {time.monotonic() - started:.0f} s")


def remove_deployment(env: dict[str, str], project: Project) -> None:
    gocd_agent.remove_deployment(env, project.deployment)


@pytest.fixture(scope="module", params=PROJECTS, ids=[project.model for project in PROJECTS])
def project(request: pytest.FixtureRequest, world: World) -> Iterator[Project]:
    yield request.param
    # Done with this project: its served model (a JVM for Spark) stops before the next one starts.
    remove_deployment(world.agent.base_env, request.param)


@pytest.fixture(scope="module")
def built(world: World, project: Project) -> list[TaskRun]:
    runs = world.agent.run(project.build, world.pipelines[project.build], counter=1)
    world.record(project, "build", seconds_per_stage(runs))
    return runs


def test_the_build_pipeline_trains_registers_and_evaluates(world, project, built):
    build, model = project.build, project.model
    assert executed(built) == [
        ("train", "entry point", 0),
        ("register", "register", 0),
        ("evaluate", "evaluate", 0),
    ], describe(built)
    version = world.client.get_model_version(model, "1")
    assert version.tags["build.pipeline"] == build and version.tags["build.counter"] == "1"
    assert version.tags["evaluation.status"] == "passed"
    run = world.client.get_run(version.run_id)
    assert run.data.tags["lineage.ci.pipeline"] == build
    assert run.data.tags["lineage.ci.stage"] == "train"
    assert run.data.tags["lineage.code.commit"] == git(world.checkout, "rev-parse", "HEAD").strip()
    assert run.data.tags["lineage.data.test.csv.role"] == "test"


@pytest.fixture(scope="module")
def scheduled(world: World, project: Project, built: list[TaskRun]):
    model, release = project.model, project.release
    started = time.monotonic()
    result = subprocess.run(
        [
            "mlflow-ext",
            "promote",
            model,
            "1",
            "--to",
            "production",
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
    (schedule,) = world.gocd.wait_for_schedules(1, release, timeout=60)
    world.record(project, "promote", {"to-schedule": round(time.monotonic() - started, 1)})
    return schedule


def test_the_bridge_schedules_the_release_with_every_variable(world, project, scheduled):
    model = project.model
    assert scheduled.approver == GOCD_USER
    version = world.client.get_model_version(model, "1")
    assert scheduled.variables == {
        "MLFLOW_MODEL_NAME": model,
        "MLFLOW_MODEL_VERSION": "1",
        "MLFLOW_MODEL_ALIAS": "production",
        "MLFLOW_RUN_ID": version.run_id,
        "MLFLOW_MODEL_URI": f"models:/{model}/1",
        "MLFLOW_TRACKING_URI": world.platform.tracking_uri,
    }


@pytest.fixture(scope="module")
def released(world: World, project: Project, scheduled) -> list[TaskRun]:
    runs = world.agent.run(
        project.release, world.pipelines[project.release], scheduled.counter, scheduled.variables
    )
    world.record(project, "release", seconds_per_stage(runs))
    print(
        f"\n{project.model}: " + ", ".join(f"{k} {v:.1f}s" for k, v in world.timings[project.model].items())
    )
    return runs


def test_the_release_pipeline_deploys_and_reports(world, project, scheduled, released):
    model, release = project.model, project.release
    assert executed(released) == [
        ("verify-data", "verify-data", 0),
        ("evaluate", "evaluate", 0),
        ("deploy", "deploy", 0),
        ("smoke-test", "smoke-test", 0),
        ("report", "report", 0),
    ], describe(released)
    assert all(run.returncode is None for run in released if run.run_if == "failed")
    # The production deploy gate was approved through GoCD's API before the stage ran.
    instance = GoCDClient(world.gocd.url, token=TOKEN).instance(release, scheduled.counter)
    deploy_stage = next(stage for stage in instance["stages"] if stage["name"] == "deploy")
    assert deploy_stage["approval_type"] == "manual" and deploy_stage["approved_by"] == GOCD_USER

    tags = world.client.get_model_version(model, "1").tags
    assert tags["deploy.status"] == "deployed"
    assert tags["deploy.pipeline"] == release and tags["deploy.counter"] == str(scheduled.counter)
    assert tags["deploy.name"] == f"{model}-production" and tags["deploy.target"] == "local"
    assert tags["deploy.endpoint"] == f"http://127.0.0.1:{world.ports[model]}"
    assert tags["evaluation.status"] == "passed"

    answer = requests.post(
        f"{tags['deploy.endpoint']}/invocations", json={"dataframe_records": project.rows}, timeout=60
    ).json()
    assert answer == {"predictions": project.answers}
    # The served model opens no port but its own: a Spark model's JVM would add its web UI on every interface.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", SPARK_UI_PORT), timeout=5).close()


def test_a_release_on_test_data_of_another_schema_stops_at_verify_data_and_says_so(world, project, released):
    model, release = project.model, project.release
    data = world.checkout / project.example / "data" / "test.csv"
    header, rest = data.read_text().split("\n", 1)
    before, after = project.renamed
    assert before in header.split(",")
    data.write_text(
        ",".join(after if column == before else column for column in header.split(",")) + "\n" + rest
    )
    git(world.checkout, "commit", "-q", "-am", f"{model}: rename a test data column")
    variables = {
        "MLFLOW_MODEL_NAME": model,
        "MLFLOW_MODEL_VERSION": "1",
        "MLFLOW_MODEL_ALIAS": "production",
        "MLFLOW_RUN_ID": "",
        "MLFLOW_MODEL_URI": f"models:/{model}/1",
        "MLFLOW_TRACKING_URI": world.platform.tracking_uri,
    }
    world.agent.gocd.schedule(release, variables)
    schedule = world.gocd.wait_for_schedules(2, release)[-1]
    runs = world.agent.run(release, world.pipelines[release], schedule.counter, schedule.variables)
    world.record(project, "bad input", seconds_per_stage(runs))
    assert executed(runs) == [("verify-data", "verify-data", 7), ("verify-data", "report", 0)], describe(runs)
    assert f"column added: {after}" in runs[0].stderr and f"column removed: {before}" in runs[0].stderr
    tags = world.client.get_model_version(model, "1").tags
    assert tags["deploy.status"] == "failed" and tags["deploy.stage"] == "verify-data"
    assert tags["deploy.counter"] == str(schedule.counter)
    # The running deployment was not touched.
    assert requests.get(f"http://127.0.0.1:{world.ports[model]}/ping", timeout=10).status_code == 200
