"""The promotion policy file: parsing, matching, and errors that name the file, the entry and the problem."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlflow_ext import server, settings
from mlflow_ext.errors import ConfigError
from mlflow_ext.policy import rules
from mlflow_ext.policy.rules import BUILTIN, MetricRule, load, load_optional, parse
from tests.support.services import VENV_BIN

EXAMPLE = """\
defaults:
  require: [code, training_data]
models:
  - name: "iris-*"
    aliases: [champion, "prod*"]
    require: [code, training_data, "lineage.ci.*"]
    metrics:
      accuracy: {min: 0.9, better: higher, max_regression: 0.01}
      rmse: {max: 0.5, better: lower, max_regression: 0.02}
      f1: {min: 0.85, from: evaluation}
  - name: "iris-*"
    metrics:
      accuracy: {min: 0.8}
  - name: churn
    require: []
"""


def test_builtin_policy_requires_code_and_training_data():
    rules = BUILTIN.rules_for("anything", "production")
    assert rules.require == ("code", "training_data")
    assert rules.metrics == ()
    assert load_optional(None) is BUILTIN


def test_example_parses_and_the_first_matching_entry_wins(tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)
    policy = load(str(path))

    prod = policy.rules_for("iris-classifier", "Production")  # aliases compare case-insensitively
    assert prod.require == ("code", "training_data", "lineage.ci.*")
    assert prod.metrics == (
        MetricRule("accuracy", min=0.9, better="higher", max_regression=0.01),
        MetricRule("rmse", max=0.5, better="lower", max_regression=0.02),
        MetricRule("f1", min=0.85, source="evaluation"),
    )
    assert prod.source == f"models[0] (name 'iris-*') of {path}"

    staging = policy.rules_for("iris-classifier", "staging")  # falls through to the next entry
    assert staging.metrics == (MetricRule("accuracy", min=0.8),)
    assert staging.require == ("code", "training_data")  # inherited from defaults

    assert policy.rules_for("churn", "production").require == ()
    other = policy.rules_for("fraud", "production")
    assert other.source == f"defaults of {path}" and other.require == ("code", "training_data")


def test_an_empty_file_is_the_builtin_policy(tmp_path: Path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load(str(path)).rules_for("m", "a").require == ("code", "training_data")


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("- a\n", "top level", "expected a mapping"),
        ("model: []\n", "top level", "unknown key 'model'"),
        ("version: 2\n", "top level", "version must be 1"),
        ("defaults: {require: code}\n", "defaults", "require must be a list"),
        ("models:\n  - aliases: [x]\n", "models[0]", "name (a model name or fnmatch pattern) is required"),
        ("models:\n  - {name: a, metric: {}}\n", "models[0] (name 'a')", "unknown key 'metric'"),
        (
            "models:\n  - {name: a}\n  - {name: b, metrics: {acc: {min: high}}}\n",
            "models[1] (name 'b')",
            "metric 'acc': min must be a number, got 'high'",
        ),
        (
            "models:\n  - {name: a, metrics: {rmse: {max_regression: 0.1}}}\n",
            "models[0] (name 'a')",
            "metric 'rmse': max_regression needs better: higher or better: lower",
        ),
        (
            "models:\n  - {name: a, metrics: {acc: {better: up}}}\n",
            "models[0] (name 'a')",
            "better must be higher or lower, got 'up'",
        ),
        (
            "models:\n  - {name: a, metrics: {acc: {min: 0.9, max: 0.5}}}\n",
            "models[0] (name 'a')",
            "min 0.9 is above max 0.5",
        ),
        (
            "models:\n  - {name: a, metrics: {acc: {better: higher, max_regression: -1}}}\n",
            "models[0] (name 'a')",
            "max_regression must be 0 or more",
        ),
        (
            "models:\n  - {name: a, metrics: {acc: 0.9}}\n",
            "models[0] (name 'a')",
            "metric 'acc' needs a mapping",
        ),
        ("models:\n  - {name: a, require: ['bad key!']}\n", "models[0] (name 'a')", "neither code"),
        ("models:\n  - {name: a, aliases: []}\n", "models[0] (name 'a')", "aliases must be"),
        (
            "models:\n  - {name: a, metrics: {f1: {min: 0.8, from: test}}}\n",
            "models[0] (name 'a')",
            "metric 'f1': from must be run or evaluation, got 'test'",
        ),
    ],
)
def test_bad_files_name_file_entry_and_problem(tmp_path: Path, text: str, where: str, problem: str):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    message = str(caught.value)
    assert message.startswith(f"promotion policy {path}: {where}: "), message
    assert problem in message


def test_unreadable_and_invalid_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.yaml"))
    path = tmp_path / "broken.yaml"
    path.write_text("models:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+: not valid YAML"):
        load(str(path))


def test_parse_without_a_file_names_a_placeholder():
    with pytest.raises(ConfigError, match="promotion policy <policy>: top level"):
        parse([])


def test_server_entrypoint_validates_the_file(tmp_path: Path):
    setting = settings.BY_NAME["MLFLOW_EXT_PROMOTION_POLICY"]
    assert setting.parse("") is None
    with pytest.raises(ValueError, match="absolute file path"):
        setting.parse("policy.yaml")
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE)
    environ = {
        "MLFLOW_BACKEND_STORE_URI": "sqlite:///x.db",
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/",
        "MLFLOW_EXT_APP_NAME": "none",
        "MLFLOW_EXT_PROMOTION_POLICY": str(good),
    }
    assert server.resolve(environ)["MLFLOW_EXT_PROMOTION_POLICY"] == str(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: a, metrics: {acc: {min: x}}}\n")
    with pytest.raises(ConfigError, match="MLFLOW_EXT_PROMOTION_POLICY is not a usable policy") as error:
        server.resolve({**environ, "MLFLOW_EXT_PROMOTION_POLICY": str(bad)})
    assert "models[0] (name 'a'): metric 'acc': min must be a number" in str(error.value)


def test_a_policy_file_is_parsed_once_per_version(tmp_path: Path, monkeypatch):
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)
    reads = []
    real_read = rules._read
    monkeypatch.setattr(rules, "_read", lambda p: reads.append(p) or real_read(p))
    first = rules.load(str(path))
    assert rules.load(str(path)) is first and len(reads) == 1
    path.write_text(EXAMPLE + "\n")
    assert rules.load(str(path)) is not first and len(reads) == 2


def test_cli_refuses_a_bad_policy_before_touching_the_registry(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: a, require: code}\n")
    result = subprocess.run(
        [str(VENV_BIN / "mlflow-ext"), "promote", "m", "1", "--to", "production", "--policy", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        },
    )
    assert result.returncode == 3  # config (docs/cli.md)
    assert f"promotion policy {bad}: models[0] (name 'a'): require must be a list" in result.stderr


def test_server_rereads_a_changed_file_and_fails_closed_while_it_is_broken(tmp_path: Path):
    import os

    from mlflow_ext.auth import promotion_gates as enforce

    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)
    enforce.configure(str(path))
    try:
        policy = enforce.configured_policy()
        assert policy is not None and policy.rules_for("churn", "production").require == ()
        path.write_text("models:\n  - {name: churn, require: nope}\n")
        os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock's resolution
        with pytest.raises(ConfigError, match="require must be a list"):
            enforce.configured_policy()
        path.write_text("models:\n  - {name: churn, require: [code]}\n")
        policy = enforce.configured_policy()
        assert policy is not None and policy.rules_for("churn", "production").require == ("code",)
    finally:
        enforce.configure(None)
    assert enforce.configured_policy() is None
    with pytest.raises(ConfigError, match="cannot read"):
        enforce.configure(str(tmp_path / "missing.yaml"))
