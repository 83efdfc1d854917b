"""`mlflow-ext inspect URI`: the lineage and history of a model version or run on one screen."""

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
    """Show where a model version came from and what happened to it since: run, data, code, environment,
    pipeline, registration, promotion, evaluation, release, reproductions.

    Who registered the version and who promoted it (and why), its evaluation against the alias's previous
    holder, the GoCD run that deployed it and the outcome, and the runs that reproduced it, with their
    verdicts.

    URI is models:/<name>@<alias>, models:/<name>/<version> or runs:/<run_id>.
    """
    lineage.parse_uri(uri)  # a malformed URI is a usage error, before any server is asked
    found = lineage.collect(uri, tracking_uri=server(tracking_uri))
    if output == "json":
        click.echo(lineage.render_json(found))
    else:
        click.echo(lineage.render_table(found), nl=False)
