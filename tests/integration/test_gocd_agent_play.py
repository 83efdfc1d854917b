"""End to end, playing the GoCD agent: the generated pipelines of the example catalog, run task by task.

Every model project of the catalog goes through the same steps (the tests are parametrized by project:
iris-classifier with scikit-learn, fasttext-classifier a fastText pyfunc, spark-classifier a Spark MLlib
pipeline), sharing one platform, fake GoCD, bridge and checkout. The agent is the `gocd` service account
exactly as the mlflow_server role provisions it (its rights, its promote right on the catalog's models, and
the server's protected aliases, default permission and promotion policy, all from the role's defaults):

1. `mlflow-ext gocd generate` turns gocd/examples/catalog.yaml (pointed at a git checkout of the example
   projects, the test platform and a free port per production deployment) into YAML config-repo pipelines and
   the bridge's routing file.
2. The build pipeline's `exec` tasks run in order in the checkout with the GO_* variables a GoCD agent sets:
   train (the example's entry point), register, evaluate.
3. `mlflow-ext promote`, as gocd, moves @production to the new version through the server's promotion
   gates; the MLflow server's webhook reaches `mlflow-ext bridge serve` (a real subprocess), which schedules
   the release pipeline on the fake GoCD.
4. The release pipeline's tasks run with the variables the fake recorded for that schedule, honouring
   `run_if` and approving the production deploy gate through GoCD's API: verify-data, evaluate, deploy (a
   real venv, served as a supervised process), smoke-test, report. The model answers on its endpoint and
   the version carries deploy.status=deployed.
5. A second release after the test data's schema changed (a column renamed) stops at verify-data, and its
   `run_if: failed` task records deploy.status=failed with the stage.

Nothing less than the role's rights would do: an account provisioned by the same command without them is
refused with 403 at the build's first stage, and gocd may not move the protected alias of a model outside
its list.

Each task's time is recorded; the module prints a table of seconds per stage and project at the end (`-s`).
Bounded: one venv per requirements set (the deploy target caches it per deployment; pip uses the machine's
cache), Spark in local mode with one core, 512 MB driver, no web UI and loopback addresses only in the
stage processes, and each project's deployment is removed once its tests are done.
"""

from __future__ import annotations

import json
import re
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
from mlflow_ext.errors import ExitCode
from tests.support import gocd_account, gocd_agent
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
from tests.support.lineage import POLICY_LINEAGE
from tests.support.services import VENV_BIN, Platform, free_ports, running_platform

pytestmark = pytest.mark.integration

TOKEN = "gocd-token-for-the-agent-play-0123"  # the fake GoCD's API token (the bridge's and the approver's)
DENIED = re.compile(r"403|PERMISSION_DENIED|Permission denied")
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
    agent: Agent  # the gocd account's agent
    bare: Agent  # the same, for an account provisioned by the same command without the role's rights
    account: dict[str, Any]  # the role's gocd entry
    report: dict[str, Any]  # what provisioning it did
    checkout: Path
    pipelines: dict[str, Any]
    ports: dict[str, int]  # production deployment's port per model
    client: Any  # the admin's
    timings: dict[str, dict[str, float]]  # model -> "<pipeline part>/<stage>" -> seconds
    promotions: dict[str, dict[str, Any]]  # model -> what `mlflow-ext promote --output json` answered

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
    server_env = webhook_env() | gocd_account.role_server_env(workdir)
    with running_platform(extra_env=server_env) as platform, FakeGoCD(tokens={TOKEN: GOCD_USER}) as gocd:
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

        account = gocd_account.role_gocd_account()
        argv = gocd_account.provision_argv(account, platform.server.env_file, workdir / "gocd_token")
        report = gocd_account.provision(argv)
        assert gocd_account.provision(argv)["changed"] is False  # a second converge changes nothing
        bare = {"username": "gocd-without-rights", "token_name": account["token_name"]}
        gocd_account.provision(
            gocd_account.provision_argv(bare, platform.server.env_file, workdir / "bare_token")
        )

        def agent_env(token_file: str) -> dict[str, str]:
            # The agent's own MLflow account; the pipelines carry only the tracking URI.
            token = (workdir / token_file).read_text().strip()
            return gocd_agent.agent_env(workdir, {"MLFLOW_TRACKING_TOKEN": token}) | SPARK_ENV

        gocd_env = agent_env("gocd_token")

        from mlflow import MlflowClient

        from tests.support.environ import patched_environ

        try:
            with patched_environ(platform.client_env()):
                yield World(
                    platform,
                    gocd,
                    bridge,
                    Agent(checkout, gocd_env, GoCDClient(gocd.url, token=TOKEN)),
                    Agent(checkout, agent_env("bare_token")),
                    account,
                    report,
                    checkout,
                    pipelines,
                    ports,
                    MlflowClient(tracking_uri=platform.tracking_uri),
                    timings,
                    {},
                )
        finally:
            for project in PROJECTS:
                remove_deployment(gocd_env, project)
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
    assert version.user_id == "gocd"
    assert version.tags["build.pipeline"] == build and version.tags["build.counter"] == "1"
    assert version.tags["evaluation.status"] == "passed"
    run = world.client.get_run(version.run_id)
    assert run.data.tags["lineage.ci.pipeline"] == build
    assert run.data.tags["lineage.ci.stage"] == "train"
    assert run.data.tags["lineage.code.commit"] == git(world.checkout, "rev-parse", "HEAD").strip()
    assert run.data.tags["lineage.data.test.csv.role"] == "test"


def promote(world: World, model: str, version: str, alias: str, *options: str) -> subprocess.CompletedProcess:
    """`mlflow-ext promote` as the gocd account."""
    return subprocess.run(
        [
            str(VENV_BIN / "mlflow-ext"),
            "promote",
            model,
            version,
            "--to",
            alias,
            "--output",
            "json",
            *options,
        ],
        env={**world.agent.base_env, "MLFLOW_TRACKING_URI": world.platform.tracking_uri},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def scheduled(world: World, project: Project, built: list[TaskRun]):
    model, release = project.model, project.release
    started = time.monotonic()
    result = promote(world, model, "1", "production", "--reason", "first model")
    assert result.returncode == 0, result.stderr
    world.promotions[model] = json.loads(result.stdout)
    (schedule,) = world.gocd.wait_for_schedules(1, release, timeout=60)
    world.record(project, "promote", {"to-schedule": round(time.monotonic() - started, 1)})
    return schedule


def test_gocd_promotes_through_the_server_gates(world, project, scheduled):
    answer = world.promotions[project.model]
    assert answer["changed"] is True
    # The server's policy (the role's mlflow_server_promotion_policy) was checked, and its gates passed.
    assert answer["policy_origin"]["origin"] == "server"
    assert answer["gates"] and {gate["status"] for gate in answer["gates"]} == {"passed"}
    tags = world.client.get_model_version(project.model, "1").tags
    assert tags["promotion.by"] == "gocd" and tags["promotion.alias"] == "production"


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
    assert tags["deploy.status"] == "deployed" and tags["deploy.alias"] == "production"
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
    original = data.read_text()
    header, rest = original.split("\n", 1)
    before, after = project.renamed
    assert before in header.split(",")
    data.write_text(
        ",".join(after if column == before else column for column in header.split(",")) + "\n" + rest
    )
    git(world.checkout, "commit", "-q", "-am", f"{model}: rename a test data column")
    try:
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
        stopped = [("verify-data", "verify-data", 7), ("verify-data", "report", 0)]
        assert executed(runs) == stopped, describe(runs)
        assert f"column added: {after}" in runs[0].stderr and f"column removed: {before}" in runs[0].stderr
        tags = world.client.get_model_version(model, "1").tags
        assert tags["deploy.status"] == "failed" and tags["deploy.stage"] == "verify-data"
        assert tags["deploy.counter"] == str(schedule.counter)
        # The running deployment was not touched.
        assert requests.get(f"http://127.0.0.1:{world.ports[model]}/ping", timeout=10).status_code == 200
    finally:  # the checkout's next builds (the bare account's, say) read the original data again
        data.write_text(original)
        git(world.checkout, "commit", "-q", "-am", f"{model}: the test data column back")


def test_the_role_gives_gocd_the_rights_the_pipelines_need(world):
    defaults = gocd_account.role_defaults()
    assert world.account["rights"] == defaults["mlflow_server_gocd_rights"]
    assert world.account["promote_models"] == defaults["mlflow_server_gocd_models"]
    assert world.report["user_created"] and world.report["token_created"]
    assert sorted(world.report["rights_granted"]) == sorted(
        [
            *defaults["mlflow_server_gocd_rights"],
            *(f"promote on {m}" for m in defaults["mlflow_server_gocd_models"]),
        ]
    )
    # The role's models are the example catalog's: every generated pipeline can promote its model.
    catalog = yaml.safe_load(CATALOG.read_text())
    assert set(defaults["mlflow_server_gocd_models"]) == {entry["name"] for entry in catalog["models"]}
    # The catalog's production aliases are the ones the server protects by default.
    protected = {alias.lower() for alias in defaults["mlflow_server_protected_aliases"]}
    for entry in catalog["models"]:
        production = {alias for alias, spec in entry["aliases"].items() if (spec or {}).get("production")}
        assert production and production <= protected, entry["name"]


def test_without_the_rights_the_train_stage_is_refused(world):
    build = PROJECTS[0].build
    runs = world.bare.run(build, world.pipelines[build], counter=1)
    assert executed(runs) == [("train", "entry point", 1)], describe(runs)
    assert DENIED.search(runs[0].stderr), runs[0].stderr[-2000:]


def test_gocd_may_not_move_production_of_a_model_outside_its_list(world):
    """Managing a model (and reading its runs) is not enough: its protected alias needs the promote right
    on it, which the role grants on the catalog's models only."""
    other = "not-in-the-catalog"
    world.client.create_registered_model(other)
    run = world.client.create_run(world.client.create_experiment("outside-the-catalog"))
    for key, value in POLICY_LINEAGE.items():  # the gates would pass: only the promote right is missing
        world.client.set_tag(run.info.run_id, key, value)
    world.client.create_model_version(other, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    for grant in (["registered_model", other, "MANAGE"], ["experiment", run.info.experiment_id, "READ"]):
        admin = subprocess.run(
            [str(VENV_BIN / "mlflow-ext"), "grant", "permission", "gocd", *grant],
            env={**world.agent.base_env, **world.platform.client_env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert admin.returncode == 0, admin.stderr
    assert promote(world, other, "1", "staging").returncode == 0
    refused = promote(world, other, "1", "production")
    assert refused.returncode == ExitCode.DENIED, refused.stderr
    assert "promote right" in refused.stderr, refused.stderr
    assert world.client.get_registered_model(other).aliases == {"staging": "1"}
