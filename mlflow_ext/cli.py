"""The `mlflow-ext` command line. Library code raises MlflowExtError; this is the one place that
turns errors into messages and exit codes."""

from __future__ import annotations

import importlib
import sys

import click

from mlflow_ext import __version__
from mlflow_ext.errors import MlflowExtError

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
        "Show where a model version came from: run, params, metrics, data, code, environment, pipeline, "
        "promotion.",
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
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="mlflow-ext")
def main() -> None:
    """Operate the mlflow-platform: server entrypoint, lineage, promotion, GoCD."""


def run() -> None:
    """Console entry point: MlflowExtError becomes a one-line message and its exit code."""
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MlflowExtError as exc:
        click.echo(f"mlflow-ext: {exc}", err=True)
        sys.exit(exc.exit_code)
