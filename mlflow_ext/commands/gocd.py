"""`mlflow-ext gocd generate|validate`: GoCD pipelines from the model catalog, and their checker."""

from __future__ import annotations

import json
from typing import Any

import click

from mlflow_ext import progress
from mlflow_ext.commands.options import emit, output_option, server, tracking_option
from mlflow_ext.errors import PipelineError
from mlflow_ext.gocd import catalog as catalog_mod
from mlflow_ext.gocd import pipelines, validate


@click.group("gocd")
def gocd_group() -> None:
    """Generate and check GoCD YAML config-repo pipelines (gocd/README.md)."""


@gocd_group.command("generate")
@click.option(
    "--catalog",
    "catalog_path",
    envvar="MLFLOW_EXT_GOCD_CATALOG",
    type=click.Path(dir_okay=False),
    help="The model catalog (YAML). Optional with --from-registry (then its defaults and entries apply).",
)
@click.option(
    "--out",
    envvar="MLFLOW_EXT_GOCD_OUT",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory of *.gocd.yaml files; replaced as a whole once everything validated.",
)
@click.option(
    "--per",
    envvar="MLFLOW_EXT_GOCD_PER",
    type=click.Choice(["model", "team"]),
    default="model",
    show_default=True,
    help="One file per model, or one per team.",
)
@click.option(
    "--routes",
    "routes_path",
    envvar="MLFLOW_EXT_GOCD_ROUTES",
    type=click.Path(dir_okay=False),
    help="Also write the bridge's routing file here.",
)
@click.option(
    "--from-registry",
    is_flag=True,
    envvar="MLFLOW_EXT_GOCD_FROM_REGISTRY",
    help="Add registered models tagged gocd.team (tags gocd.*); every catalog entry must be registered.",
)
@click.option(
    "--check",
    is_flag=True,
    envvar="MLFLOW_EXT_GOCD_CHECK",
    help="Write nothing; fail when --out differs from what the catalog generates.",
)
@tracking_option(note=" for --from-registry")
@output_option
def generate_command(
    catalog_path: str | None,
    out: str,
    per: str,
    routes_path: str | None,
    from_registry: bool,
    check: bool,
    tracking_uri: str | None,
    output: str,
) -> None:
    """Write one *.gocd.yaml per model (or team): a build pipeline and a release pipeline per alias."""
    if catalog_path is None and not from_registry:
        raise click.UsageError("give --catalog, --from-registry, or both")
    base = catalog_mod.load(catalog_path) if catalog_path else None
    if from_registry:
        tracking_uri = server(tracking_uri)  # before MLflow loads: a missing server fails at once
        from mlflow import MlflowClient

        with progress.task("gocd generate: reading registered models", unit="models") as bar:
            registered = catalog_mod.registry_models(MlflowClient(tracking_uri=tracking_uri), bar.advance)
        found = catalog_mod.from_registry(registered, base)
    else:
        assert base is not None
        found = base
    if check:
        drift = pipelines.check(found, out, per)
        if drift:
            raise PipelineError(
                f"{out} is out of date with the catalog:\n" + "\n".join(f"  {d}" for d in drift)
            )
        emit({"out": out, "up_to_date": True}, output)
        return
    written = pipelines.write(found, out, per=per, routes_file=routes_path)
    emit(
        {
            "out": written.out,
            "files": written.files,
            "models": written.models,
            "pipelines": written.pipelines,
            "routes": written.routes,
            "timers": written.timers,
            "busiest_hour": written.busiest_hour,
            "busiest_hour_starts": written.busiest_hour_starts,
        },
        output,
    )


@gocd_group.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--routes",
    "routes_path",
    envvar="MLFLOW_EXT_GOCD_ROUTES",
    type=click.Path(dir_okay=False, exists=True),
    help="Also check the bridge's routing file: every route's pipeline exists and declares what it passes.",
)
@output_option
def validate_command(paths: tuple[str, ...], routes_path: str | None, output: str) -> None:
    """Check *.gocd.yaml files (or directories of them) against the format_version 10 schema and rules."""
    report = validate.validate_paths(paths, routes_path)
    summary: dict[str, Any] = {
        "files": report.files,
        "pipelines": report.pipelines,
        "issues": len(report.issues),
    }
    document = {**summary, "problems": [i.as_dict() for i in report.issues]}
    if not report.issues:
        if output == "json":
            click.echo(json.dumps(document, sort_keys=True))
        else:
            emit(summary, output)
        return
    count = len(report.issues)
    lines = [f"{count} problem{'s' if count > 1 else ''} in {report.files} file(s):"]
    if output != "json":
        lines += [f"  {issue}" for issue in report.issues]
    failure = PipelineError("\n".join(lines))
    if output == "json":  # one JSON document on stdout: the problems and the error (mlflow_ext.cli)
        failure.details = document
    raise failure
