"""The errors mlflow_ext raises. Library code raises these; only the CLI maps them to exit codes."""


class MlflowExtError(Exception):
    """Base class: every error the package raises on purpose."""

    exit_code = 1


class ConfigError(MlflowExtError):
    """A setting is missing or invalid. The message names the variable, never its value."""

    exit_code = 2


class MigrationError(MlflowExtError):
    """A database schema migration could not run."""

    exit_code = 3


class PromotionRejected(MlflowExtError):
    """A promotion gate failed. The message names the gate and what it found."""

    exit_code = 4


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


class PipelineError(MlflowExtError):
    """A catalog or pipeline file is invalid; the message names the file, the entry and the rule."""

    exit_code = 6


class StageFailed(MlflowExtError):
    """A release stage (verify-data, evaluate, deploy, smoke-test) found the candidate unfit."""

    exit_code = 7
