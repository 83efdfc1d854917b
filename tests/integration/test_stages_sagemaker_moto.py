"""`mlflow-ext deploy --target sagemaker` against an AWS stand-in: moto in server mode (SageMaker, S3, STS,
IAM) on a free loopback port, reached through AWS_ENDPOINT_URL by every boto3 client MLflow's SageMaker
client makes. The versions come from the real platform's registry (Postgres, SeaweedFS, MLflow server).

What this shows: the endpoint, its configuration and the SageMaker model as MLflow's client creates them;
the version's archive in moto's S3; an update moving the endpoint to the new version (and cleaning the
old one up); `get` naming the version that serves; removal; the deploy.* tags on the version; a missing
execution role refused before anything is created. What it cannot show: no container runs, so nothing
is predicted, and moto's endpoints are InService at once (docs/deploy-targets.md).

An update costs about 20 s: MLflow's client waits that long before it first checks an updated endpoint.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.environ import patched_environ
from tests.support.moto_aws import ACCOUNT_ID, MotoAWS, moto_server
from tests.support.services import Platform

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
REGION = "eu-west-1"
BUCKET = f"mlflow-sagemaker-{REGION}-{ACCOUNT_ID}"  # MLflow's default bucket for the region and account
INSTANCE_TYPE = "ml.m5.large"
STAGE_FAILED = 7


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoAWS]:
    with moto_server(tmp_path_factory.mktemp("aws")) as server:
        yield server


@pytest.fixture(scope="module")
def role(aws: MotoAWS) -> str:
    """The execution role SageMaker would run the model as."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    created = aws.client("iam").create_role(
        RoleName="mlflow-sagemaker-execution", AssumeRolePolicyDocument=json.dumps(trust)
    )
    return str(created["Role"]["Arn"])


@pytest.fixture(scope="module")
def registry(platform: Platform) -> Iterator[Any]:
    from mlflow import MlflowClient

    with patched_environ({**platform.client_env(), "MLFLOW_DISABLE_TELEMETRY": "true"}):
        yield MlflowClient(tracking_uri=platform.tracking_uri)


@pytest.fixture(scope="module")
def versions(platform: Platform, registry: Any) -> dict[str, Any]:
    """Two versions of one registered model, each from its own run: version -> run id."""
    import mlflow
    from mlflow.pyfunc import PythonModel

    class Model(PythonModel):  # never run: no container runs under moto
        def predict(self, context, model_input, params=None):
            return model_input

    name = f"sagemaker-{uuid.uuid4().hex[:8]}"
    experiment = registry.create_experiment(f"{name}-experiment")
    runs = {}
    with patched_environ({**platform.client_env(), "MLFLOW_DISABLE_TELEMETRY": "true"}):
        for _ in range(2):
            with mlflow.start_run(experiment_id=experiment) as run:
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=Model(),
                    pip_requirements=[f"mlflow=={mlflow.__version__}"],
                    registered_model_name=name,
                )
            runs[str(info.registered_model_version)] = run.info.run_id
    assert sorted(runs) == ["1", "2"]
    return {
        "model": name,
        "runs": runs,
        "image": f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/mlflow-pyfunc",
    }


class Deploy:
    """Runs `mlflow-ext deploy --target sagemaker` as a GoCD job would, against moto."""

    def __init__(self, platform: Platform, aws: MotoAWS, model: str, options: list[str]) -> None:
        self.model, self.name = model, f"{model}-champion"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AWS_", "GO_", "MLFLOW_MODEL_", "MLFLOW_EXT_DEPLOY"))
        }
        self.env = {
            **env,
            **platform.client_env(),
            **aws.env(),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        }
        self.raw = options
        self.options = [part for option in options for part in ("-o", option)]

    def run(
        self, *args: str, expect: int = 0, options: list[str] | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [
                str(VENV_BIN / "mlflow-ext"),
                "deploy",
                "--target",
                "sagemaker",
                *(options or self.options),
                *args,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == expect, f"{args}: exit {result.returncode}\n{result.stderr[-3000:]}"
        return result

    def version(self, version: str) -> dict[str, Any]:
        result = self.run(
            "--model", self.model, "--version", version, "--alias", "champion", "--output", "json"
        )
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def deploy(platform: Platform, aws: MotoAWS, role: str, versions: dict[str, Any]) -> Deploy:
    import mlflow

    return Deploy(
        platform,
        aws,
        versions["model"],
        [
            f"region_name={REGION}",
            f"execution_role_arn={role}",
            f"image_url={versions['image']}:{mlflow.__version__}",
            f"instance_type={INSTANCE_TYPE}",
            "instance_count=1",
            'tags={"team": "platform"}',
        ],
    )


def target_get(aws: MotoAWS, name: str) -> Any:
    """The deploy target's own view, in this process (the CLI has no read-only command for it)."""
    from mlflow_ext.stages.deploy import get_target

    with patched_environ(aws.env()):
        return get_target("sagemaker", {"region_name": REGION}).get(name)


def serving(aws: MotoAWS, name: str) -> dict[str, Any]:
    """What moto holds for the endpoint: its configuration, the model behind it, the model's tags."""
    sagemaker = aws.client("sagemaker", REGION)
    endpoint = sagemaker.describe_endpoint(EndpointName=name)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=model["ModelArn"])["Tags"]}
    return {"endpoint": endpoint, "config": config, "variant": variant, "model": model, "tags": tags}


def archived_run_id(aws: MotoAWS, model_data_url: str) -> str:
    """The run id in the MLmodel file of the model.tar.gz that MLflow uploaded to S3."""
    assert model_data_url.startswith(f"s3://{BUCKET}/")
    key = model_data_url.removeprefix(f"s3://{BUCKET}/")
    body = aws.client("s3", REGION).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as archive:
        member = archive.extractfile("MLmodel")
        assert member is not None
        return str(yaml.safe_load(member.read())["run_id"])


def test_a_missing_execution_role_fails_before_anything_is_created(deploy, aws, versions):
    options = [o for o in deploy.raw if not o.startswith("execution_role_arn=")]
    result = deploy.run(
        "--model",
        deploy.model,
        "--version",
        "1",
        "--name",
        "no-role",
        options=[part for option in options for part in ("-o", option)],
        expect=STAGE_FAILED,
    )
    assert "sagemaker deployment no-role: no execution role: pass -o execution_role_arn=" in result.stderr
    assert f"arn:aws:sts::{ACCOUNT_ID}:user/" in result.stderr  # moto's caller is a user, not a role
    assert "Traceback" not in result.stderr
    sagemaker = aws.client("sagemaker", REGION)
    assert sagemaker.list_endpoints()["Endpoints"] == [] and sagemaker.list_models()["Models"] == []


@pytest.fixture(scope="module")
def created(deploy: Deploy) -> dict[str, Any]:
    return deploy.version("1")


def test_deploy_creates_the_endpoint_from_the_registered_version(
    created, deploy, aws, role, versions, registry
):
    assert created["changed"] is True and created["target"] == "sagemaker"
    assert (created["name"], created["model"], created["version"]) == (deploy.name, deploy.model, "1")
    assert created["status"] == "running" and created["alias"] == "champion"
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT_ID}:endpoint/{deploy.name}"
    assert created["endpoint"] == arn

    found = serving(aws, deploy.name)
    assert found["endpoint"]["EndpointStatus"] == "InService" and found["endpoint"]["EndpointArn"] == arn
    assert found["variant"]["InstanceType"] == INSTANCE_TYPE and found["variant"]["InitialInstanceCount"] == 1
    assert found["model"]["ExecutionRoleArn"] == role
    assert found["model"]["PrimaryContainer"]["Image"].startswith(versions["image"] + ":")
    assert found["tags"]["mlflow.model"] == deploy.model and found["tags"]["mlflow.version"] == "1"
    assert found["tags"]["model_uri"] == f"models:/{deploy.model}/1" and found["tags"]["team"] == "platform"
    assert archived_run_id(aws, found["model"]["PrimaryContainer"]["ModelDataUrl"]) == versions["runs"]["1"]
    assert created["details"]["model_data"] == found["model"]["PrimaryContainer"]["ModelDataUrl"]

    tags = registry.get_model_version(deploy.model, "1").tags
    assert tags["deploy.target"] == "sagemaker" and tags["deploy.name"] == deploy.name
    assert tags["deploy.endpoint"] == arn


def test_deploying_the_serving_version_again_changes_nothing(created, deploy, aws):
    before = serving(aws, deploy.name)
    again = deploy.version("1")
    assert again["changed"] is False and again["version"] == "1" and again["status"] == "running"
    after = serving(aws, deploy.name)
    assert after["endpoint"]["EndpointConfigName"] == before["endpoint"]["EndpointConfigName"]
    assert after["model"]["ModelName"] == before["model"]["ModelName"]


@pytest.fixture(scope="module")
def updated(created: dict[str, Any], deploy: Deploy, aws: MotoAWS) -> dict[str, Any]:
    before = serving(aws, deploy.name)
    return {"before": before, "result": deploy.version("2")}


def test_a_new_version_moves_the_endpoint_to_a_new_model(updated, deploy, aws, versions, registry):
    before, result = updated["before"], updated["result"]
    assert result["changed"] is True and result["version"] == "2" and result["status"] == "running"
    found = serving(aws, deploy.name)
    assert found["endpoint"]["EndpointConfigName"] != before["endpoint"]["EndpointConfigName"]
    assert found["model"]["ModelName"] != before["model"]["ModelName"]
    assert found["tags"]["mlflow.version"] == "2"
    assert archived_run_id(aws, found["model"]["PrimaryContainer"]["ModelDataUrl"]) == versions["runs"]["2"]
    # The endpoint's own tags still name version 1: the target reads the model's.
    sagemaker = aws.client("sagemaker", REGION)
    endpoint_tags = sagemaker.list_tags(ResourceArn=found["endpoint"]["EndpointArn"])["Tags"]
    assert {"Key": "mlflow.version", "Value": "1"} in endpoint_tags
    # Replace mode: the old model, its archive and the old configuration are gone.
    assert [m["ModelName"] for m in sagemaker.list_models()["Models"]] == [found["model"]["ModelName"]]
    configs = [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]]
    assert configs == [found["endpoint"]["EndpointConfigName"]]
    keys = [o["Key"] for o in aws.client("s3", REGION).list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys == [f"{found['model']['ModelName']}/model.tar.gz"]

    got = target_get(aws, deploy.name)
    assert (got.version, got.model, got.status, got.alias) == ("2", deploy.model, "running", "champion")
    assert got.details["endpoint_config"] == found["endpoint"]["EndpointConfigName"]
    tags = registry.get_model_version(deploy.model, "2").tags
    assert tags["deploy.target"] == "sagemaker" and tags["deploy.name"] == deploy.name
    assert tags["deploy.endpoint"] == found["endpoint"]["EndpointArn"]


def test_remove_deletes_the_endpoint_its_model_and_archive(updated, deploy, aws):
    result = json.loads(deploy.run("--name", deploy.name, "--remove", "--output", "json").stdout)
    assert result["status"] == "removed" and result["changed"] is True and result["version"] == "2"
    sagemaker = aws.client("sagemaker", REGION)
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert sagemaker.list_models()["Models"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert aws.client("s3", REGION).list_objects_v2(Bucket=BUCKET).get("Contents", []) == []
    assert target_get(aws, deploy.name) is None
    again = deploy.run("--name", deploy.name, "--stop", expect=STAGE_FAILED)
    assert f"no sagemaker deployment named {deploy.name} in {REGION}" in again.stderr
