"""`mlflow-ext inspect URI`: the lineage of a model version or run on one screen."""

from __future__ import annotations

import click

from mlflow_ext import lineage
from mlflow_ext.commands.options import server, tracking_option


@click.command("inspect")
@click.argument("uri", metavar="URI")
@click.option(
    "--output",
    envvar="MLFLOW_EXT_OUTPUT",
    type=click.Choice(["text", "table", "json"]),
    default="text",
    show_default=True,
    help="text (or table): a readable table; json: every field, for machines.",
)
@tracking_option()
def inspect_command(uri: str, output: str, tracking_uri: str | None) -> None:
    """Show where a model version came from: run, params, metrics, data, code, environment, pipeline,
    promotion.

    URI is models:/<name>@<alias>, models:/<name>/<version> or runs:/<run_id>.
    """
    lineage.parse_uri(uri)  # a malformed URI is a usage error, before any server is asked
    found = lineage.collect(uri, tracking_uri=server(tracking_uri))
    if output == "json":
        click.echo(lineage.render_json(found))
    else:
        click.echo(lineage.render_table(found), nl=False)
