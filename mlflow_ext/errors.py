"""Every error mlflow_ext raises on purpose, in one hierarchy. Library code raises these; the CLI is the one
place that turns them into messages and exit codes (``exit_code``), and the bridge's receiver into HTTP
answers (``status``).

| exit code | errors |
|---|---|
| 1 | MlflowExtError, DataError, LineageError, PromotionError, MlflowInternalMissing; and, never |
|   | shown by the CLI: FastYamlUnsupported, DeliveryRefused (SignatureError, EventError), VersionMissing, |
|   | RegistryUnavailable |
| 2 | ConfigError, ModelURIError |
| 3 | MigrationError |
| 4 | PromotionRejected, AuthApiError |
| 5 | GoCDError (GoCDUnavailable, GoCDRejected), ProvisioningError |
| 6 | PipelineError |
| 7 | StageFailed |
"""

from __future__ import annotations

from typing import Any


class MlflowExtError(Exception):
    """Base class: every error the package raises on purpose."""

    exit_code = 1


class ConfigError(MlflowExtError):
    """A setting is missing or invalid. The message names the variable, never its value."""

    exit_code = 2


class MigrationError(MlflowExtError):
    """A database schema migration could not run."""

    exit_code = 3


class MlflowInternalMissing(MlflowExtError):
    """The installed MLflow lacks a private function or attribute listed in mlflow_ext.mlflow_internals."""


# --- data and lineage ---------------------------------------------------------------------------------


class DataError(MlflowExtError):
    """A path or URI that cannot be fingerprinted: missing, unreadable, empty or of an unknown scheme."""


class LineageError(MlflowExtError):
    """The model version or run cannot be read: a malformed URI, or nothing found under it."""


class ModelURIError(LineageError):
    """The URI is not one of the forms ``inspect`` understands."""

    exit_code = 2


# --- promotion ----------------------------------------------------------------------------------------


class PromotionRejected(MlflowExtError):
    """A promotion gate failed. The message names the gate and what it found.

    The server's refusal carries ``error_class`` = ``SERVER_ERROR_CLASS`` in MLflow's error JSON (and the
    failed gates in ``failed_gates``); that, not the message, is how a client recognises it.
    """

    exit_code = 4
    SERVER_ERROR_CLASS = "PROMOTION_GATE_FAILED"

    def __init__(self, message: str, outcome: Any = None) -> None:
        super().__init__(message)
        self.outcome = outcome  # every gate and what it found, for --output json


class PromotionError(MlflowExtError):
    """The registry could not be read or refused the change for a reason other than a gate."""


# --- auth ---------------------------------------------------------------------------------------------


class AuthApiError(MlflowExtError):
    """The auth REST API refused a request or could not be reached."""

    exit_code = 4

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProvisioningError(MlflowExtError):
    """The service account or its token could not be provisioned."""

    exit_code = 5


# --- GoCD ---------------------------------------------------------------------------------------------


class GoCDError(MlflowExtError):
    """GoCD could not do what was asked."""

    exit_code = 5


class GoCDUnavailable(GoCDError):
    """GoCD did not answer, or answered 5xx: worth retrying later."""


class GoCDRejected(GoCDError):
    """GoCD answered 4xx; ``status`` and GoCD's own ``message`` say why."""

    def __init__(self, status: int, message: str, pipeline: str | None = None) -> None:
        self.status = status
        self.message = message
        self.pipeline = pipeline
        where = f" for pipeline {pipeline}" if pipeline else ""
        super().__init__(f"GoCD answered {status}{where}: {message}")


class FastYamlUnsupported(MlflowExtError):
    """The fast YAML reader met something it leaves to PyYAML; never shown, the caller falls back."""


class PipelineError(MlflowExtError):
    """A catalog or pipeline file is invalid; the message names the file, the entry and the rule."""

    exit_code = 6


class StageFailed(MlflowExtError):
    """A release stage (verify-data, evaluate, deploy, smoke-test) found the candidate unfit."""

    exit_code = 7


# --- the bridge ---------------------------------------------------------------------------------------


class DeliveryRefused(MlflowExtError):
    """A webhook delivery the bridge answers with ``status`` (4xx); the message says why, without secrets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignatureError(DeliveryRefused):
    """The delivery is not authentic or not fresh; the message says which check failed."""


class EventError(DeliveryRefused):
    """The body is not an event the bridge understands (400 or 422)."""


class VersionMissing(MlflowExtError):
    """The model version is gone from the registry."""


class RegistryUnavailable(MlflowExtError):
    """The registry could not be read right now."""
