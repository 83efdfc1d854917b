"""The sagemaker target's options, names and status mapping, and its predict (the one call moto cannot
answer: no container runs there). Deploy, get, update and remove run against moto in
tests/integration/test_stages_sagemaker_moto.py."""

from __future__ import annotations

import pandas as pd
import pytest

from mlflow_ext.errors import ConfigError, StageFailed
from mlflow_ext.stages.deploy import Deployment, get_target
from mlflow_ext.stages.deploy.sagemaker import check_endpoint_name, status_of


@pytest.fixture
def no_region(monkeypatch):
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_the_region_comes_from_the_option_or_the_aws_environment(no_region):
    with pytest.raises(
        ConfigError, match="no region: pass -o region_name=<region> or set AWS_DEFAULT_REGION"
    ):
        get_target("sagemaker")
    assert get_target("sagemaker", {"region_name": "eu-west-1"}).region == "eu-west-1"
    no_region.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert get_target("sagemaker").region == "eu-central-1"
    no_region.setenv("AWS_REGION", "us-east-2")
    assert get_target("sagemaker").region == "us-east-2"
    assert get_target("sagemaker", {"region_name": "eu-west-1"}).region == "eu-west-1"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"tags": "team=fraud"}, "tags must be a JSON object"),
        ({"tags": '["a"]'}, "tags must be a JSON object"),
        ({"tags": '{"mlflow.version": "9"}'}, "tags mlflow.version are set by the target"),
        ({"instance_count": "two"}, "instance_count must be a whole number"),
        ({"timeout_seconds": "1.5"}, "timeout_seconds must be a whole number"),
        ({"synchronous": "maybe"}, "synchronous must be true or false"),
        ({"colour": "red"}, r"unknown option\(s\) colour"),
    ],
)
def test_bad_options_are_config_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        get_target("sagemaker", {"region_name": "eu-west-1", **config})


def test_user_tags_are_kept_for_the_model():
    target = get_target("sagemaker", {"region_name": "eu-west-1", "tags": '{"team": "fraud", "cost": 7}'})
    assert target.tags == {"team": "fraud", "cost": "7"}


def test_synchronous_reaches_mlflow_as_the_text_it_understands():
    for given, passed in (("true", "True"), ("yes", "True"), ("False", "False"), ("0", "False")):
        assert (
            get_target("sagemaker", {"region_name": "eu-west-1", "synchronous": given}).config["synchronous"]
            == passed
        )


def test_endpoint_names_follow_sagemaker_rules():
    assert check_endpoint_name("iris-classifier-champion") == "iris-classifier-champion"
    for name in ("iris_classifier", "iris.classifier", "-iris", "iris-", "a" * 64):
        with pytest.raises(ConfigError, match="SageMaker endpoint name"):
            check_endpoint_name(name)
    with pytest.raises(ConfigError, match="SageMaker endpoint name"):
        get_target("sagemaker", {"region_name": "eu-west-1"}).get("iris_classifier-champion")


def test_endpoint_status_maps_to_deployment_status():
    assert status_of("InService") == "running"
    assert status_of("Failed") == status_of("UpdateRollbackFailed") == "failed"
    assert status_of("OutOfService") == "stopped"
    assert status_of("Updating") == "updating" and status_of("Creating") == "creating"


class PredictingClient:
    """MLflow's client's predict, as far as the target uses it (moto runs no container to answer)."""

    def __init__(self):
        self.calls = []

    def predict(self, name, frame):
        self.calls.append((name, frame))
        return {"predictions": ["setosa"] * len(frame)}  # MLflow's PredictionsResponse is a dict


def test_predict_sends_a_dataframe_through_mlflows_client(monkeypatch):
    client = PredictingClient()
    uris = []
    monkeypatch.setattr("mlflow.deployments.get_deploy_client", lambda uri: uris.append(uri) or client)
    target = get_target("sagemaker", {"region_name": "eu-west-1"})
    deployment = Deployment("iris-champion", "sagemaker", "iris", "3", "running")
    answer = target.predict(
        deployment, {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}}
    )
    assert answer == {"predictions": ["setosa", "setosa"]} and uris == ["sagemaker:/eu-west-1"]
    name, frame = client.calls[0]
    assert name == "iris-champion" and isinstance(frame, pd.DataFrame)
    assert frame.to_dict("list") == {"a": [1, 3], "b": [2, 4]}

    def refuse(name, frame):
        raise RuntimeError("An error occurred (ModelError) when calling the InvokeEndpoint operation\nmore")

    client.predict = refuse
    with pytest.raises(
        StageFailed, match=r"sagemaker deployment iris-champion: An error occurred \(ModelError\)"
    ):
        target.predict(deployment, {"dataframe_split": {"columns": ["a"], "data": [[1]]}})
