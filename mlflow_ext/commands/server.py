"""`mlflow-ext server ...`: the entrypoint that systemd units and containers run."""

from __future__ import annotations

import json
import os

import click

from mlflow_ext import server as entrypoint
from mlflow_ext import settings
from mlflow_ext.commands.options import emit, env_file_option, output_option, schema_line


@click.group("server")
def server_group() -> None:
    """Run, migrate and check the MLflow tracking server."""


@server_group.command("run")
@env_file_option
def run(env_file: str | None) -> None:
    """Validate the environment and exec `mlflow server` (no secret on its command line)."""
    entrypoint.run(settings.apply_env_file(env_file))


@server_group.command("migrate")
@env_file_option
@output_option
def migrate(env_file: str | None, output: str) -> None:
    """Upgrade the tracking and auth schemas (MLflow's and mlflow-ext-auth's), once, under a database lock."""
    environ = settings.apply_env_file(env_file)
    values = entrypoint.resolve(environ)
    # This process talks to MLflow too: give it the server's settings (telemetry off, pools, ...).
    os.environ.update(entrypoint.server_environment(values, environ))
    report = entrypoint.migrate(values)
    if output == "json":
        emit(report, output)
    else:
        for name, part in report.items():
            if name != "changed":
                click.echo(schema_line(name, part))


@server_group.command("check")
@env_file_option
@output_option
def check(env_file: str | None, output: str) -> None:
    """Validate the environment and show the resolved settings, secrets masked."""
    values = entrypoint.resolve(settings.apply_env_file(env_file))
    emit(settings.masked(values), output)


@server_group.command("settings")
@click.option("--format", "fmt", type=click.Choice(["env", "markdown", "json"]), default="markdown")
def list_settings(fmt: str) -> None:
    """Print the settings registry: an example env file, the README table, or JSON."""
    if fmt == "env":
        click.echo(settings.render_env_example(), nl=False)
    elif fmt == "markdown":
        click.echo(settings.render_markdown_table(), nl=False)
    else:
        rows = [
            {
                "name": s.name,
                "scope": s.scope,
                "default": s.default,
                "secret": s.secret,
                "required": s.required,
                "required_with_auth": s.required_with_auth,
                "doc": s.doc,
            }
            for s in settings.SETTINGS
        ]
        click.echo(json.dumps(rows, indent=2))
