"""The `mlflow-ext` command line. Library code raises MlflowExtError; this is the one place that
turns errors into messages and exit codes."""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any, NoReturn

import click

from mlflow_ext import __version__
from mlflow_ext.errors import ConfigError, ExitCode, MlflowExtError
from mlflow_ext.settings import client

# Command name -> where it lives ("module:attribute") and its one-line help. Modules load only when their
# command runs, and `mlflow-ext --help` lists the help written here: it imports no command and so no MLflow
# (its server modules cost about two seconds and 200 MB). tests/unit/test_cli_help.py holds each line to its
# command's own.
COMMANDS: dict[str, tuple[str, str]] = {
    "server": (
        "mlflow_ext.commands.server:server_group",
        "Run, migrate and check the MLflow tracking server.",
    ),
    "inspect": (
        "mlflow_ext.commands.inspect:inspect_command",
        "Show where a model version came from and what happened to it since: run, data, code, environment, "
        "pipeline, registration, promotion, evaluation, release, reproductions.",
    ),
    "promote": (
        "mlflow_ext.commands.promote:promote_command",
        "Point ALIAS of MODEL at VERSION once every gate passes, leaving promotion.* audit tags.",
    ),
    "rollback": (
        "mlflow_ext.commands.promote:rollback_command",
        "Move ALIAS of MODEL back to the version it held before (relative gates skipped).",
    ),
    "report": (
        "mlflow_ext.commands.promote:report_command",
        "Record a deployment's outcome on the version (deploy.* tags, with the GoCD pipeline and link).",
    ),
    "tokens": (
        "mlflow_ext.commands.tokens:tokens_group",
        "Create, list and revoke access tokens (clients send them as MLFLOW_TRACKING_TOKEN).",
    ),
    "users": (
        "mlflow_ext.commands.users:users_group",
        "Create, list and delete accounts; service accounts; lockouts.",
    ),
    "grant": (
        "mlflow_ext.commands.users:grant_group",
        "MLflow permissions (READ, USE, EDIT, MANAGE, NO_PERMISSIONS) and platform rights.",
    ),
    "gocd": (
        "mlflow_ext.commands.gocd:gocd_group",
        "Generate and check GoCD YAML config-repo pipelines (gocd/README.md).",
    ),
    "bridge": (
        "mlflow_ext.commands.bridge:bridge_group",
        "Turn registry events (aliases, versions, tags) into GoCD pipeline runs.",
    ),
    "register": (
        "mlflow_ext.commands.stages:register_command",
        "Register the model this GoCD pipeline instance trained as a new version of MODEL.",
    ),
    "verify-data": (
        "mlflow_ext.commands.stages:verify_data_command",
        "Check that DATA is the test data the model version recorded: fingerprint, columns, types, rows.",
    ),
    "evaluate": (
        "mlflow_ext.commands.stages:evaluate_command",
        "Evaluate the candidate version on DATA, next to the version it replaces; log an evaluation run.",
    ),
    "deploy": (
        "mlflow_ext.commands.stages:deploy_command",
        "Serve a registered model version on a deploy target, under the name <model>-<alias>.",
    ),
    "smoke-test": (
        "mlflow_ext.commands.stages:smoke_test_command",
        "Send rows of DATA to the deployment's /invocations and check the answers.",
    ),
    "reproduce": (
        "mlflow_ext.commands.reproduce:reproduce_command",
        "Train a model version or run again from its lineage and compare the metrics.",
    ),
}


# Shown under "Environment" in `mlflow-ext --help`: what every command that talks to the server reads, besides
# the client settings of the registry (mlflow_ext.settings.client).
_CONNECTION_ENV = (
    ("MLFLOW_TRACKING_URI", "URL of the MLflow server, e.g. https://mlflow.example.com (required)."),
    ("MLFLOW_TRACKING_TOKEN", "Access token (mlflow-ext tokens create), sent as a Bearer token."),
    ("MLFLOW_TRACKING_USERNAME", "User name, with MLFLOW_TRACKING_PASSWORD, instead of a token."),
    ("MLFLOW_EXT_OUTPUT", "text or json: what --output defaults to; json errors are JSON on stdout too."),
)


def _show_envvars(command: click.Command) -> None:
    """Every option names its environment variable in --help."""
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar:
            param.show_envvar = True
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _show_envvars(sub)


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[cmd_name][0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # the light client (client/pyproject.toml) lacks server packages
            if (exc.name or "").split(".")[0] == "mlflow_ext":
                raise
            raise ConfigError(
                f"`mlflow-ext {cmd_name}` needs the full install (pip install mlflow-ext, on the MLflow "
                f"server's packages); this one is the light client, without {exc.name}"
            ) from None
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        _show_envvars(command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = list(_CONNECTION_ENV) + [(s.name, s.doc) for s in client.SETTINGS]
        with formatter.section("Environment"):
            formatter.write_dl(rows)
        with formatter.section("Exit codes"):
            formatter.write_dl([(str(int(code)), code.meaning) for code in ExitCode])
        formatter.write_paragraph()
        formatter.write_text("docs/cli.md explains each exit code.")


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="mlflow-ext")
def main() -> None:
    """Operate the mlflow-platform: server entrypoint, lineage, promotion, GoCD."""


def _wants_json(argv: list[str]) -> bool:
    """``--output json`` (or MLFLOW_EXT_OUTPUT=json when no --output is given): errors become JSON too."""
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--output" and index + 1 < len(argv):
            return argv[index + 1] == "json"
        if arg.startswith("--output="):
            return arg.split("=", 1)[1] == "json"
    return os.environ.get("MLFLOW_EXT_OUTPUT", "") == "json"


def _classify(exc: Exception) -> tuple[ExitCode, str] | None:
    """An error library code did not translate: MLflow's own (by its error code) or a broken connection."""
    error_code = getattr(exc, "error_code", None)
    if isinstance(error_code, str) and type(exc).__module__.startswith("mlflow."):
        message = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
        return ExitCode.for_mlflow_error(error_code), message[0] if message else error_code
    if type(exc).__module__.startswith(("requests.", "urllib3.")) and "Connection" in type(exc).__name__:
        return ExitCode.UNREACHABLE, f"lost the connection to the server: {type(exc).__name__}"
    return None


def _fail(code: int, message: str, as_json: bool, details: dict[str, Any] | None = None) -> NoReturn:
    """The one way a command ends in error: the message on stderr and, with --output json, one JSON
    document on stdout: ``{"error": {"code", "kind", "message"}}``, next to the command's ``details``."""
    click.echo(f"mlflow-ext: {message}", err=True)
    if as_json:
        kind = ExitCode(code).kind if code in ExitCode._value2member_map_ else "failed"
        error = {"code": int(code), "kind": kind, "message": message}
        click.echo(json.dumps({**(details or {}), "error": error}, sort_keys=True, default=str))
    sys.exit(code)


def run() -> None:
    """Console entry point: an error becomes a one-line message and its exit code (docs/cli.md)."""
    as_json = _wants_json(sys.argv[1:])
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        _fail(ExitCode.FAILED, "aborted", as_json)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        if as_json:
            _fail(ExitCode.USAGE, exc.format_message(), as_json)
        exc.show()
        sys.exit(ExitCode.USAGE)
    except click.ClickException as exc:
        _fail(exc.exit_code, exc.format_message(), as_json)
    except MlflowExtError as exc:
        _fail(exc.exit_code, str(exc), as_json, exc.details)
    except Exception as exc:
        known = _classify(exc)
        if known is None:
            raise
        _fail(known[0], known[1], as_json)
