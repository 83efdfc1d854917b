"""The ``sagemaker`` target: a SageMaker endpoint, made by MLflow's own deployment client
(``mlflow.deployments.get_deploy_client("sagemaker:/<region>")``).

The deployment name is the endpoint name; options pass through as the client's ``config``
(``execution_role_arn``, ``instance_type``, ``instance_count``, ``image_url``, ``bucket``, ...). Deploy
calls ``create_deployment``, or ``update_deployment`` (mode ``replace``) when the endpoint exists: MLflow
downloads ``models:/<name>/<version>``, uploads it as ``<model>/model.tar.gz`` to S3, creates a SageMaker
model tagged ``mlflow.model`` / ``mlflow.version``, an endpoint configuration and the endpoint (or moves
the endpoint to the new configuration and deletes the old model, its archive and configuration), and
waits for ``InService``.

Which version serves is read from the model behind the endpoint (endpoint -> configuration -> variant of
the highest weight -> model tags): the endpoint's own tags are written once, at creation, and still name
the first version after an update. The region is ``-o region_name``, else AWS_REGION or
AWS_DEFAULT_REGION; MLflow's client ignores those and would pick us-west-2 on its own, and some of
its boto3 clients name no region, so both variables are set to the target's region during its calls.

Tested against moto in server mode (tests/integration/test_stages_sagemaker_moto.py): create, no-op
redeploy, update to a new version, get, remove, a missing execution role. What moto cannot show (no
container runs, so predictions are untested; status changes are immediate) is listed in
docs/deploy-targets.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

from mlflow_ext.errors import ConfigError, StageFailed
from mlflow_ext.settings import patched_environ
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
_DELETE_KEYS = ("region_name", "assume_role_arn", "synchronous", "timeout_seconds")
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
MODEL_TAG = "mlflow.model"
VERSION_TAG = "mlflow.version"
ALIAS_TAG = "mlflow.alias"
_STATUS = {
    "InService": "running",
    "Failed": "failed",
    "UpdateRollbackFailed": "failed",
    "OutOfService": "stopped",
}
_SETTLED = frozenset(_STATUS.values())
_ENDPOINT_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def status_of(endpoint_status: str) -> str:
    """A SageMaker EndpointStatus as a deployment status: running, failed, stopped, or in progress
    (creating, updating, systemupdating, rollingback, deleting)."""
    return _STATUS.get(endpoint_status, endpoint_status.lower())


def check_endpoint_name(name: str) -> str:
    if not _ENDPOINT_NAME.fullmatch(name):
        raise ConfigError(
            f"deployment name {name!r}: a SageMaker endpoint name has at most 63 letters, digits and "
            "inner hyphens (no '.' or '_'): pass --name"
        )
    return name


def _aws_message(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error = response["Error"]
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return mlflow_message(exc)


def _not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    return error.get("Code") == "ValidationException" and "Could not find" in str(error.get("Message"))


class SageMakerTarget(DeployTarget):
    name = "sagemaker"
    options: ClassVar[Mapping[str, str]] = {
        key: "passed to mlflow's SageMaker deployment client as config" for key in _CONFIG_KEYS
    }

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        c = self.config
        region = c.get("region_name") or next((os.environ[k] for k in REGION_ENV if os.environ.get(k)), "")
        if not region:
            raise ConfigError(
                "deploy target sagemaker: no region: pass -o region_name=<region> or set AWS_DEFAULT_REGION"
            )
        self.region = str(region)
        for key in ("instance_count", "timeout_seconds"):
            if key in c and not str(c[key]).strip().isdigit():
                raise ConfigError(f"deploy target sagemaker: {key} must be a whole number")
        given: Any = c.get("tags") or {}
        try:
            tags = json.loads(given) if isinstance(given, str) else given
        except ValueError:
            tags = None
        if not isinstance(tags, dict):
            raise ConfigError('deploy target sagemaker: tags must be a JSON object, e.g. {"team": "fraud"}')
        reserved = sorted({MODEL_TAG, VERSION_TAG, ALIAS_TAG, "app_name", "model_uri"} & set(tags))
        if reserved:
            raise ConfigError(f"deploy target sagemaker: tags {', '.join(reserved)} are set by the target")
        self.tags = {str(key): str(value) for key, value in tags.items()}
        if "synchronous" in c:  # MLflow's client takes only the exact text "True" as true
            flag = str(c["synchronous"]).strip().lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError("deploy target sagemaker: synchronous must be true or false")
            self.config["synchronous"] = str(flag in ("true", "1", "yes"))
        self._credentials: dict[str, str] | None = None

    # --- AWS ---

    def _client(self) -> Any:
        from mlflow.deployments import get_deploy_client

        return get_deploy_client(f"sagemaker:/{self.region}")

    @contextlib.contextmanager
    def _in_region(self) -> Iterator[None]:
        """Around MLflow's client calls: some of its boto3 clients (STS, IAM, and S3 for the default
        bucket) name no region and fail without one in the environment, or use another region."""
        with patched_environ(dict.fromkeys(REGION_ENV, self.region)):
            yield

    def _aws(self, service: str) -> Any:
        """A boto3 client in the target's region, as the role ``assume_role_arn`` when given."""
        import boto3

        if self._credentials is None:
            self._credentials = {}
            role = self.config.get("assume_role_arn")
            if role:
                try:
                    found = boto3.client("sts", region_name=self.region).assume_role(
                        RoleArn=role, RoleSessionName="mlflow-ext"
                    )["Credentials"]
                except Exception as exc:
                    raise StageFailed(f"sagemaker: cannot assume role {role}: {_aws_message(exc)}") from None
                self._credentials = {
                    "aws_access_key_id": found["AccessKeyId"],
                    "aws_secret_access_key": found["SecretAccessKey"],
                    "aws_session_token": found["SessionToken"],
                }
        return boto3.client(service, region_name=self.region, **self._credentials)

    def _check_execution_role(self, name: str) -> None:
        """MLflow falls back to the caller's own role, which exists only when the caller is a role."""
        try:
            caller = str(self._aws("sts").get_caller_identity()["Arn"])
        except StageFailed:
            raise
        except Exception as exc:
            raise StageFailed(
                f"sagemaker deployment {name}: cannot tell who the AWS caller is: {_aws_message(exc)}"
            ) from None
        if ":assumed-role/" not in caller:
            raise StageFailed(
                f"sagemaker deployment {name}: no execution role: pass -o execution_role_arn=<ARN of the "
                f"IAM role SageMaker runs the model as> (it may be left out only when the caller is a role; "
                f"the caller is {caller})"
            )

    # --- reading ---

    def get(self, name: str) -> Deployment | None:
        check_endpoint_name(name)
        sagemaker = self._aws("sagemaker")
        try:
            endpoint = sagemaker.describe_endpoint(EndpointName=name)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise StageFailed(f"sagemaker endpoint {name} ({self.region}): {_aws_message(exc)}") from None
        return self._record(sagemaker, endpoint)

    def _record(self, sagemaker: Any, endpoint: Mapping[str, Any]) -> Deployment:
        raw = str(endpoint.get("EndpointStatus") or "")
        details: dict[str, Any] = {
            "region": self.region,
            "endpoint_status": raw,
            "endpoint_config": endpoint.get("EndpointConfigName"),
        }
        if endpoint.get("FailureReason"):
            details["failure_reason"] = endpoint["FailureReason"]
        tags: dict[str, str] = {}
        try:
            tags = self._serving(sagemaker, endpoint, details)
        except Exception as exc:  # an endpoint made by hand, or a configuration deleted under it
            details["serving_error"] = _aws_message(exc)
        modified = endpoint.get("LastModifiedTime")
        return Deployment(
            name=str(endpoint["EndpointName"]),
            target=self.name,
            model=tags.get(MODEL_TAG, ""),
            version=tags.get(VERSION_TAG, ""),
            alias=tags.get(ALIAS_TAG),
            status=status_of(raw),
            endpoint=str(endpoint.get("EndpointArn") or ""),
            deployed_at=modified.isoformat(timespec="seconds") if isinstance(modified, datetime) else None,
            details=details,
        )

    def _serving(
        self, sagemaker: Any, endpoint: Mapping[str, Any], details: dict[str, Any]
    ) -> dict[str, str]:
        """The tags of the model that takes the traffic (the variant of the highest weight)."""
        weights = {
            v["VariantName"]: v.get("CurrentWeight", v.get("DesiredWeight"))
            for v in endpoint.get("ProductionVariants", [])
        }
        config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        variants = config["ProductionVariants"]
        if not variants:
            return {}
        variant = max(
            variants,
            key=lambda v: float(weights.get(v["VariantName"]) or v.get("InitialVariantWeight") or 0),
        )
        model = sagemaker.describe_model(ModelName=variant["ModelName"])
        container = model.get("PrimaryContainer", {})
        details.update(
            sagemaker_model=variant["ModelName"],
            variant=variant["VariantName"],
            variants=len(variants),
            instance_type=variant.get("InstanceType"),
            instance_count=variant.get("InitialInstanceCount"),
            image=container.get("Image"),
            model_data=container.get("ModelDataUrl"),
            execution_role=model.get("ExecutionRoleArn"),
        )
        found = sagemaker.list_tags(ResourceArn=model["ModelArn"]).get("Tags", [])
        return {tag["Key"]: tag["Value"] for tag in found if "Key" in tag}

    # --- changing ---

    def deploy(self, request: DeployRequest, *, force: bool = False) -> Deployment:
        current = self.get(request.name)
        if (
            current is not None
            and not force
            and current.status == "running"
            and (current.model, current.version) == (request.model, request.version)
        ):
            current.changed = False
            return current
        if current is not None and current.status not in _SETTLED:
            raise StageFailed(
                f"sagemaker endpoint {request.name} is {current.details['endpoint_status']}: "
                "deploy again once it is InService or Failed"
            )
        if not self.config.get("execution_role_arn"):
            self._check_execution_role(request.name)
        tags = {**self.tags, MODEL_TAG: request.model, VERSION_TAG: request.version}
        if request.alias:
            tags[ALIAS_TAG] = request.alias
        config: dict[str, Any] = {**self.config, "region_name": self.region, "tags": tags}
        client = self._client()
        try:
            with self._in_region():
                if current is None:
                    client.create_deployment(
                        request.name, model_uri=request.model_uri, flavor="python_function", config=config
                    )
                else:
                    client.update_deployment(
                        request.name,
                        model_uri=request.model_uri,
                        flavor="python_function",
                        config={**config, "mode": "replace"},
                    )
        except Exception as exc:
            raise StageFailed(f"sagemaker deployment {request.name}: {_aws_message(exc)}") from None
        found = self.get(request.name)
        if found is None:
            raise StageFailed(f"sagemaker deployment {request.name}: the endpoint is gone after deploying")
        found.changed = True
        return found

    def stop(self, name: str) -> Deployment:
        """SageMaker bills an endpoint while it exists: stopping one deletes it."""
        return self.remove(name)

    def remove(self, name: str) -> Deployment:
        deployment = self.get(name)
        if deployment is None:
            raise StageFailed(f"no sagemaker deployment named {name} in {self.region}")
        config = {key: self.config[key] for key in _DELETE_KEYS if key in self.config}
        try:
            with self._in_region():
                self._client().delete_deployment(name, config={**config, "region_name": self.region})
        except Exception as exc:
            raise StageFailed(f"sagemaker deployment {name}: {_aws_message(exc)}") from None
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
