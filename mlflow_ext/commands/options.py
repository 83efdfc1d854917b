"""Options and output shared by every `mlflow-ext` command: one spelling, one env var each."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

env_file_option = click.option(
    "--env-file",
    envvar="MLFLOW_EXT_ENV_FILE",
    type=click.Path(dir_okay=False),
    help="The server's KEY=value env file (the one systemd and compose use), overlaid on the environment.",
)
output_option = click.option(
    "--output",
    envvar="MLFLOW_EXT_OUTPUT",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)


def dry_run_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dry-run", is_flag=True, envvar="MLFLOW_EXT_DRY_RUN", help="Show the change, make none."
    )(func)


def emit(data: dict[str, Any], output: str) -> None:
    """JSON for machines (sorted keys, one line), `key: value` lines for people."""
    if output == "json":
        click.echo(json.dumps(data, sort_keys=True))
    else:
        for key, value in data.items():
            click.echo(f"{key}: {value}")
