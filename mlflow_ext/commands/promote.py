"""`mlflow-ext promote`, `mlflow-ext rollback` and `mlflow-ext report` (docs/promotion.md).

Credentials as for every MLflow client: ``MLFLOW_TRACKING_URI`` and ``MLFLOW_TRACKING_TOKEN`` or
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``. A refused promotion exits with
PromotionRejected's code (4); with ``--output json`` its gates are printed first.

The policy checked is ``--policy`` when given, else the server's own (read from the server, which may
be the only one able to read its file), else the built-in one; the output says which (``policy_origin``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from mlflow_ext.commands.options import dry_run_option, emit, output_option, server, tracking_option
from mlflow_ext.errors import PromotionRejected
from mlflow_ext.promotion import promote as library
from mlflow_ext.promotion.policy_source import ChosenPolicy, choose
from mlflow_ext.promotion.promote import Outcome


def policy_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--policy",
        "policy_path",
        envvar="MLFLOW_EXT_PROMOTION_POLICY",
        type=click.Path(dir_okay=False),
        help="Promotion policy file (YAML). Default: the server's policy; when the server has none, the "
        "built-in one (the code revision and a training-data fingerprint, no metric gates).",
    )(func)


def reason_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--reason", envvar="MLFLOW_EXT_PROMOTION_REASON", help="Why: recorded as promotion.reason."
    )(func)


def move_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """What promote and rollback both take."""
    shared = (reason_option, policy_option, dry_run_option, tracking_option(), output_option)
    for decorate in reversed(shared):
        func = decorate(func)
    return func


def _library_options(move: dict[str, Any], chosen: ChosenPolicy) -> dict[str, Any]:
    """The shared options as the library takes them."""
    return {
        "reason": move["reason"],
        "policy": chosen.policy,
        "dry_run": move["dry_run"],
        "tracking_uri": move["tracking_uri"],
    }


def _show(outcome: Outcome, output: str, chosen: ChosenPolicy) -> None:
    if output == "json":
        emit({**outcome.to_dict(), "policy_origin": chosen.to_dict()}, output)
        return
    for gate in outcome.gates:
        click.echo(f"[{gate.status:>7}] {gate.gate}: {gate.found}")
    if outcome.gates:
        click.echo(f"policy: {outcome.policy}")
    click.echo(f"policy from: {chosen.describe()}")
    if outcome.dry_run and outcome.changed:
        click.echo(f"dry run: {outcome.message}; tags it would set:")
        for key, value in outcome.tags.items():
            click.echo(f"  {key} = {value if value is not None else '(removed)'}")
    elif not outcome.refused:
        click.echo(outcome.message)


def _run(action: Callable[[dict[str, Any]], Outcome], move: dict[str, Any], output: str) -> None:
    # A policy file is read (and checked) before anything else: a bad file stops the command first.
    if move["policy_path"]:
        chosen = choose(move["policy_path"], None)
        move["tracking_uri"] = server(move["tracking_uri"])
    else:
        move["tracking_uri"] = server(move["tracking_uri"])
        chosen = choose(None, move["tracking_uri"])
    try:
        outcome = action(_library_options(move, chosen))
    except PromotionRejected as exc:  # the gates on stdout; the message and exit code from the CLI
        if exc.outcome is not None and output == "json":  # one JSON document: the gates and the error
            exc.details = {**exc.outcome.to_dict(), "policy_origin": chosen.to_dict()}
        elif exc.outcome is not None:
            _show(exc.outcome, output, chosen)
        raise
    _show(outcome, output, chosen)


@click.command("promote")
@click.argument("model")
@click.argument("version")
@click.option("--to", "alias", required=True, help="The alias to move to VERSION, e.g. production.")
@move_options
def promote_command(model: str, version: str, alias: str, output: str, **move: Any) -> None:
    """Point ALIAS of MODEL at VERSION once every gate passes, leaving promotion.* audit tags."""
    _run(lambda options: library.promote(model, version, alias, **options), move, output)


@click.command("rollback")
@click.argument("model")
@click.option("--alias", required=True, help="The alias to move back, e.g. production.")
@move_options
def rollback_command(model: str, alias: str, output: str, **move: Any) -> None:
    """Move ALIAS of MODEL back to the version it held before (relative gates skipped)."""
    _run(lambda options: library.rollback(model, alias, **options), move, output)


@click.command("report")
@click.option("--model", envvar="MLFLOW_MODEL_NAME", required=True, help="Registered model name.")
@click.option("--version", envvar="MLFLOW_MODEL_VERSION", required=True, help="Model version.")
@click.option("--status", type=click.Choice(library.DEPLOY_STATUSES), required=True)
@click.option("--stage", help="The stage that ran (default: GO_STAGE_NAME).")
@click.option("--message", help="What happened, recorded as deploy.message.")
@dry_run_option
@tracking_option()
@output_option
def report_command(
    model: str,
    version: str,
    status: str,
    stage: str | None,
    message: str | None,
    dry_run: bool,
    tracking_uri: str | None,
    output: str,
) -> None:
    """Record a deployment's outcome on the version (deploy.* tags, with the GoCD pipeline and link)."""
    result = library.report(
        model,
        version,
        status,
        stage=stage,
        message=message,
        environ=os.environ,
        dry_run=dry_run,
        tracking_uri=server(tracking_uri),
    )
    if output == "json":
        emit(result, output)
        return
    verb = "would record" if dry_run else "recorded"
    click.echo(f"{verb} {status} on {model!r} version {version}")
    for key, value in result["tags"].items():
        click.echo(f"  {key} = {value}")
