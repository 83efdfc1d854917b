"""The deploy target interface and its registry by name.

A target turns a registered model version into something that answers predictions under a deployment
name, finds that deployment again by name (the smoke test does), stops and removes it. Targets come
from this package (``local``, ``sagemaker``) and from the ``mlflow_ext.deploy_targets`` entry-point
group, whose entries name a DeployTarget subclass::

    [project.entry-points."mlflow_ext.deploy_targets"]
    k8s = "acme_deploy.k8s:KubernetesTarget"

A target is built with a mapping of string options (``--root``, ``--mode``, ``--option KEY=VALUE``
on the command line); it rejects keys it does not know with ConfigError.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from mlflow_ext.errors import ConfigError, StageFailed

ENTRY_POINT_GROUP = "mlflow_ext.deploy_targets"
BUILTIN = {
    "local": "mlflow_ext.stages.deploy.local:LocalTarget",
    "sagemaker": "mlflow_ext.stages.deploy.sagemaker:SageMakerTarget",
}


@dataclass(frozen=True)
class DeployRequest:
    """What to deploy: a registered version, under a name, on an optional port."""

    name: str
    model: str
    version: str
    alias: str | None = None
    port: int | None = None

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


@dataclass
class Deployment:
    """A deployment as its target records it. ``endpoint`` is the base URL of the scoring server
    (``<endpoint>/invocations``, ``<endpoint>/ping``) when the target serves over HTTP."""

    name: str
    target: str
    model: str
    version: str
    status: str  # running, stopped, failed
    endpoint: str | None = None
    alias: str | None = None
    deployed_at: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    changed: bool = False  # not stored: whether this call changed anything

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model_uri": self.model_uri}

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("changed")
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        known = {name for name in cls.__dataclass_fields__ if name != "changed"}
        return cls(**{key: value for key, value in data.items() if key in known})


class DeployTarget(abc.ABC):
    """One way of serving models. Subclasses set ``name`` and ``options`` (the keys they accept)."""

    name: ClassVar[str]
    options: ClassVar[Mapping[str, str]] = {}  # option key -> one-line meaning

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(
                f"deploy target {self.name}: unknown option(s) {', '.join(unknown)} (known: {known})"
            )
        self.config = config

    @abc.abstractmethod
    def deploy(self, request: DeployRequest, *, force: bool = False) -> Deployment:
        """Serve ``request``'s version under its name; unchanged when that version already serves."""

    @abc.abstractmethod
    def get(self, name: str) -> Deployment | None:
        """The recorded deployment called ``name``, or None."""

    @abc.abstractmethod
    def stop(self, name: str) -> Deployment:
        """Stop serving (keeping what is needed to start again); StageFailed when unknown."""

    def remove(self, name: str) -> Deployment:
        """Stop and delete everything the deployment left behind."""
        return self.stop(name)

    def predict(self, deployment: Deployment, payload: Mapping[str, Any], timeout: float = 30) -> Any:
        """POST ``payload`` to ``<endpoint>/invocations`` and return the decoded answer."""
        import requests

        if not deployment.endpoint:
            raise StageFailed(f"deployment {deployment.name} records no endpoint")
        url = deployment.endpoint.rstrip("/") + "/invocations"
        try:
            response = requests.post(url, json=payload, timeout=timeout)
        except requests.RequestException as exc:
            raise StageFailed(f"deployment {deployment.name}: {url} did not answer: {exc}") from None
        if response.status_code != 200:
            raise StageFailed(
                f"deployment {deployment.name}: {url} answered {response.status_code}: {response.text[:500]}"
            )
        try:
            return response.json()
        except ValueError:
            raise StageFailed(
                f"deployment {deployment.name}: {url} answered non-JSON: {response.text[:200]}"
            ) from None


def _load(reference: str) -> type[DeployTarget]:
    import importlib

    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def available() -> dict[str, str]:
    """Target name -> ``module:Class``: the built-in ones, then entry points (which cannot replace them)."""
    from importlib.metadata import entry_points

    found = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def get_target(name: str, config: Mapping[str, str] | None = None) -> DeployTarget:
    targets = available()
    if name not in targets:
        raise ConfigError(f"unknown deploy target {name!r} (available: {', '.join(sorted(targets))})")
    try:
        cls = _load(targets[name])
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"deploy target {name} ({targets[name]}) cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, DeployTarget)):
        raise ConfigError(f"deploy target {name} ({targets[name]}) is not a DeployTarget")
    return cls(config)
