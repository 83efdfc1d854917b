"""`mlflow-ext inspect` answers what happened to a version after training, against the real platform:
who registered it (the auth app fills MLflow's user_id) and who promoted it and why, its evaluation
against the alias's previous holder, the GoCD release the bridge scheduled and the deployment's outcome,
and the runs that reproduced it. Each piece is written by the code path that writes it in production
(`register`, `promote`, `evaluate`, `report`, the bridge's feedback tags); the reproduction runs carry
the tags `mlflow-ext reproduce` leaves (running it would rebuild an environment: tests/unit covers it).
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from datetime import datetime
from types import SimpleNamespace

import pytest

from mlflow_ext.bridge import feedback
from mlflow_ext.bridge.registry import MlflowRegistry
from mlflow_ext.clients.gocd import GoCDClient
from mlflow_ext.lineage import MISSING, REPRODUCTION_OF, REPRODUCTION_STATUS
from tests.integration.test_stages import Stages
from tests.support.environ import patched_environ
from tests.support.services import Platform

pytestmark = pytest.mark.integration

GOCD_URL = "https://gocd.example.com"


@pytest.fixture(scope="module")
def released(platform: Platform, tmp_path_factory: pytest.TempPathFactory):
    """Two builds of the iris example, both promoted to @champion with a reason, the second evaluated
    against the first, released by GoCD, deployed and reported, then reproduced twice."""
    from mlflow import MlflowClient

    model = f"iris-inspect-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path_factory.mktemp("inspect")
    stages = Stages(platform, model, workdir)
    versions = []
    for counter, args in ((1, ()), (2, ("--C", "0.5"))):
        trained = stages.train(counter, *args)
        registered = stages.json("register", "--model", model, env=stages.build_env(counter))
        versions.append({**trained, **registered})
    v1, v2 = versions[0]["version"], versions[1]["version"]
    stages.cli("promote", model, v1, "--to", "champion", "--reason", "first release")
    stages.cli("promote", model, v2, "--to", "champion", "--reason", "retrained on december data")
    release = {
        "MLFLOW_MODEL_NAME": model,
        "MLFLOW_MODEL_VERSION": v2,
        "MLFLOW_MODEL_ALIAS": "champion",
        "GO_SERVER_URL": f"{GOCD_URL}/go",
        "GO_PIPELINE_NAME": f"{model}-release-champion",
        "GO_PIPELINE_COUNTER": "7",
        "GO_STAGE_NAME": "deploy",
    }
    evaluation = stages.json("evaluate", "--data", "data/test.csv", "--target", "species", env=release)
    with patched_environ(platform.client_env()):
        client = MlflowClient(tracking_uri=platform.tracking_uri)
        # The bridge's feedback once GoCD scheduled the release (bridge.feedback.feedback_once).
        row = SimpleNamespace(
            pipeline=f"{model}-release-champion", counter=7, scheduled_at=1764842400000, delivered_at=None
        )
        MlflowRegistry(platform.tracking_uri).set_tags(
            model, v2, feedback.tags_for(row, GoCDClient(GOCD_URL, "token"))
        )
        # What `mlflow-ext deploy` tags after a deployment that changed something.
        for key, value in {
            "deploy.target": "local",
            "deploy.name": f"{model}-champion",
            "deploy.endpoint": "http://127.0.0.1:5301",
        }.items():
            client.set_model_version_tag(model, v2, key, value)
        stages.cli("report", "--status", "deployed", "--message", "serving on 127.0.0.1:5301", env=release)
        # The runs `mlflow-ext reproduce` creates: same experiment, tagged with the run and the verdict.
        run_id = versions[1]["run_id"]
        experiment_id = client.get_run(run_id).info.experiment_id
        reproductions = []
        for verdict in ("different", "within_tolerance"):
            run = client.create_run(experiment_id, tags={REPRODUCTION_OF: run_id})
            client.set_tag(run.info.run_id, REPRODUCTION_STATUS, verdict)
            client.set_terminated(run.info.run_id, "FINISHED")
            reproductions.append(run.info.run_id)
        yield SimpleNamespace(
            model=model,
            v1=v1,
            v2=v2,
            run_id=run_id,
            evaluation=evaluation,
            reproductions=reproductions,
            client=client,
            stages=stages,
            admin=platform.admin_username,
        )
    shutil.rmtree(workdir, ignore_errors=True)


def test_json_shows_registration_promotion_evaluation_release_and_reproductions(released) -> None:
    got = json.loads(
        released.stages.cli("inspect", f"models:/{released.model}@champion", "--output", "json").stdout
    )
    assert got["model"]["version"] == released.v2
    assert got["model"]["registered_by"] == released.admin
    version = released.client.get_model_version(released.model, released.v2)
    assert version.user_id == released.admin  # MLflow's own field, for every reader
    promotion = got["promotion"]
    assert promotion["by"] == released.admin and promotion["reason"] == "retrained on december data"
    assert promotion["from_version"] == released.v1 and promotion["alias"] == "champion"
    assert promotion["action"] == "promote"

    evaluation = got["evaluation"]
    expected = released.evaluation
    assert evaluation["run_id"] == expected["run_id"] and evaluation["status"] == "passed"
    assert evaluation["baseline_version"] == released.v1 and evaluation["alias"] == "champion"
    assert evaluation["task"] == "classification" and evaluation["error"] is None
    for metric, value in expected["candidate"]["metrics"].items():
        assert evaluation["metrics"][metric] == pytest.approx(value)
        assert evaluation["baseline_metrics"][metric] == pytest.approx(
            expected["baseline"]["metrics"][metric]
        )
        assert evaluation["deltas"][metric] == pytest.approx(expected["deltas"][metric])

    deployment = got["deployment"]
    pipeline = f"{released.model}-release-champion"
    assert deployment == {
        "gocd_pipeline": pipeline,
        "gocd_counter": "7",
        "gocd_url": f"{GOCD_URL}/go/pipelines/value_stream_map/{pipeline}/7",
        "gocd_scheduled_at": "2025-12-04T10:00:00Z",
        "target": "local",
        "name": f"{released.model}-champion",
        "endpoint": "http://127.0.0.1:5301",
        "status": "deployed",
        "at": deployment["at"],
        "message": "serving on 127.0.0.1:5301",
        "stage": "deploy",
        "pipeline": pipeline,
        "counter": "7",
        "url": f"{GOCD_URL}/go/pipelines/value_stream_map/{pipeline}/7",
        "alias": "champion",
    }
    assert datetime.fromisoformat(deployment["at"]).tzinfo is not None

    reproductions = got["reproductions"]
    assert [item["run_id"] for item in reproductions] == released.reproductions[::-1]  # newest first
    assert [item["status"] for item in reproductions] == ["within_tolerance", "different"]
    assert all(item["run_status"] == "FINISHED" for item in reproductions)

    # The first version: registered and promoted, never evaluated, released or reproduced.
    first = json.loads(
        released.stages.cli("inspect", f"models:/{released.model}/{released.v1}", "--output", "json").stdout
    )
    assert first["model"]["registered_by"] == released.admin
    assert first["promotion"]["reason"] == "first release" and first["promotion"]["from_version"] is None
    assert first["evaluation"] is None and first["reproductions"] == []
    assert set(first["deployment"].values()) == {None}


def test_table_shows_each_on_one_screen(released) -> None:
    shown = released.stages.cli("inspect", f"models:/{released.model}@champion").stdout
    lines = shown.splitlines()
    assert len(lines) <= 50

    def value(label: str) -> str:
        line = next(line for line in lines if line.startswith(label + " "))
        return line[len(label) :].strip()

    def following(label: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.startswith(label + " "))
        rest = [lines[start]]
        for line in lines[start + 1 :]:
            if not line.startswith(" "):
                break
            rest.append(line)
        return [line.strip() if i else line[len(label) :].strip() for i, line in enumerate(rest)]

    v1, v2, pipeline = released.v1, released.v2, f"{released.model}-release-champion"
    assert re.search(rf" by {released.admin}; source ", value("registered"))
    assert value("promoted by") == released.admin
    assert value("promoted at").endswith(f"(from version {v1} to @champion)")
    assert value("reason") == "retrained on december data"
    run_id = released.evaluation["run_id"]
    assert value("evaluation").startswith(
        f"run {run_id} (passed) against version {v1} (previous @champion), "
    )
    accuracy = released.evaluation["candidate"]["metrics"]["accuracy"]
    baseline = released.evaluation["baseline"]["metrics"]["accuracy"]
    scores = " ".join(following("eval metrics"))
    assert f"accuracy={accuracy:.6g} (v{v1} {baseline:.6g}, {accuracy - baseline:+.3g})" in scores
    assert value("release") == f"gocd {pipeline} #7 scheduled 2025-12-04T10:00:00Z"
    assert value("release url") == f"{GOCD_URL}/go/pipelines/value_stream_map/{pipeline}/7"
    deployed = following("deployed")
    assert re.fullmatch(rf"deployed at \S+ as @champion by {pipeline} #7 stage deploy", deployed[0])
    assert deployed[1] == "serving on 127.0.0.1:5301"
    assert value("deployed to") == f"local {released.model}-champion at http://127.0.0.1:5301"
    newest, older = released.reproductions[::-1]
    reproduced = following("reproduced")
    assert reproduced[0].startswith(f"{newest} within_tolerance (FINISHED, ")
    assert reproduced[1].startswith(f"{older} different (FINISHED, ")

    plain = released.stages.cli("inspect", f"models:/{released.model}/{v1}").stdout.splitlines()
    lines = plain
    assert value("evaluation") == MISSING
    assert value("release") == MISSING and value("deployed") == MISSING
    assert value("reproduced") == MISSING
    assert value("reason") == "first release"
    assert f"version {v2}" not in value("model")
