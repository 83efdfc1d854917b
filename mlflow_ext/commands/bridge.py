"""`mlflow-ext bridge ...`: the registry-to-GoCD bridge (docs/bridge.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click

from mlflow_ext import routing, settings
from mlflow_ext.bridge import outbox, service, webhook
from mlflow_ext.commands.options import dry_run_option, emit, env_file_option, output_option, schema_line
from mlflow_ext.errors import ConfigError


def _subset(env_file: str | None, names: Iterable[str]) -> dict[str, Any]:
    """Only the settings a command needs, validated like the full set (required ones must be set)."""
    environ = settings.apply_env_file(env_file)
    return settings.load(environ, scope="bridge", names=set(names))


@click.group("bridge")
def bridge_group() -> None:
    """Turn registry events (aliases, versions, tags) into GoCD pipeline runs."""


@bridge_group.command("serve")
@env_file_option
def serve(env_file: str | None) -> None:
    """Receive webhooks, deliver to GoCD, reconcile with the registry (until SIGTERM)."""
    service.serve(service.resolve(settings.apply_env_file(env_file)))


@bridge_group.command("migrate")
@env_file_option
@output_option
def migrate(env_file: str | None, output: str) -> None:
    """Bring the outbox schema to this version's head; `changed` is true only when a revision ran."""
    values = _subset(env_file, ["MLFLOW_EXT_BRIDGE_DATABASE_URI"])
    engine = outbox.create_db_engine(values["MLFLOW_EXT_BRIDGE_DATABASE_URI"])
    try:
        report = outbox.migrate(engine)
    finally:
        engine.dispose()
    if output == "json":
        emit(report, output)
    else:
        click.echo(schema_line("outbox", report))


@bridge_group.command("register-webhook")
@env_file_option
@click.option(
    "--url",
    required=True,
    envvar="MLFLOW_EXT_BRIDGE_WEBHOOK_URL",
    help="The bridge's /webhook URL as MLflow reaches it.",
)
@click.option(
    "--name", default="mlflow-ext-bridge", show_default=True, envvar="MLFLOW_EXT_BRIDGE_WEBHOOK_NAME"
)
@dry_run_option
@output_option
def register_webhook(env_file: str | None, url: str, name: str, dry_run: bool, output: str) -> None:
    """Create or update the MLflow webhook (admin credentials from the environment); idempotent."""
    from mlflow import MlflowClient

    values = _subset(
        env_file,
        [
            "MLFLOW_TRACKING_URI",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "MLFLOW_TRACKING_TOKEN",
            "MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET",
        ],
    )
    service.export_client_env(values)
    if not url.startswith(("http://", "https://")) or not url.rstrip("/").endswith("/webhook"):
        raise click.BadParameter("must be the bridge's http(s)://HOST:PORT/webhook URL", param_hint="--url")
    client = MlflowClient(
        tracking_uri=values["MLFLOW_TRACKING_URI"], registry_uri=values["MLFLOW_TRACKING_URI"]
    )
    try:
        report = webhook.register(client, url, values["MLFLOW_EXT_BRIDGE_WEBHOOK_SECRET"], name, dry_run)
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            raise ConfigError(f"cannot register the webhook: {exc.error_code}: {exc.message}") from None
        raise
    if output == "json":
        emit(report, output)
    else:
        verb = {"create": "created", "update": "updated", "none": "unchanged"}[report["action"]]
        click.echo(
            f"webhook {name}: {'would be ' if dry_run and report['changed'] else ''}{verb}"
            + (f" ({report['webhook_id']})" if report["webhook_id"] else "")
        )


def _when(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _describe(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "event": row.event,
        "model": row.model,
        "version": row.version,
        "alias": row.alias,
        "tag": row.tag_key,
        "pipeline": row.pipeline,
        "source": row.source,
        "attempts": row.attempts,
        "created_at": _when(row.created_at),
        "next_attempt_at": _when(row.next_attempt_at) if row.status not in ("delivered", "parked") else None,
        "last_error": row.last_error,
        "gocd_status": row.gocd_status,
        "gocd_message": row.gocd_message,
        "counter": row.counter,
        "delivered_at": _when(row.delivered_at),
    }


@bridge_group.command("status")
@env_file_option
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Rows listed per group."
)
@output_option
def status(env_file: str | None, limit: int, output: str) -> None:
    """Pending, paused and parked triggers (with GoCD's message) and the latest delivered ones."""
    values = _subset(env_file, ["MLFLOW_EXT_BRIDGE_DATABASE_URI"])
    box = service.open_outbox(values["MLFLOW_EXT_BRIDGE_DATABASE_URI"])
    try:
        report: dict[str, Any] = {
            "counts": box.counts(),
            "feedback_pending": box.feedback_pending(),
            "waiting": [_describe(r) for r in box.rows(("pending", "claimed", "scheduled", "paused"), limit)],
            "parked": [_describe(r) for r in box.rows(("parked",), limit)],
            "delivered": [_describe(r) for r in box.rows(("delivered",), limit, newest_first=True)],
        }
    finally:
        box.engine.dispose()
    if output == "json":
        click.echo(json.dumps(report, sort_keys=True))
        return
    counts = report["counts"]
    click.echo(
        "  ".join(f"{name}: {counts[name]}" for name in counts)
        + f"  feedback pending: {report['feedback_pending']}"
    )
    for title in ("waiting", "parked", "delivered"):
        if report[title]:
            click.echo(f"\n{title}:")
        for row in report[title]:
            target = f"{row['model']} v{row['version']}" + (f" @{row['alias']}" if row["alias"] else "")
            detail = row["gocd_message"] if row["status"] in ("parked", "paused") else row["last_error"]
            if row["status"] == "delivered":
                detail = f"counter {row['counter']}" if row["counter"] is not None else row["last_error"]
            click.echo(
                f"  #{row['id']} {row['status']:<9} {row['pipeline']} <- {target} ({row['event']})"
                + (
                    f": {row['gocd_status']} "
                    if row["gocd_status"] and row["status"] != "delivered"
                    else ": "
                    if detail
                    else ""
                )
                + (detail or "")
            )


@bridge_group.command("retry")
@env_file_option
@click.argument("row_ids", nargs=-1, type=int)
@click.option("--all-parked", is_flag=True, help="Requeue every parked trigger.")
@dry_run_option
@output_option
def retry(
    env_file: str | None, row_ids: tuple[int, ...], all_parked: bool, dry_run: bool, output: str
) -> None:
    """Requeue parked triggers (by id, or --all-parked) once their cause is fixed."""
    if bool(row_ids) == all_parked:
        raise click.UsageError("give trigger ids or --all-parked (not both)")
    values = _subset(env_file, ["MLFLOW_EXT_BRIDGE_DATABASE_URI"])
    box = service.open_outbox(values["MLFLOW_EXT_BRIDGE_DATABASE_URI"])
    try:
        wanted = None if all_parked else list(row_ids)
        requeued = [int(r.id) for r in box.parked(wanted)] if dry_run else box.retry(wanted)
    finally:
        box.engine.dispose()
    missing = sorted(set(row_ids) - set(requeued))
    report = {
        "changed": bool(requeued) and not dry_run,
        "requeued": requeued,
        "not_parked": missing,
        "dry_run": dry_run,
    }
    if output == "json":
        emit(report, output)
    else:
        click.echo(
            f"{'would requeue' if dry_run else 'requeued'}: {', '.join(map(str, requeued)) or 'nothing'}"
        )
        if missing:
            click.echo(f"not parked (left alone): {', '.join(map(str, missing))}")


@bridge_group.command("check")
@env_file_option
@output_option
def check(env_file: str | None, output: str) -> None:
    """Validate the bridge's environment and routing file; show the settings, secrets masked."""
    values = service.resolve(settings.apply_env_file(env_file))
    routes = routing.load(values["MLFLOW_EXT_BRIDGE_ROUTES"])
    shown = settings.masked(values)
    shown["routes"] = len(routes)
    emit(shown, output)


@bridge_group.command("settings")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown")
def list_settings(fmt: str) -> None:
    """Print the bridge's settings: the README table, or JSON."""
    if fmt == "markdown":
        click.echo(settings.render_markdown_table("bridge"), nl=False)
        return
    rows = [
        {"name": s.name, "default": s.default, "secret": s.secret, "required": s.required, "doc": s.doc}
        for s in settings.SETTINGS
        if s.scope == "bridge"
    ]
    click.echo(json.dumps(rows, indent=2))
