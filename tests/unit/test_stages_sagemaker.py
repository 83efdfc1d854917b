"""The sagemaker target delegates to mlflow.deployments' client (a fake here: no AWS in tests)."""

from __future__ import annotations

import pandas as pd
import pytest

from mlflow_ext.errors import StageFailed
from mlflow_ext.stages.deploy import DeployRequest, get_target


class FakeClient:
    def __init__(self):
        self.endpoints: dict[str, dict] = {}
        self.calls: list[tuple] = []

    def create_deployment(self, name, model_uri, flavor, config):
        self.calls.append(("create", name, model_uri, flavor, config))
        tags = [{"Key": key, "Value": value} for key, value in config["tags"].items()]
        self.endpoints[name] = {
            "EndpointName": name,
            "EndpointArn": f"arn:{name}",
            "EndpointStatus": "InService",
            "Tags": tags,
        }

    def update_deployment(self, name, model_uri, flavor, config):
        self.create_deployment(name, model_uri, flavor, config)
        self.calls[-1] = ("update", name, model_uri, flavor, config)

    def get_deployment(self, name):
        if name not in self.endpoints:
            raise RuntimeError("Could not find endpoint")
        return self.endpoints[name]

    def delete_deployment(self, name, config=None):
        self.calls.append(("delete", name))
        del self.endpoints[name]

    def predict(self, name, frame):
        assert isinstance(frame, pd.DataFrame)
        return {"predictions": ["setosa"] * len(frame)}  # MLflow's PredictionsResponse is a dict


@pytest.fixture
def fake(monkeypatch):
    client = FakeClient()
    uris = []

    def get_deploy_client(uri):
        uris.append(uri)
        return client

    monkeypatch.setattr("mlflow.deployments.get_deploy_client", get_deploy_client)
    client.uris = uris
    return client


def test_deploy_creates_then_updates_and_records_the_version(fake):
    target = get_target("sagemaker", {"region_name": "eu-west-1", "instance_type": "ml.m5.large"})
    first = target.deploy(DeployRequest("iris-champion", "iris", "3", "champion"))
    assert fake.uris[0] == "sagemaker:/eu-west-1"
    kind, name, uri, flavor, config = fake.calls[0]
    assert (kind, name, uri, flavor) == ("create", "iris-champion", "models:/iris/3", "python_function")
    assert config["instance_type"] == "ml.m5.large" and config["tags"] == {
        "mlflow.model": "iris",
        "mlflow.version": "3",
    }
    assert first.status == "running" and first.version == "3" and first.endpoint == "arn:iris-champion"
    target.deploy(DeployRequest("iris-champion", "iris", "4", "champion"))
    assert fake.calls[-1][0] == "update" and target.get("iris-champion").version == "4"


def test_predict_and_remove(fake):
    target = get_target("sagemaker")
    deployment = target.deploy(DeployRequest("iris-champion", "iris", "3"))
    answer = target.predict(deployment, {"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}})
    assert answer == {"predictions": ["setosa", "setosa"]}
    assert target.remove("iris-champion").status == "removed"
    assert target.get("iris-champion") is None
    with pytest.raises(StageFailed, match="no sagemaker deployment named iris-champion"):
        target.stop("iris-champion")
