"""Every error mlflow_ext raises on purpose, in one hierarchy, and the one table of exit codes.

Library code raises these; the CLI is the one place that turns them into messages and exit codes
(``exit_code``, a member of ``ExitCode``), and the bridge's receiver into HTTP answers (``status``).
The same condition has the same code in every command; docs/cli.md shows the table to users
(tests/unit/test_cli_errors.py keeps the two equal).

| exit code | errors | condition |
|---|---|---|
| 1 | MlflowExtError, DataError, LineageError, PromotionError, MlflowInternalMissing, | failed, for a reason |
|   | AuthApiError (by the HTTP status: 401/403 AccessDenied's, 404 NotFound's, 409 Conflict's, | not below |
|   | no answer ServerUnreachable's code); and, never shown by the CLI: FastYamlUnsupported, | |
|   | DeliveryRefused (SignatureError, EventError), VersionMissing, RegistryUnavailable | |
| 2 | UsageError, ModelURIError; click's own usage errors | usage |
| 3 | ConfigError | config |
| 4 | PromotionRejected | refused by a gate |
| 5 | GoCDError (GoCDUnavailable, GoCDRejected), ProvisioningError | GoCD failed |
| 6 | PipelineError | invalid pipeline or catalog |
| 7 | StageFailed | data mismatch |
| 8 | NotFound, LineageNotFound, PromotionNotFound, StageNotFound | not found |
| 9 | ServerUnreachable | server unreachable |
| 10 | Conflict | conflict |
| 11 | AccessDenied, PromotionDenied, SignInRefused (a single sign-on refused; the server's login | access |
|   | pages only) | denied |
| 12 | MigrationError | migration failed |

An MLflow error the library did not translate exits by its error code (``ExitCode.for_mlflow_error``).
"""

from __future__ import annotations

import enum
from typing import Any


class ExitCode(enum.IntEnum):
    """What `mlflow-ext` exits with; docs/cli.md explains each to users."""

    OK = 0
    FAILED = 1
    USAGE = 2
    CONFIG = 3
    REFUSED = 4
    GOCD = 5
    PIPELINE = 6
    MISMATCH = 7
    NOT_FOUND = 8
    UNREACHABLE = 9
    CONFLICT = 10
    DENIED = 11
    MIGRATION = 12

    @property
    def kind(self) -> str:
        """The condition's name in JSON errors: ``not_found``, ``unreachable``, ..."""
        return self.name.lower()

    @property
    def meaning(self) -> str:
        """One line for `mlflow-ext --help`."""
        return _MEANINGS[self]

    @classmethod
    def for_http_status(cls, status: int | None) -> ExitCode:
        """The code of a server's answer: no answer, 401/403, 404, 409 (and anything else: FAILED)."""
        if status is None:
            return cls.UNREACHABLE
        by_status = {401: cls.DENIED, 403: cls.DENIED, 404: cls.NOT_FOUND, 409: cls.CONFLICT}
        return by_status.get(status, cls.FAILED)

    @classmethod
    def for_mlflow_error(cls, error_code: str | None) -> ExitCode:
        """The code of an MLflow error code (``RESOURCE_DOES_NOT_EXIST``, ...)."""
        return _MLFLOW_ERROR_CODES.get(error_code or "", cls.FAILED)


_MEANINGS = {
    ExitCode.OK: "done (or nothing to do)",
    ExitCode.FAILED: "failed, for a reason not below",
    ExitCode.USAGE: "usage: an option or argument missing or malformed",
    ExitCode.CONFIG: "configuration: a setting or file missing or invalid (MLFLOW_TRACKING_URI unset)",
    ExitCode.REFUSED: "refused by a promotion gate",
    ExitCode.GOCD: "GoCD failed or refused",
    ExitCode.PIPELINE: "a catalog or pipeline file is invalid",
    ExitCode.MISMATCH: "data mismatch: the candidate or its data is not what was recorded or required",
    ExitCode.NOT_FOUND: "not found: no such model, version, alias, run, user or token",
    ExitCode.UNREACHABLE: "server unreachable: refused, unknown host, TLS failure, time-out",
    ExitCode.CONFLICT: "conflict: it already exists or changed meanwhile",
    ExitCode.DENIED: "access denied: wrong credentials or no permission",
    ExitCode.MIGRATION: "a database schema migration failed",
}

_MLFLOW_ERROR_CODES = {
    "RESOURCE_DOES_NOT_EXIST": ExitCode.NOT_FOUND,
    "NOT_FOUND": ExitCode.NOT_FOUND,
    "RESOURCE_ALREADY_EXISTS": ExitCode.CONFLICT,
    "ALREADY_EXISTS": ExitCode.CONFLICT,
    "RESOURCE_CONFLICT": ExitCode.CONFLICT,
    "ABORTED": ExitCode.CONFLICT,
    "PERMISSION_DENIED": ExitCode.DENIED,
    "UNAUTHENTICATED": ExitCode.DENIED,
    "INVALID_PARAMETER_VALUE": ExitCode.USAGE,
}


class MlflowExtError(Exception):
    """Base class: every error the package raises on purpose.

    ``details``, when a command sets it, is what it would have printed for ``--output json``: the CLI prints
    it with the error in one JSON document.
    """

    exit_code: int = ExitCode.FAILED
    details: dict[str, Any] | None = None


class UsageError(MlflowExtError):
    """The command was called wrongly: an argument missing or malformed."""

    exit_code = ExitCode.USAGE


class ConfigError(MlflowExtError):
    """A setting is missing or invalid. The message names the variable, never its value."""

    exit_code = ExitCode.CONFIG


class MigrationError(MlflowExtError):
    """A database schema migration could not run."""

    exit_code = ExitCode.MIGRATION


class MlflowInternalMissing(MlflowExtError):
    """The installed MLflow lacks a private function or attribute listed in mlflow_ext.mlflow_internals."""


# --- conditions every command shares ----------------------------------------------------------------


class NotFound(MlflowExtError):
    """What was asked for does not exist: a model, version, alias, run, user, token."""

    exit_code = ExitCode.NOT_FOUND


class Conflict(MlflowExtError):
    """The change collides with the current state: it already exists, or changed meanwhile."""

    exit_code = ExitCode.CONFLICT


class AccessDenied(MlflowExtError):
    """The server refused the caller: no or wrong credentials, or no permission."""

    exit_code = ExitCode.DENIED


class SignInRefused(AccessDenied):
    """A single sign-on refused by the server (bad state, code, ID token or account); ``status`` is the
    HTTP status of the page that says why. The message never holds a secret."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachable(MlflowExtError):
    """The MLflow server did not answer: refused connection, unknown host, TLS failure, time-out."""

    exit_code = ExitCode.UNREACHABLE


# --- data and lineage ---------------------------------------------------------------------------------


class DataError(MlflowExtError):
    """A path or URI that cannot be fingerprinted: missing, unreadable, empty or of an unknown scheme."""


class LineageError(MlflowExtError):
    """The model version or run cannot be read: a malformed URI, or nothing found under it."""


class LineageNotFound(NotFound, LineageError):
    """No model version or run under the URI."""


class ModelURIError(LineageError):
    """The URI is not one of the forms ``inspect`` understands."""

    exit_code = ExitCode.USAGE


# --- promotion ----------------------------------------------------------------------------------------


class PromotionRejected(MlflowExtError):
    """A promotion gate failed. The message names the gate and what it found.

    The server's refusal carries ``error_class`` = ``SERVER_ERROR_CLASS`` in MLflow's error JSON (and the
    failed gates in ``failed_gates``); that, not the message, is how a client recognises it.
    """

    exit_code = ExitCode.REFUSED
    SERVER_ERROR_CLASS = "PROMOTION_GATE_FAILED"

    def __init__(self, message: str, outcome: Any = None) -> None:
        super().__init__(message)
        self.outcome = outcome  # every gate and what it found, for --output json


class PromotionError(MlflowExtError):
    """The registry could not be read or refused the change for a reason other than a gate."""


class PromotionNotFound(NotFound, PromotionError):
    """The model, version or alias to move does not exist."""


class PromotionDenied(AccessDenied, PromotionError):
    """The server refused the caller the change: no permission on the model, or no promote right on its
    protected alias."""


# --- auth ---------------------------------------------------------------------------------------------


class AuthApiError(MlflowExtError):
    """The auth REST API refused a request (``status``) or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.exit_code = ExitCode.for_http_status(status)


class ProvisioningError(MlflowExtError):
    """The service account or its token could not be provisioned."""

    exit_code = ExitCode.GOCD


# --- GoCD ---------------------------------------------------------------------------------------------


class GoCDError(MlflowExtError):
    """GoCD could not do what was asked."""

    exit_code = ExitCode.GOCD


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

    exit_code = ExitCode.PIPELINE


class StageFailed(MlflowExtError):
    """A release stage (verify-data, evaluate, deploy, smoke-test) found the candidate unfit."""

    exit_code = ExitCode.MISMATCH


class StageNotFound(NotFound, StageFailed):
    """The model version a stage works on does not exist."""


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
