"""The ``sagemaker`` target: a thin layer over ``mlflow.deployments.get_deploy_client("sagemaker")``.

Documented in docs/deploy-targets.md and not exercised by the test suite (it needs an AWS account, an
execution role and the ``mlflow-pyfunc`` image pushed to ECR: ``mlflow sagemaker build-and-push-container``).
The deployment name is the SageMaker endpoint name; options pass through as the client's ``config``
(``region_name``, ``execution_role_arn``, ``instance_type``, ``instance_count``, ``image_url``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mlflow_ext.errors import StageFailed
from mlflow_ext.stages.common import mlflow_message
from mlflow_ext.stages.deploy.base import Deployment, DeployRequest, DeployTarget

_CONFIG_KEYS = (
    "region_name",
    "execution_role_arn",
    "instance_type",
    "instance_count",
    "image_url",
    "bucket",
    "vpc_config",
    "synchronous",
    "timeout_seconds",
    "assume_role_arn",
    "env",
    "tags",
)


class SageMakerTarget(DeployTarget):
    name = "sagemaker"
    options: ClassVar[Mapping[str, str]] = {
        key: "passed to mlflow's SageMaker deployment client as config" for key in _CONFIG_KEYS
    }

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        region = self.config.get("region_name")
        self._uri = f"sagemaker:/{region}" if region else "sagemaker"

    def _client(self) -> Any:
        from mlflow.deployments import get_deploy_client

        return get_deploy_client(self._uri)

    def _record(self, found: Mapping[str, Any], name: str, changed: bool = False) -> Deployment:
        tags = {tag["Key"]: tag["Value"] for tag in found.get("Tags", []) if "Key" in tag}
        return Deployment(
            name=name,
            target=self.name,
            model=tags.get("mlflow.model", ""),
            version=tags.get("mlflow.version", ""),
            status="running"
            if found.get("EndpointStatus") == "InService"
            else str(found.get("EndpointStatus")),
            endpoint=str(found.get("EndpointArn") or ""),
            details={"sagemaker": {key: str(value) for key, value in found.items() if key != "Tags"}},
            changed=changed,
        )

    def deploy(self, request: DeployRequest, *, force: bool = False) -> Deployment:
        client = self._client()
        config = {**self.config, "tags": {"mlflow.model": request.model, "mlflow.version": request.version}}
        try:
            exists = self.get(request.name) is not None
            call = client.update_deployment if exists else client.create_deployment
            call(request.name, model_uri=request.model_uri, flavor="python_function", config=config)
            found = client.get_deployment(request.name)
        except Exception as exc:
            raise StageFailed(f"sagemaker deployment {request.name}: {mlflow_message(exc)}") from None
        return self._record(found, request.name, changed=True)

    def get(self, name: str) -> Deployment | None:
        try:
            found = self._client().get_deployment(name)
        except Exception:
            return None
        return self._record(found, name)

    def stop(self, name: str) -> Deployment:
        return self.remove(name)

    def remove(self, name: str) -> Deployment:
        deployment = self.get(name)
        if deployment is None:
            raise StageFailed(f"no sagemaker deployment named {name}")
        try:
            self._client().delete_deployment(name, config=dict(self.config))
        except Exception as exc:
            raise StageFailed(f"sagemaker deployment {name}: {mlflow_message(exc)}") from None
        deployment.status, deployment.changed = "removed", True
        return deployment

    def predict(self, deployment: Deployment, payload: Mapping[str, Any], timeout: float = 30) -> Any:
        import pandas as pd

        split = payload["dataframe_split"]
        frame = pd.DataFrame(split["data"], columns=split["columns"])
        try:
            answer = self._client().predict(deployment.name, frame)
        except Exception as exc:
            raise StageFailed(f"sagemaker deployment {deployment.name}: {mlflow_message(exc)}") from None
        return answer.to_dict() if hasattr(answer, "to_dict") else answer
