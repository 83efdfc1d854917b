"""The stage commands' command lines: env fallbacks, clear errors, exit codes."""

from __future__ import annotations

import json

from click.testing import CliRunner

from mlflow_ext.cli import main
from tests.support.answering import Answering


def run(args, env=None):
    result = CliRunner().invoke(main, args, env=env or {}, standalone_mode=False, catch_exceptions=True)
    return result


def test_every_stage_command_is_registered():
    for name in ("register", "verify-data", "evaluate", "deploy", "smoke-test"):
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "--output" in result.output


def test_register_needs_a_pipeline_instance():
    result = run(["register", "--model", "iris"], env={"GO_PIPELINE_NAME": "", "GO_PIPELINE_COUNTER": ""})
    assert "no pipeline instance" in str(result.exception)


def test_deploy_names_what_is_missing(tmp_path):
    result = run(["deploy", "--root", str(tmp_path)], env={"MLFLOW_MODEL_NAME": ""})
    assert "no model name" in str(result.exception)
    result = run(["deploy", "--root", str(tmp_path), "--model", "iris"], env={"MLFLOW_MODEL_ALIAS": ""})
    assert "no deployment name" in str(result.exception)
    result = run(["deploy", "--target", "nowhere", "--name", "x"])
    assert "unknown deploy target 'nowhere'" in str(result.exception)
    result = run(["deploy", "--root", str(tmp_path), "--name", "x", "-o", "novalue"])
    assert "expected KEY=VALUE" in str(result.exception)


def test_deploy_stop_dry_run_and_unknown_name(tmp_path):
    result = run(
        [
            "deploy",
            "--root",
            str(tmp_path),
            "--name",
            "iris-champion",
            "--stop",
            "--dry-run",
            "--output",
            "json",
        ]
    )
    assert json.loads(result.output) == {
        "action": "stop",
        "changed": False,
        "dry_run": True,
        "name": "iris-champion",
    }
    result = run(["deploy", "--root", str(tmp_path), "--name", "iris-champion", "--stop"])
    assert "no local deployment named iris-champion" in str(result.exception)
    assert result.exception.exit_code == 7


def test_deploy_name_from_the_bridge_variables(tmp_path):
    env = {"MLFLOW_MODEL_NAME": "Iris Classifier", "MLFLOW_MODEL_ALIAS": "champion"}
    result = run(["deploy", "--root", str(tmp_path), "--stop"], env=env)
    assert "no local deployment named iris-classifier-champion" in str(result.exception)


def test_register_reads_an_experiment_name_with_spaces_whole(monkeypatch):
    from mlflow_ext.stages import register

    seen = {}

    def fake(client, model, pipeline, counter, *, experiments, logged_model):
        seen["experiments"] = experiments
        raise register.StageFailed("stop here")

    monkeypatch.setattr(register, "register", fake)
    monkeypatch.setattr("mlflow.set_tracking_uri", lambda uri: None)  # keep this process's default
    env = {"GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "1", "MLFLOW_EXPERIMENT_NAME": "Iris Team Runs"}
    with Answering() as server:  # the command checks that a server answers before it starts
        run(["register", "--model", "iris", "--tracking-uri", server.url], env=env)
    assert seen["experiments"] == ("Iris Team Runs",)
