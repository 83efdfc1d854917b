"""`mlflow-ext tokens ...`: access tokens for people and service accounts (docs/auth.md).

``create``, ``list`` and ``revoke`` go through the server's REST API with the caller's credentials
(``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, else a prompt).
``ensure-service-account`` is for provisioning: it works on the auth database named by the server's env
file, idempotently, and writes the token only to a file.

The module imports neither MLflow nor Flask (only the auth database's tables, for
``ensure-service-account``): like every command, these check the server first and fail within a second
when it is not there.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from mlflow_ext import server as entrypoint
from mlflow_ext import settings
from mlflow_ext.auth import paths
from mlflow_ext.auth.paths import RIGHTS
from mlflow_ext.auth.provision import ensure_service_account as ensure
from mlflow_ext.auth.tokens import parse_duration
from mlflow_ext.commands.options import (
    admin_client,
    dry_run_option,
    emit,
    env_file_option,
    output_option,
    tracking_option,
)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group("tokens")
def tokens_group() -> None:
    """Create, list and revoke access tokens (clients send them as MLFLOW_TRACKING_TOKEN)."""


@tokens_group.command("create")
@click.argument("name")
@click.option("--user", "username", envvar="MLFLOW_EXT_TOKEN_USER", help="Owner (default: yourself).")
@click.option(
    "--expires-in",
    envvar="MLFLOW_EXT_TOKEN_EXPIRES_IN",
    callback=_duration,
    help="Lifetime such as 90d, 12h or 30m (default: no expiry).",
)
@dry_run_option
@tracking_option()
@output_option
def create(
    name: str,
    username: str | None,
    expires_in: int | None,
    dry_run: bool,
    tracking_uri: str | None,
    output: str,
) -> None:
    """Create a token NAME; its secret is printed once and never stored."""
    request = {"name": name, "username": username, "expires_in_seconds": expires_in}
    if dry_run:
        emit({"changed": True, "dry_run": True, "would_create": request}, output)
        return
    answer = admin_client(tracking_uri).call("POST", paths.TOKENS_CREATE, request)
    if output == "json":
        click.echo(json.dumps({"changed": True, **answer}, sort_keys=True))
        return
    info = answer["token_info"]
    click.echo(answer["token"])
    click.echo(
        f"token {info['id']} ({info['name']}) for {info['username']}, expires {_when(info['expires_at'])}. "
        "This is the only time the secret is shown.",
        err=True,
    )


@tokens_group.command("list")
@click.option("--user", "username", envvar="MLFLOW_EXT_TOKEN_USER", help="Only this user's tokens.")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@tracking_option()
@output_option
def list_tokens(username: str | None, include_revoked: bool, tracking_uri: str | None, output: str) -> None:
    """List tokens (yours, or everyone's for an admin). Secrets are never shown."""
    answer = admin_client(tracking_uri).call(
        "GET", paths.TOKENS_LIST, {"username": username, "include_revoked": str(include_revoked).lower()}
    )
    tokens: list[dict[str, Any]] = answer.get("tokens", [])
    if output == "json":
        click.echo(json.dumps({"tokens": tokens}, sort_keys=True))
        return
    click.echo(f"{'id':>5}  {'user':<20} {'name':<24} {'status':<8} {'expires':<21} {'last used':<21}")
    for t in tokens:
        click.echo(
            f"{t['id']:>5}  {t['username']:<20} {t['name']:<24} {t['status']:<8} "
            f"{_when(t['expires_at']):<21} {_when(t['last_used_at']):<21}"
        )


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
@dry_run_option
@tracking_option()
@output_option
def revoke(token_id: int, dry_run: bool, tracking_uri: str | None, output: str) -> None:
    """Revoke token TOKEN_ID: refused at once by every worker and replica."""
    if dry_run:
        emit({"changed": True, "dry_run": True, "would_revoke": token_id}, output)
        return
    answer = admin_client(tracking_uri).call("POST", paths.TOKENS_REVOKE, {"id": token_id})
    emit({"changed": True, **answer["token_info"]}, output)


@tokens_group.command("ensure-service-account")
@click.option("--username", envvar="MLFLOW_EXT_SERVICE_ACCOUNT", required=True, help="e.g. gocd")
@click.option("--token-name", envvar="MLFLOW_EXT_SERVICE_TOKEN_NAME", required=True, help="e.g. gocd-agents")
@click.option(
    "--token-file",
    envvar="MLFLOW_EXT_SERVICE_TOKEN_FILE",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where the token is written (mode 0600); a valid token there is kept.",
)
@click.option(
    "--expires-in",
    envvar="MLFLOW_EXT_SERVICE_TOKEN_EXPIRES_IN",
    callback=_duration,
    help="Lifetime of a newly created token (default: no expiry).",
)
@click.option(
    "--right",
    "rights",
    multiple=True,
    type=click.Choice(RIGHTS),
    help="Platform rights (on every model) the account should hold; repeatable.",
)
@click.option(
    "--promote-model",
    "promote_models",
    multiple=True,
    help="A registered model on which the account should hold the promote right; repeatable.",
)
@env_file_option
@dry_run_option
@output_option
def ensure_service_account(
    username: str,
    token_name: str,
    token_file: str,
    expires_in: int | None,
    rights: tuple[str, ...],
    promote_models: tuple[str, ...],
    env_file: str | None,
    dry_run: bool,
    output: str,
) -> None:
    """Provisioning: create the service account and its token if needed (idempotent, prints `changed`)."""
    values = entrypoint.resolve(settings.apply_env_file(env_file))
    report = ensure(
        values, username, token_name, token_file, expires_in, rights, dry_run, promote_models=promote_models
    )
    emit(report, output)
