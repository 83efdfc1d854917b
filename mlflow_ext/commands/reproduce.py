"""`mlflow-ext reproduce URI`: train a model version or run again from its lineage and compare metrics."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from mlflow_ext.commands.options import server, tracking_option
from mlflow_ext.errors import StageFailed
from mlflow_ext.lineage import parse_uri
from mlflow_ext.stages import reproduce as reproduction


@click.command("reproduce")
@click.argument("uri", metavar="URI")
@click.option(
    "--workdir",
    envvar="MLFLOW_EXT_REPRODUCE_WORKDIR",
    type=click.Path(file_okay=False),
    help="Where the checkout and the venv go (default: a new temporary directory, kept).",
)
@click.option(
    "--tolerance",
    envvar="MLFLOW_EXT_REPRODUCE_TOLERANCE",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Largest absolute difference of a metric that still counts as reproduced.",
)
@click.option(
    "--allow-data-change",
    is_flag=True,
    envvar="MLFLOW_EXT_REPRODUCE_ALLOW_DATA_CHANGE",
    help="Go on when a training data fingerprint differs from the recorded one (reported).",
)
@click.option(
    "--env",
    "env",
    envvar="MLFLOW_EXT_REPRODUCE_ENV",
    type=click.Choice(["fresh", "current"]),
    default="fresh",
    show_default=True,
    help="fresh: a new venv from the recorded listing; current: this interpreter (a difference is reported).",
)
@click.option(
    "--output",
    envvar="MLFLOW_EXT_OUTPUT",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@tracking_option()
def reproduce_command(
    uri: str,
    workdir: str | None,
    tolerance: float,
    allow_data_change: bool,
    env: str,
    output: str,
    tracking_uri: str | None,
) -> None:
    """Train a model version or run again from its lineage and compare the metrics.

    URI is models:/<name>@<alias>, models:/<name>/<version> or runs:/<run_id>. Checks out the recorded
    commit (and diff), verifies the training data fingerprints, rebuilds the environment, runs the recorded
    command into a new run tagged reproduction.of, and exits 7 when a metric differs by more than
    --tolerance.
    """
    from mlflow import MlflowClient

    parse_uri(uri)  # a malformed URI is a usage error, before any server is asked
    uri_of_server = server(tracking_uri)
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mlflow-ext-reproduce-"))
    result = reproduction.reproduce(
        uri,
        client=MlflowClient(tracking_uri=uri_of_server),
        tracking_uri=uri_of_server,
        workdir=folder,
        tolerance=tolerance,
        allow_data_change=allow_data_change,
        env=env,
        say=lambda line: click.echo(line, err=True),
    )
    document = result.as_dict()
    if output == "json" and result.status != "different":
        click.echo(json.dumps(document, sort_keys=True))
    elif output != "json":
        click.echo(result.table(), nl=False)
    if result.status == "different":
        failure = StageFailed(
            f"run {result.new_run_id} does not reproduce run {result.run_id}: "
            + ", ".join(m.metric for m in result.metrics if not m.within)
            + (", params " + ", ".join(result.params_differ) if result.params_differ else "")
        )
        if output == "json":
            failure.details = document
        raise failure
