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
