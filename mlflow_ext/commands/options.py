"""Options and output shared by every `mlflow-ext` command: one spelling, one env var each."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click

from mlflow_ext.clients import tracking
from mlflow_ext.clients.auth import AuthClient

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


def tracking_option(note: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--tracking-uri``; ``note`` says what a command asks the server for, when that is not obvious.

    Commands pass the value through ``server`` before they use it: unset, it is a configuration error
    (never MLflow's local ./mlflow.db); unreachable, it fails within seconds, with the cause.
    """
    return click.option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help=f"The MLflow server{note} (credentials: MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME "
        "and MLFLOW_TRACKING_PASSWORD; its CA: MLFLOW_TRACKING_SERVER_CERT_PATH).",
    )


def server(tracking_uri: str | None) -> str:
    """The tracking URI, once the server answers there (mlflow_ext.clients.tracking)."""
    return tracking.check_server(tracking_uri)


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


def schema_line(name: str, part: dict[str, Any]) -> str:
    """One line of a migration report for people: what a schema went from and to."""
    if part.get("stamped"):
        return f"{name}: existing tables adopted at {part['after']}"
    if part["changed"]:
        return f"{name}: upgraded {part['after']} (from {part['before'] or 'empty'})"
    return f"{name}: up to date at {part['after']}"


def admin_client(tracking_uri: str | None) -> AuthClient:
    """The auth API as the caller: a token or username and password from the environment, else a prompt."""
    tracking_uri = server(tracking_uri)
    if os.environ.get("MLFLOW_TRACKING_TOKEN") or (
        os.environ.get("MLFLOW_TRACKING_USERNAME") and os.environ.get("MLFLOW_TRACKING_PASSWORD")
    ):
        return AuthClient(tracking_uri)
    username = os.environ.get("MLFLOW_TRACKING_USERNAME") or click.prompt("Username", err=True)
    password = click.prompt(f"Password for {username}", hide_input=True, err=True)
    return AuthClient(tracking_uri, username, password)
