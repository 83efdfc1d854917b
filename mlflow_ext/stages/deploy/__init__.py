"""Deploy targets: ``local`` (a venv and a systemd unit, or a supervised process, on this host),
``sagemaker`` (through ``mlflow.deployments``), and any registered under the entry-point group
``mlflow_ext.deploy_targets``. See docs/deploy-targets.md."""

from mlflow_ext.stages.deploy.base import (
    ENTRY_POINT_GROUP,
    Deployment,
    DeployRequest,
    DeployTarget,
    available,
    get_target,
)

__all__ = ["ENTRY_POINT_GROUP", "DeployRequest", "DeployTarget", "Deployment", "available", "get_target"]
