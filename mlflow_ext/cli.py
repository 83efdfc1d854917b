"""The `mlflow-ext` command line. Library code raises MlflowExtError; this is the one place that
turns errors into messages and exit codes."""

from __future__ import annotations

import sys

import click

from mlflow_ext import __version__
from mlflow_ext.errors import MlflowExtError


@click.group()
@click.version_option(__version__, prog_name="mlflow-ext")
def main() -> None:
    """Operate the mlflow-platform: server entrypoint, lineage, promotion, GoCD."""


# Commands are registered here, one module per concern.
from mlflow_ext.commands.bridge import bridge_group  # noqa: E402
from mlflow_ext.commands.gocd import gocd_group  # noqa: E402
from mlflow_ext.commands.inspect import inspect_command  # noqa: E402
from mlflow_ext.commands.promote import promote_command, report_command, rollback_command  # noqa: E402
from mlflow_ext.commands.server import server_group  # noqa: E402
from mlflow_ext.commands.stages import (  # noqa: E402
    deploy_command,
    evaluate_command,
    register_command,
    smoke_test_command,
    verify_data_command,
)
from mlflow_ext.commands.tokens import tokens_group  # noqa: E402
from mlflow_ext.commands.users import grant_group, users_group  # noqa: E402

main.add_command(server_group)
main.add_command(inspect_command)
main.add_command(promote_command)
main.add_command(rollback_command)
main.add_command(report_command)
main.add_command(tokens_group)
main.add_command(users_group)
main.add_command(grant_group)
main.add_command(gocd_group)
main.add_command(bridge_group)
main.add_command(register_command)
main.add_command(verify_data_command)
main.add_command(evaluate_command)
main.add_command(deploy_command)
main.add_command(smoke_test_command)


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
