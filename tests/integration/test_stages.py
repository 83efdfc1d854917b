"""The stage commands against the real platform, as a GoCD agent runs them: the example project trains
inside a "build pipeline", `register` finds its run, `evaluate` scores it, `verify-data` compares test
files, a second version is evaluated against the first, `deploy` builds a real venv and serves it as a
supervised process, `smoke-test` calls it, `deploy --stop` ends it.

The deploy installs the model's requirements from the package index into a fresh venv: about a
minute here (see docs/deploy-targets.md); the tests share one deployment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import Platform

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "iris-classifier"
TEST_DATA = EXAMPLE / "data" / "test.csv"
LOCK = REPO / "requirements" / "server.lock"
STAGE_FAILED = 7


class Stages:
    """Runs the example's entry point and `mlflow-ext` commands with a job's environment."""

    def __init__(self, platform: Platform, model: str, workdir: Path) -> None:
        self.model, self.workdir = model, workdir
        # The commands' temporary directory, to see what each leaves behind.
        self.tmp = workdir / "tmp"
        self.tmp.mkdir()
        self.env = {
            **os.environ,
            **platform.client_env(),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_EXPERIMENT_NAME": f"{model}-experiment",
            "MLFLOW_EXT_DEPLOY_ROOT": str(workdir / "deployments"),
            "MLFLOW_EXT_DEPLOY_MODE": "process",
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "TMPDIR": str(self.tmp),
        }
        for key in [key for key in self.env if key.startswith(("GO_", "MLFLOW_MODEL_"))]:
            del self.env[key]

    def build_env(self, counter: int) -> dict[str, str]:
        return {"GO_PIPELINE_NAME": f"{self.model}-build", "GO_PIPELINE_COUNTER": str(counter)}

    def train(self, counter: int, *args: str) -> dict:
        result = subprocess.run(
            [str(VENV_BIN / "python"), "train.py", *args],
            cwd=EXAMPLE,
            env={**self.env, **self.build_env(counter), "GO_STAGE_NAME": "train"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    def cli(
        self, *args: str, env: dict[str, str] | None = None, expect: int = 0
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(VENV_BIN / "mlflow-ext"), *args],
            cwd=EXAMPLE,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == expect, f"{args}: exit {result.returncode}\n{result.stderr[-3000:]}"
        return result

    def left_in_tmp(self) -> set[str]:
        return {path.name for path in self.tmp.iterdir()}

    def json(self, *args: str, env: dict[str, str] | None = None) -> dict:
        return json.loads(self.cli(*args, "--output", "json", env=env).stdout)


@pytest.fixture(scope="module")
def stages(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stages]:
    model = f"iris-stages-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path_factory.mktemp("stages")
    runner = Stages(platform, model, workdir)
    yield runner
    for deployment in (workdir / "deployments").glob("*/deployment.json"):
        runner.cli("deploy", "--name", deployment.parent.name, "--remove", expect=0)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def client(platform: Platform):
    from mlflow import MlflowClient

    from tests.support.environ import patched_environ

    with patched_environ(platform.client_env()):
        yield MlflowClient(tracking_uri=platform.tracking_uri)


@pytest.fixture(scope="module")
def first(stages: Stages) -> dict:
    """Build pipeline instance 1: train, then register."""
    trained = stages.train(1)
    registered = stages.json("register", "--model", stages.model, env=stages.build_env(1))
    return {**trained, **registered}


def test_register_finds_the_run_of_this_pipeline_instance(stages, first, client):
    assert first["version"] == "1" and first["changed"] is True
    version = client.get_model_version(stages.model, "1")
    assert version.run_id == first["run_id"]
    assert version.tags["build.pipeline"] == f"{stages.model}-build"
    assert version.tags["build.counter"] == "1"
    again = stages.json("register", "--model", stages.model, env=stages.build_env(1))
    assert again["version"] == "1" and again["changed"] is False


def test_register_without_a_run_says_what_it_looked_for(stages, first):
    result = stages.cli("register", "--model", stages.model, env=stages.build_env(99), expect=STAGE_FAILED)
    assert f"lineage.ci.pipeline={stages.model}-build and lineage.ci.counter=99" in result.stderr


def test_evaluate_in_the_build_pipeline_scores_the_version_it_registered(stages, first, client):
    result = stages.json(
        "evaluate",
        "--model",
        stages.model,
        "--data",
        "data/test.csv",
        "--target",
        "species",
        env=stages.build_env(1),
    )
    assert result["version"] == "1" and result["baseline"] is None and result["status"] == "passed"
    assert result["candidate"]["metrics"]["accuracy"] == pytest.approx(first["metrics"]["test_accuracy"])
    run = client.get_run(result["run_id"])
    assert run.data.tags["evaluation.model"] == stages.model
    assert run.data.tags["evaluation.version"] == "1"
    assert run.data.metrics["accuracy"] == pytest.approx(result["candidate"]["metrics"]["accuracy"])
    assert run.data.tags["lineage.data.test.csv.role"] == "evaluation"
    version = client.get_model_version(stages.model, "1")
    assert version.tags["evaluation.run_id"] == result["run_id"]
    assert version.tags["evaluation.status"] == "passed"


def test_verify_data_accepts_the_recorded_test_data(stages, first):
    result = stages.json(
        "verify-data",
        "--data",
        "data/test.csv",
        env={"MLFLOW_MODEL_NAME": stages.model, "MLFLOW_MODEL_VERSION": "1"},
    )
    assert result["matches"] is True and result["rows"] == 30 and result["dataset"] == "test.csv"


def test_verify_data_names_what_changed(stages, first):
    env = {"MLFLOW_MODEL_NAME": stages.model, "MLFLOW_MODEL_VERSION": "1"}
    lines = TEST_DATA.read_text().splitlines()

    changed = stages.workdir / "changed.csv"
    changed.write_text("\n".join([lines[0], lines[1].replace("5.0", "5.1", 1), *lines[2:]]) + "\n")
    result = stages.cli("verify-data", "--data", str(changed), env=env, expect=STAGE_FAILED)
    assert "differs from test.csv" in result.stderr and "fingerprint: recorded sha256:" in result.stderr
    assert "rows:" not in result.stderr and "column" not in result.stderr

    dropped = stages.workdir / "dropped.csv"
    dropped.write_text("\n".join(",".join(line.split(",")[:4]) for line in lines[:-1]) + "\n")
    result = stages.cli("verify-data", "--data", str(dropped), env=env, expect=STAGE_FAILED)
    assert "column removed: species (string)" in result.stderr
    assert "rows: recorded 30, found 29 (-1)" in result.stderr

    retyped = stages.workdir / "retyped.csv"
    rows = [line.split(",", 1) for line in lines[1:]]
    retyped.write_text("\n".join([lines[0], *[f"{int(float(a))},{rest}" for a, rest in rows]]) + "\n")
    result = stages.cli("verify-data", "--data", str(retyped), env=env, expect=STAGE_FAILED)
    assert "column retyped: sepal_length double -> int64" in result.stderr

    result = stages.cli("verify-data", "--data", "data/absent.csv", env=env, expect=STAGE_FAILED)
    assert (
        "test data missing or unreadable" in result.stderr and "recorded test.csv (sha256:" in result.stderr
    )


@pytest.fixture(scope="module")
def second(stages: Stages, first: dict, client) -> dict:
    """Build instance 2 with a weaker model, promoted to @champion over version 1 (audit tags first,
    then the alias, as `mlflow-ext promote` does)."""
    trained = stages.train(2, "--C", "0.01")
    registered = stages.json("register", "--model", stages.model, env=stages.build_env(2))
    version = registered["version"]
    client.set_model_version_tag(stages.model, version, "promotion.from_version", "1")
    client.set_model_version_tag(stages.model, version, "promotion.alias", "champion")
    client.set_registered_model_alias(stages.model, "champion", version)
    return {**trained, **registered}


def release_env(stages: Stages, version: str, run_id: str) -> dict[str, str]:
    return {
        "MLFLOW_MODEL_NAME": stages.model,
        "MLFLOW_MODEL_VERSION": version,
        "MLFLOW_MODEL_ALIAS": "champion",
        "MLFLOW_MODEL_URI": f"models:/{stages.model}/{version}",
        "MLFLOW_RUN_ID": run_id,  # the bridge passes the training run; nothing may write to it
        "GO_PIPELINE_NAME": f"{stages.model}-release-champion",
        "GO_PIPELINE_COUNTER": "1",
    }


def test_release_evaluate_compares_with_the_previous_holder(stages, second, client):
    env = release_env(stages, second["version"], second["run_id"])
    training = client.get_run(second["run_id"])
    before = stages.left_in_tmp()
    result = stages.json("evaluate", "--data", "data/test.csv", "--target", "species", env=env)
    # Both versions were downloaded to be scored, and neither copy stays on the agent.
    assert stages.left_in_tmp() == before
    assert result["baseline_version"] == "1" and result["baseline"]["version"] == "1"
    assert result["deltas"]["accuracy"] == pytest.approx(
        result["candidate"]["metrics"]["accuracy"] - result["baseline"]["metrics"]["accuracy"]
    )
    run = client.get_run(result["run_id"])
    assert run.data.tags["evaluation.baseline_version"] == "1"
    assert run.data.tags["evaluation.alias"] == "champion"
    assert "baseline_accuracy" in run.data.metrics and "delta_accuracy" in run.data.metrics
    artifacts = {item.path for item in client.list_artifacts(result["run_id"], "evaluation")}
    assert artifacts == {
        "evaluation/report.md",
        "evaluation/report.json",
        "evaluation/confusion_matrix.csv",
        "evaluation/baseline_confusion_matrix.csv",
    }
    assert result["run_id"] != second["run_id"]
    after = client.get_run(second["run_id"])
    assert after.data.tags == training.data.tags and after.data.metrics == training.data.metrics
    report = Path(client.download_artifacts(result["run_id"], "evaluation/report.md", str(stages.workdir)))
    assert f"| metric | v{second['version']} | v1 | delta |" in report.read_text()

    gate = ["evaluate", "--data", "data/test.csv", "--target", "species", "--max-drop", "-1"]
    failed = stages.cli(*gate, env=env, expect=STAGE_FAILED)
    assert "fails evaluation: accuracy is worse than version 1" in failed.stderr
    assert client.get_model_version(stages.model, second["version"]).tags["evaluation.status"] == "failed"

    # The same drop on a rollback is reported, not failed: going back is the point of a rollback.
    client.set_model_version_tag(stages.model, second["version"], "promotion.action", "rollback")
    try:
        rolled_back = stages.json(*gate, env=env)
    finally:
        client.delete_model_version_tag(stages.model, second["version"], "promotion.action")
    assert rolled_back["status"] == "passed"
    assert any("allowed for a rollback" in note for note in rolled_back["notes"])


@pytest.fixture(scope="module")
def deployed(stages: Stages, first: dict) -> dict:
    env = {"MLFLOW_MODEL_NAME": stages.model, "MLFLOW_MODEL_VERSION": "1", "MLFLOW_MODEL_ALIAS": "champion"}
    return stages.json("deploy", "--target", "local", "-o", f"constraints={LOCK}", env=env)


def test_deploy_serves_the_version_in_its_own_venv(stages, deployed, client):
    name = f"{stages.model}-champion"
    assert deployed["name"] == name and deployed["status"] == "running" and deployed["changed"] is True
    details = deployed["details"]
    assert details["mode"] == "process"
    assert details["argv"][1:4] == ["models", "serve", "-m"] and details["argv"][-2:] == [
        "--env-manager",
        "local",
    ]
    venv = Path(details["venv"])
    assert (venv / "pyvenv.cfg").read_text().count("include-system-site-packages = false") == 1
    assert (venv / "bin" / "mlflow").exists()
    print(f"deploy timings (s): {details['timings']}")
    tags = client.get_model_version(stages.model, "1").tags
    assert tags["deploy.name"] == name and tags["deploy.target"] == "local"
    assert tags["deploy.endpoint"] == deployed["endpoint"]

    again = stages.json(
        "deploy", "--name", name, env={"MLFLOW_MODEL_NAME": stages.model, "MLFLOW_MODEL_VERSION": "1"}
    )
    assert again["changed"] is False


def test_smoke_test_calls_the_deployment(stages, deployed):
    env = {"MLFLOW_MODEL_NAME": stages.model, "MLFLOW_MODEL_ALIAS": "champion", "MLFLOW_MODEL_VERSION": "1"}
    before = stages.left_in_tmp()
    result = stages.json("smoke-test", "--data", "data/test.csv", env=env)
    assert result["passed"] is True and result["rows"] == 20 and result["compared"] is True
    assert stages.left_in_tmp() == before, "the model downloaded to compare stayed on the agent"
    assert set(result["predictions"]) <= {"setosa", "versicolor", "virginica"}
    wrong = stages.cli(
        "smoke-test", "--data", "data/test.csv", env={**env, "MLFLOW_MODEL_VERSION": "2"}, expect=STAGE_FAILED
    )
    assert f"serves version 1 of {stages.model}, expected version 2" in wrong.stderr


def test_a_version_whose_requirements_cannot_install_fails_and_the_previous_keeps_serving(
    stages, deployed, client
):
    """Version 1 serves; a version whose requirements name a package no index has fails deploy with pip's
    own message, and version 1 keeps answering on the same endpoint."""
    import mlflow
    import requests

    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            f"models:/{stages.model}/1",
            dst_path=str(stages.workdir / "broken"),
            tracking_uri=client._tracking_client.tracking_uri,
        )
    )
    requirements = model_dir / "requirements.txt"
    requirements.write_text(requirements.read_text() + "mlflow-platform-no-such-package==0.0.1\n")
    experiment_id = client.get_run(client.get_model_version(stages.model, "1").run_id).info.experiment_id
    run = client.create_run(experiment_id)
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id)
    broken = client.create_model_version(stages.model, f"runs:/{run.info.run_id}/model", run.info.run_id)

    name = f"{stages.model}-champion"
    env = {"MLFLOW_MODEL_NAME": stages.model, "MLFLOW_MODEL_VERSION": broken.version}
    deploy = ["deploy", "--target", "local", "--name", name, "-o", f"constraints={LOCK}"]
    failed = stages.cli(*deploy, env=env, expect=STAGE_FAILED)
    # pip's own words follow the stage's: the package it could not find, and its error.
    assert "installing the model's requirements failed (pip exited 1)" in failed.stderr
    assert "mlflow-platform-no-such-package" in failed.stderr and "ERROR: " in failed.stderr
    assert requests.get(deployed["endpoint"] + "/ping", timeout=10).status_code == 200
    version_1 = {**env, "MLFLOW_MODEL_ALIAS": "champion", "MLFLOW_MODEL_VERSION": "1"}
    served = stages.json("smoke-test", "--data", "data/test.csv", env=version_1)
    assert served["passed"] is True


def test_stop_ends_the_server(stages, deployed):
    import requests

    name = f"{stages.model}-champion"
    stopped = stages.json("deploy", "--target", "local", "--name", name, "--stop")
    assert stopped["status"] == "stopped" and stopped["changed"] is True
    with pytest.raises(requests.ConnectionError):
        requests.get(deployed["endpoint"] + "/ping", timeout=5)
    result = stages.cli("smoke-test", "--data", "data/test.csv", "--name", name, expect=STAGE_FAILED)
    assert "is stopped, not running" in result.stderr
