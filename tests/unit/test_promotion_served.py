"""The server's promotion policy as served and read back, and how the CLI picks its policy."""

from __future__ import annotations

import pytest

from mlflow_ext.errors import ConfigError
from mlflow_ext.policy import rules, served
from mlflow_ext.promotion import policy_source

POLICY = """\
defaults:
  require: [code]
models:
  - name: "iris-*"
    metrics:
      accuracy: {min: 0.9}
"""


def test_served_text_parses_to_the_same_rules_as_the_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    body = served.document(str(path))
    assert body["policy"]["yaml"] == POLICY and body["policy"]["path"] == str(path)
    back = served.from_document(body)
    assert back is not None and back.sha256 == body["policy"]["sha256"]
    assert back.policy.rules_for("iris-1", "production") == rules.load(str(path)).rules_for(
        "iris-1", "production"
    )


def test_no_policy_is_served_as_null():
    assert served.document(None) == {"policy": None}
    assert served.from_document({"policy": None}) is None


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"policy": {"path": "/p.yaml", "yaml": POLICY}},
        {"policy": {"path": "/p.yaml", "yaml": POLICY, "sha256": "0" * 64}},
        {"policy": {"path": "/p.yaml", "yaml": "models: 3\n", "sha256": served.sha256("models: 3\n")}},
    ],
)
def test_a_bad_answer_is_a_config_error(body):
    with pytest.raises(ConfigError):
        served.from_document(body)


def test_an_unloadable_file_is_not_served(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("defaults: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        served.document(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        served.document(str(tmp_path / "missing.yaml"))


def test_a_file_wins_and_a_local_tracking_uri_means_built_in(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    chosen = policy_source.choose(str(path), "http://127.0.0.1:9")  # never asked: the file wins
    assert chosen.origin == "file" and chosen.sha256 == served.sha256(POLICY)
    local = policy_source.choose(None, f"file://{tmp_path}/mlruns")
    assert local.origin == "built-in" and local.policy is rules.BUILTIN
    assert "no server" in local.to_dict()["description"]
