"""The `mlflow-ext` command line. Library code raises MlflowExtError; this is the one place that
turns errors into messages and exit codes."""

from __future__ import annotations

import importlib
import sys

import click

from mlflow_ext import __version__
from mlflow_ext.errors import MlflowExtError

# Command name -> "module:attribute". Modules load only when their command runs, so `mlflow-ext gocd`
# and `--help` do not pay for importing mlflow (about two seconds).
COMMANDS = {
    "server": "mlflow_ext.commands.server:server_group",
    "inspect": "mlflow_ext.commands.inspect:inspect_command",
    "promote": "mlflow_ext.commands.promote:promote_command",
    "rollback": "mlflow_ext.commands.promote:rollback_command",
    "report": "mlflow_ext.commands.promote:report_command",
    "tokens": "mlflow_ext.commands.tokens:tokens_group",
    "users": "mlflow_ext.commands.users:users_group",
    "grant": "mlflow_ext.commands.users:grant_group",
    "gocd": "mlflow_ext.commands.gocd:gocd_group",
    "bridge": "mlflow_ext.commands.bridge:bridge_group",
    "register": "mlflow_ext.commands.stages:register_command",
    "verify-data": "mlflow_ext.commands.stages:verify_data_command",
    "evaluate": "mlflow_ext.commands.stages:evaluate_command",
    "deploy": "mlflow_ext.commands.stages:deploy_command",
    "smoke-test": "mlflow_ext.commands.stages:smoke_test_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


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
