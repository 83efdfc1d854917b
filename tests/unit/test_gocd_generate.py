"""The generator: pipeline shapes and exec lines, stable bytes, atomic output, the CLI."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlflow_ext.cli import main
from mlflow_ext.errors import PipelineError
from mlflow_ext.gocd import catalog, pipelines, validate
from tests.support.answering import Answering

ENTRY = {
    "name": "iris-classifier",
    "team": "data-science",
    "repository": "https://git.example.com/ml.git",
    "directory": "examples/iris-classifier",
    "entry_point": "python train.py",
    "test_data": "data/test.csv",
    "target": "species",
    "deploy": {"target": "local", "port": 5201},
    "aliases": {"staging": {}, "champion": {"production": True, "variables": {"DEPLOY_TIER": "prod"}}},
    "approval": {"roles": ["release-managers"]},
}


def _catalog(*entries, **top):
    return catalog.parse({"models": list(entries or [ENTRY]), **top}, "models.yaml")


def _tasks(stage):
    ((name, body),) = stage.items()
    return name, body, body["jobs"][name]["tasks"]


def _argv(task):
    return [task["exec"]["command"], *task["exec"]["arguments"]]


def test_build_pipeline_runs_the_design_exec_lines():
    found = _catalog(tracking_uri="https://mlflow.example.com")
    build = pipelines.model_pipelines(found.models[0], found)["iris-classifier-build"]
    assert build["group"] == "data-science"
    assert build["materials"] == {"code": {"git": "https://git.example.com/ml.git", "branch": "main"}}
    assert build["environment_variables"] == {"MLFLOW_TRACKING_URI": "https://mlflow.example.com"}
    lines = []
    for stage in build["stages"]:
        name, body, tasks = _tasks(stage)
        assert "approval" not in body
        assert all(t["exec"]["working_directory"] == "examples/iris-classifier" for t in tasks)
        lines.append((name, [_argv(t) for t in tasks]))
    assert lines == [
        ("train", [["/bin/sh", "-c", "python train.py"]]),
        ("register", [["mlflow-ext", "register", "--model", "iris-classifier"]]),
        (
            "evaluate",
            [
                [
                    "mlflow-ext",
                    "evaluate",
                    "--model",
                    "iris-classifier",
                    "--data",
                    "data/test.csv",
                    "--target",
                    "species",
                ]
            ],
        ),
    ]


def test_release_pipeline_shape_variables_and_gates():
    found = _catalog()
    generated = pipelines.model_pipelines(found.models[0], found)
    assert list(generated) == [
        "iris-classifier-build",
        "iris-classifier-release-champion",
        "iris-classifier-release-staging",
    ]
    champion = generated["iris-classifier-release-champion"]
    assert set(champion["environment_variables"]) == {*catalog.BRIDGE_VARIABLES, "DEPLOY_TIER"}
    assert champion["environment_variables"]["MLFLOW_MODEL_NAME"] == "iris-classifier"
    assert champion["environment_variables"]["MLFLOW_MODEL_ALIAS"] == "champion"
    stages = {}
    for stage in champion["stages"]:
        name, body, tasks = _tasks(stage)
        stages[name] = body
        main_task, failed = tasks
        assert failed["exec"]["run_if"] == "failed"
        assert _argv(failed) == ["mlflow-ext", "report", "--status", "failed", "--stage", name]
        assert "run_if" not in main_task["exec"]
        stages[name] = (body.get("approval"), _argv(main_task))
    assert stages == {
        "verify-data": ({"type": "manual"}, ["mlflow-ext", "verify-data", "--data", "data/test.csv"]),
        "evaluate": (None, ["mlflow-ext", "evaluate", "--data", "data/test.csv", "--target", "species"]),
        "deploy": (
            {"type": "manual", "allow_only_on_success": True, "roles": ["release-managers"]},
            ["mlflow-ext", "deploy", "--target", "local", "--port", "5201"],
        ),
        "smoke-test": (None, ["mlflow-ext", "smoke-test", "--data", "data/test.csv"]),
        "report": (None, ["mlflow-ext", "report", "--status", "deployed"]),
    }
    staging = generated["iris-classifier-release-staging"]
    deploy = next(s["deploy"] for s in staging["stages"] if "deploy" in s)
    assert "approval" not in deploy  # not a production alias


def test_no_port_no_directory():
    entry = ENTRY | {"deploy": {"target": "sagemaker"}, "directory": "."}
    found = _catalog(entry)
    release = pipelines.model_pipelines(found.models[0], found)["iris-classifier-release-staging"]
    deploy = next(s["deploy"] for s in release["stages"] if "deploy" in s)
    task = deploy["jobs"]["deploy"]["tasks"][0]["exec"]
    assert task["arguments"] == ["deploy", "--target", "sagemaker"]
    assert "working_directory" not in task


def test_generated_documents_pass_the_validator_and_routes_match():
    found = _catalog(ENTRY, ENTRY | {"name": "other model", "team": "risk"})
    documents = pipelines.documents(found)
    assert list(documents) == ["iris-classifier.gocd.yaml", "other_model.gocd.yaml"]
    assert validate.Validator().check_documents(documents.items()) == []
    routes = pipelines.routes(found)["routes"]
    assert routes[0] == {
        "model": "iris-classifier",
        "alias": "champion",
        "pipeline": "iris-classifier-release-champion",
        "variables": {"DEPLOY_TIER": "prod"},
    }
    declared = {
        n: tuple(p.get("environment_variables", ()))
        for d in documents.values()
        for n, p in d["pipelines"].items()
    }
    assert validate.check_routes(pipelines.routes(found), "routes.yaml", declared) == []


def test_per_team_groups_models_in_one_file():
    found = _catalog(ENTRY, ENTRY | {"name": "b"}, ENTRY | {"name": "c", "team": "risk"})
    documents = pipelines.documents(found, per="team")
    assert list(documents) == ["data-science.gocd.yaml", "risk.gocd.yaml"]
    assert len(documents["data-science.gocd.yaml"]["pipelines"]) == 6
    with pytest.raises(PipelineError, match="--per must be model or team"):
        pipelines.documents(found, per="group")


def _write_catalog(path: Path, entries, **top) -> Path:
    path.write_text(yaml.safe_dump({**top, "models": entries}, sort_keys=False))
    return path


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_input_same_bytes_whatever_the_order(tmp_path):
    entries = [ENTRY | {"name": f"model-{i}", "team": f"team-{i % 3}"} for i in range(12)]
    first = pipelines.write(_catalog(*entries), tmp_path / "a", routes_file=tmp_path / "a.routes.yaml")
    shuffled = entries[:]
    random.Random(3).shuffle(shuffled)
    shuffled = [dict(reversed(list(e.items()))) for e in shuffled]
    pipelines.write(_catalog(*shuffled), tmp_path / "b", routes_file=tmp_path / "b.routes.yaml")
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert (tmp_path / "a.routes.yaml").read_bytes() == (tmp_path / "b.routes.yaml").read_bytes()
    assert first.files == 12 and first.pipelines == 36 and first.models == 12
    again = _tree(tmp_path / "a")
    pipelines.write(_catalog(*entries), tmp_path / "a")
    assert _tree(tmp_path / "a") == again


def test_output_replaces_stale_files_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "out"
    pipelines.write(_catalog(ENTRY, ENTRY | {"name": "gone"}), out)
    assert sorted(_tree(out)) == ["gone.gocd.yaml", "iris-classifier.gocd.yaml"]
    pipelines.write(_catalog(ENTRY), out)
    assert sorted(_tree(out)) == ["iris-classifier.gocd.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_refuses_to_replace_a_directory_with_foreign_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("mine")
    with pytest.raises(PipelineError, match=r"refusing to replace .* README.md"):
        pipelines.write(_catalog(), out)
    assert (out / "README.md").read_text() == "mine"


def test_the_routing_file_cannot_live_inside_out(tmp_path):
    with pytest.raises(PipelineError, match="cannot live inside --out"):
        pipelines.write(_catalog(), tmp_path / "out", routes_file=tmp_path / "out" / "routes.yaml")
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_generated_document_writes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    routes = tmp_path / "routes.yaml"
    pipelines.write(_catalog(), out, routes_file=routes)
    before, before_routes = _tree(out), routes.read_bytes()
    original = pipelines.release_pipeline

    def broken(model, alias, found):
        pipeline = original(model, alias, found)
        pipeline["stages"][0]["verify-data"]["approval"] = {"type": "sometimes"}
        return pipeline

    monkeypatch.setattr(pipelines, "release_pipeline", broken)
    with pytest.raises(PipelineError, match=r"generated pipelines are invalid:\n.*'sometimes' is not one of"):
        pipelines.write(_catalog(ENTRY | {"name": "new"}), out, routes_file=routes)
    assert _tree(out) == before
    assert routes.read_bytes() == before_routes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "routes.yaml"]


def test_a_failed_swap_restores_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    pipelines.write(_catalog(), out)
    before = _tree(out)
    real_rename = os.rename
    calls = []

    def failing(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new directory into place
            raise OSError("disk full")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="disk full"):
        pipelines.write(_catalog(ENTRY | {"name": "new"}), out)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_check_reports_drift(tmp_path):
    out = tmp_path / "out"
    pipelines.write(_catalog(), out)
    assert pipelines.check(_catalog(), out) == []
    (out / "iris-classifier.gocd.yaml").write_text("edited")
    (out / "old.gocd.yaml").write_text("x")
    drift = pipelines.check(_catalog(ENTRY, ENTRY | {"name": "new"}), out)
    assert drift == [
        f"{out}/iris-classifier.gocd.yaml: differs from the catalog",
        f"{out}/new.gocd.yaml: missing",
        f"{out}/old.gocd.yaml: stale (no model generates it)",
    ]


# -- the command line -------------------------------------------------------------------------------


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False, standalone_mode=False)


def test_cli_generate_and_validate(tmp_path):
    path = _write_catalog(tmp_path / "models.yaml", [ENTRY])
    out, routes = tmp_path / "out", tmp_path / "routes.yaml"
    result = _run("gocd", "generate", "--catalog", str(path), "--out", str(out), "--routes", str(routes),
                  "--output", "json")  # fmt: skip
    assert json.loads(result.output) == {
        "files": 1, "models": 1, "out": str(out), "pipelines": 3, "routes": str(routes),
        "timers": 0, "busiest_hour": None, "busiest_hour_starts": 0,
    }  # fmt: skip
    result = _run("gocd", "validate", str(out), "--routes", str(routes), "--output", "json")
    assert json.loads(result.output) == {"files": 1, "issues": 0, "pipelines": 3, "problems": []}
    result = _run("gocd", "generate", "--catalog", str(path), "--out", str(out), "--check")
    assert "up_to_date: True" in result.output


def test_cli_bad_catalog_writes_nothing(tmp_path):
    bad = dict(ENTRY)
    del bad["entry_point"]
    path = _write_catalog(tmp_path / "models.yaml", [bad, ENTRY])
    with pytest.raises(PipelineError, match=r"models\[0\] \(iris-classifier\): field 'entry_point': missing"):
        _run("gocd", "generate", "--catalog", str(path), "--out", str(tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.yaml"]


def test_cli_validate_reports_every_problem_and_fails(tmp_path):
    path = tmp_path / "bad.gocd.yaml"
    path.write_text("format_version: 9\npipelines:\n  p:\n    group: g\n    materials: {}\n")
    with pytest.raises(PipelineError) as caught:
        _run("gocd", "validate", str(path))
    message = str(caught.value)
    assert "2 problems in 1 file(s)" in message
    assert f"{path}: format_version: must be 10, not 9" in message
    assert f"{path}: pipeline p: materials: must not be empty" in message
    assert f"{path}: pipeline p: has neither `template` nor `stages`" not in message  # schema first


def test_cli_needs_a_catalog_or_the_registry(tmp_path):
    import click

    with pytest.raises(click.UsageError):
        _run("gocd", "generate", "--out", str(tmp_path / "out"))


def test_cli_from_registry(tmp_path, monkeypatch):
    import mlflow

    registered = {"iris": {
        "gocd.team": "ds", "gocd.repository": "https://g/r.git", "gocd.entry_point": "python train.py",
        "gocd.test_data": "data/test.csv", "gocd.target": "species", "gocd.aliases": "champion",
        "gocd.production_aliases": "champion", "gocd.deploy.target": "local",
    }}  # fmt: skip
    seen = {}

    class Client:
        def __init__(self, tracking_uri=None):
            seen["uri"] = tracking_uri

    monkeypatch.setattr(mlflow, "MlflowClient", Client)
    monkeypatch.setattr(catalog, "registry_models", lambda client, advance=None: registered)
    out = tmp_path / "out"
    with Answering() as server:  # the command checks that a server answers before it asks the registry
        _run("gocd", "generate", "--from-registry", "--out", str(out), "--tracking-uri", server.url)
        assert seen["uri"] == server.url
        assert sorted(_tree(out)) == ["iris.gocd.yaml"]
        path = _write_catalog(tmp_path / "models.yaml", [ENTRY])
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        with pytest.raises(PipelineError, match="model 'iris-classifier' is not in the registry"):
            _run("gocd", "generate", "--from-registry", "--catalog", str(path), "--out", str(tmp_path / "o2"))
    assert not (tmp_path / "o2").exists()
