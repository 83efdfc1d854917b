"""Stage helpers: version resolution from options and GoCD variables, recorded data, names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlflow_ext.data import Column, DataFingerprint
from mlflow_ext.errors import ConfigError, StageFailed
from mlflow_ext.stages import common


class FakeClient:
    def __init__(self, versions=()):
        self.versions = list(versions)
        self.queries = []

    def get_model_version(self, name, version):
        for item in self.versions:
            if item.name == name and item.version == version:
                return item
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        raise MlflowException("nope", error_code=RESOURCE_DOES_NOT_EXIST)

    def search_model_versions(self, query):
        self.queries.append(query)
        counter = query.rsplit("=", 1)[1].strip(" '")
        return [item for item in self.versions if item.tags.get(common.BUILD_COUNTER) == counter]


def version(number, **tags):
    return SimpleNamespace(name="iris", version=str(number), tags=tags, run_id="r1", model_id=None)


def test_schema_text_round_trips_with_bracketed_types():
    columns = (Column("a", "int64"), Column("when", "timestamp[us, tz=UTC]"), Column("x:y", "string"))
    text = DataFingerprint("u", "sha256:00", 1, 1, schema=columns).schema_text()
    assert common.parse_schema(text) == columns


def test_recorded_data_reads_log_data_tags():
    tags = {
        "lineage.data.test.csv.fingerprint": "sha256:ab",
        "lineage.data.test.csv.role": "test",
        "lineage.data.test.csv.rows": "30",
        "lineage.data.test.csv.schema": "a:int64, b:string",
        "lineage.data.train.csv.fingerprint": "sha256:cd",
        "other": "x",
    }
    found = common.recorded_data(tags)
    assert [item.name for item in found] == ["test.csv", "train.csv"]
    assert found[0].rows == 30 and found[0].role == "test"
    assert found[0].schema == (Column("a", "int64"), Column("b", "string"))
    assert found[1].rows is None and found[1].schema is None


def test_version_comes_from_option_then_env_then_uri():
    assert common.version_option("3", {"MLFLOW_MODEL_VERSION": "4"}) == "3"
    assert common.version_option(None, {"MLFLOW_MODEL_VERSION": "4"}) == "4"
    assert common.version_option(None, {"MLFLOW_MODEL_VERSION": "", "MLFLOW_MODEL_URI": "models:/m/5"}) == "5"
    assert common.version_option(None, {}) is None
    with pytest.raises(ConfigError, match="whole number"):
        common.version_option("v2", {})


def test_model_name_falls_back_to_the_uri_and_names_what_is_missing():
    assert common.model_name(None, {"MLFLOW_MODEL_URI": "models:/iris/2"}) == "iris"
    with pytest.raises(ConfigError, match="MLFLOW_MODEL_NAME"):
        common.model_name(None, {})
    with pytest.raises(ConfigError, match="MLFLOW_MODEL_URI"):
        common.model_name(None, {"MLFLOW_MODEL_URI": "nonsense"})


def test_resolve_version_in_a_build_pipeline_finds_what_it_registered():
    client = FakeClient([version(1), version(2, **{common.BUILD_PIPELINE: "p", common.BUILD_COUNTER: "7"})])
    env = {"GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "7"}
    assert common.resolve_version(client, "iris", None, env).version == "2"
    assert "tags.`build.pipeline` = 'p'" in client.queries[0]
    assert common.resolve_version(client, "iris", "1", env).version == "1"
    with pytest.raises(StageFailed, match="has no version 9"):
        common.resolve_version(client, "iris", "9", {})
    with pytest.raises(StageFailed, match="registered no version"):
        common.resolve_version(client, "iris", None, {"GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "8"})
    with pytest.raises(ConfigError, match="no model version"):
        common.resolve_version(client, "iris", None, {})


def test_search_literals_refuse_quotes():
    with pytest.raises(ConfigError, match="single quote"):
        common.quoted("it's", "model name")


@pytest.mark.parametrize(
    ("model", "alias", "version", "expected"),
    [
        ("iris-classifier", "champion", None, "iris-classifier-champion"),
        ("Team/Iris Model", "Prod", "3", "team-iris-model-prod"),
        ("iris", None, "3", "iris-v3"),
    ],
)
def test_deployment_names(model, alias, version, expected):
    assert common.deployment_name(model, alias, version) == expected


def test_deployment_name_checks():
    with pytest.raises(ConfigError):
        common.deployment_name("iris", None, None)
    with pytest.raises(ConfigError):
        common.check_name("../etc")
    assert common.check_name("iris-champion") == "iris-champion"
