"""`mlflow-ext users ...` and `mlflow-ext grant ...`: accounts, grants and rights over the REST API.

``users unlock`` is the exception: it works on the auth database named by the server's env file, so
an operator whom the lockout keeps out of the HTTP API can still lift it.

Credentials: ``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``;
missing ones are prompted for. New passwords come from ``MLFLOW_EXT_NEW_PASSWORD`` or a prompt, never
from a flag. Every changing command has ``--dry-run``; every command has ``--output json``.

The module imports neither MLflow nor Flask (only the auth database's tables, for ``unlock``): like every
command, these check the server first and fail within a second when it is not there.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from typing import Any

import click

from mlflow_ext import settings
from mlflow_ext.auth import paths
from mlflow_ext.auth import unlock as offline
from mlflow_ext.auth.paths import PERMISSIONS_API, RIGHTS, USERS_API
from mlflow_ext.commands.options import (
    admin_client,
    dry_run_option,
    emit,
    env_file_option,
    output_option,
    tracking_option,
)


def _new_password(username: str) -> str:
    password = os.environ.get("MLFLOW_EXT_NEW_PASSWORD")
    if password:
        return password
    return str(
        click.prompt(f"New password for {username}", hide_input=True, confirmation_prompt=True, err=True)
    )


# --- users --------------------------------------------------------------------------------------


@click.group("users")
def users_group() -> None:
    """Create, list and delete accounts; service accounts; lockouts."""


@users_group.command("create")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Make the user an admin.")
@click.option("--service-account", is_flag=True, help="A machine account: tokens only, no usable password.")
@click.option("--description", default="", help="What the service account is for.")
@dry_run_option
@tracking_option()
@output_option
def create_user(
    username: str,
    admin: bool,
    service_account: bool,
    description: str,
    dry_run: bool,
    tracking_uri: str | None,
    output: str,
) -> None:
    """Create USERNAME (password from MLFLOW_EXT_NEW_PASSWORD or a prompt)."""
    if dry_run:
        emit(
            {"changed": True, "dry_run": True, "would_create": username, "service_account": service_account},
            output,
        )
        return
    client = admin_client(tracking_uri)
    if service_account:
        client.call("POST", paths.SERVICE_ACCOUNTS_CREATE, {"username": username, "description": description})
    else:
        client.call(
            "POST", f"{USERS_API}/create", {"username": username, "password": _new_password(username)}
        )
    if admin:
        client.call("PATCH", f"{USERS_API}/update-admin", {"username": username, "is_admin": True})
    emit({"changed": True, "username": username, "admin": admin, "service_account": service_account}, output)


@users_group.command("list")
@tracking_option()
@output_option
def list_users(tracking_uri: str | None, output: str) -> None:
    """List every account (admins only)."""
    client = admin_client(tracking_uri)
    users = client.call("GET", f"{USERS_API}/list").get("users", [])
    service = set(client.call("GET", paths.SERVICE_ACCOUNTS_LIST).get("service_accounts", []))
    rows = [
        {"username": u["username"], "is_admin": u["is_admin"], "service_account": u["username"] in service}
        for u in users
    ]
    if output == "json":
        click.echo(json.dumps({"users": rows}, sort_keys=True))
        return
    for row in rows:
        kind = "admin" if row["is_admin"] else ("service account" if row["service_account"] else "user")
        click.echo(f"{row['username']:<32} {kind}")


@users_group.command("delete")
@click.argument("username")
@dry_run_option
@tracking_option()
@output_option
def delete_user(username: str, dry_run: bool, tracking_uri: str | None, output: str) -> None:
    """Delete USERNAME; their tokens are revoked and their rights dropped."""
    if dry_run:
        emit({"changed": True, "dry_run": True, "would_delete": username}, output)
        return
    admin_client(tracking_uri).call("DELETE", f"{USERS_API}/delete", {"username": username})
    emit({"changed": True, "deleted": username}, output)


@users_group.command("set-admin")
@click.argument("username")
@click.option("--admin/--no-admin", default=True, show_default=True)
@dry_run_option
@tracking_option()
@output_option
def set_admin(username: str, admin: bool, dry_run: bool, tracking_uri: str | None, output: str) -> None:
    """Grant or withdraw admin status."""
    if not dry_run:
        admin_client(tracking_uri).call(
            "PATCH", f"{USERS_API}/update-admin", {"username": username, "is_admin": admin}
        )
    emit({"changed": True, "dry_run": dry_run, "username": username, "is_admin": admin}, output)


@users_group.command("set-password")
@click.argument("username")
@dry_run_option
@tracking_option()
@output_option
def set_password(username: str, dry_run: bool, tracking_uri: str | None, output: str) -> None:
    """Set USERNAME's password (admins; from MLFLOW_EXT_NEW_PASSWORD or a prompt)."""
    if not dry_run:
        admin_client(tracking_uri).call(
            "PATCH",
            f"{USERS_API}/update-password",
            {"username": username, "password": _new_password(username)},
        )
    emit({"changed": True, "dry_run": dry_run, "username": username}, output)


@users_group.command("lockouts")
@tracking_option()
@output_option
def lockouts(tracking_uri: str | None, output: str) -> None:
    """Usernames and client addresses locked out after failed logins."""
    answer = admin_client(tracking_uri).call("GET", paths.LOCKOUTS_LIST)
    if output == "json":
        click.echo(json.dumps(answer, sort_keys=True))
        return
    for lock in answer.get("lockouts", []):
        click.echo(f"{lock['key']:<48} until {lock['locked_until']}")


@users_group.command("unlock")
@click.argument("username", required=False)
@click.option("--address", help="Client address to unlock (as the audit log and `users lockouts` show it).")
@click.option("--all", "everything", is_flag=True, help="Every username and address.")
@env_file_option
@dry_run_option
@output_option
def unlock(
    username: str | None,
    address: str | None,
    everything: bool,
    env_file: str | None,
    dry_run: bool,
    output: str,
) -> None:
    """Lift lockouts on the auth database directly (no server login needed): USERNAME, --address or --all.

    Reads the auth database from the server's env file, so it also works for an admin whose own address
    is locked out. Prints what it cleared (with --dry-run: what it would clear).
    """
    if sum((username is not None, address is not None, everything)) != 1:
        raise click.UsageError("give exactly one of USERNAME, --address or --all")

    values = settings.load(settings.apply_env_file(env_file))
    report = offline.unlock(values, username, address, everything, dry_run)
    if output == "json":
        emit(report, output)
        return
    verb = "would clear" if dry_run else "cleared"
    if not report["cleared"]:
        click.echo("nothing to clear: no lockout or counted failure matches")
    for row in report["cleared"]:
        state = f"locked until {_when(row['locked_until'])}" if row["locked"] else "not locked"
        click.echo(f"{verb} {row['key']} ({row['failures']} failures counted, {state})")


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- grant --------------------------------------------------------------------------------------


@click.group("grant")
def grant_group() -> None:
    """MLflow permissions (READ, USE, EDIT, MANAGE, NO_PERMISSIONS) and platform rights."""


@grant_group.command("permission")
@click.argument("username")
@click.argument("resource_type", metavar="RESOURCE_TYPE")
@click.argument("resource_id")
@click.argument("permission", type=click.Choice(["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"]))
@dry_run_option
@tracking_option()
@output_option
def grant_permission(
    username: str,
    resource_type: str,
    resource_id: str,
    permission: str,
    dry_run: bool,
    tracking_uri: str | None,
    output: str,
) -> None:
    """Grant PERMISSION on a resource (e.g. experiment 12, registered_model churn)."""
    request = {
        "username": username,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "permission": permission,
    }
    if not dry_run:
        admin_client(tracking_uri).call("POST", f"{PERMISSIONS_API}/grant", request)
    emit({"changed": True, "dry_run": dry_run, **request}, output)


@grant_group.command("revoke")
@click.argument("username")
@click.argument("resource_type", metavar="RESOURCE_TYPE")
@click.argument("resource_id")
@dry_run_option
@tracking_option()
@output_option
def revoke_permission(
    username: str, resource_type: str, resource_id: str, dry_run: bool, tracking_uri: str | None, output: str
) -> None:
    """Revoke a user's permission on a resource."""
    request = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
    if not dry_run:
        admin_client(tracking_uri).call("POST", f"{PERMISSIONS_API}/revoke", request)
    emit({"changed": True, "dry_run": dry_run, **request}, output)


@grant_group.command("list")
@click.argument("username")
@tracking_option()
@output_option
def list_permissions(username: str, tracking_uri: str | None, output: str) -> None:
    """A user's MLflow permissions and platform rights."""
    client = admin_client(tracking_uri)
    permissions = client.call("GET", f"{PERMISSIONS_API}/list", {"username": username})
    rights = client.call("GET", paths.RIGHTS_LIST, {"username": username}).get("rights", [])
    data = {"username": username, "permissions": permissions, "rights": rights}
    if output == "json":
        click.echo(json.dumps(data, sort_keys=True))
        return
    click.echo(json.dumps(permissions, indent=2, sort_keys=True))
    for right in rights:
        click.echo(f"right: {right['right']} on {right['resource']}")


def _right_request(username: str, right: str, model: str | None) -> dict[str, Any]:
    if right != "promote" and model is not None:
        raise click.UsageError("--model applies to the promote right only")
    return {"username": username, "right": right, "resource": model or "*"}


right_choice = click.Choice(RIGHTS)


def _change_right(
    route: str,
    username: str,
    right: str,
    model: str | None,
    dry_run: bool,
    tracking_uri: str | None,
    output: str,
) -> None:
    request = _right_request(username, right, model)
    if dry_run:
        emit({"changed": True, "dry_run": True, **request}, output)
        return
    answer = admin_client(tracking_uri).call("POST", route, request)
    emit({**answer, **request}, output)


def _right_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    for decorate in reversed(
        (
            click.argument("username"),
            click.argument("right", type=right_choice),
            click.option("--model", help="For promote: the registered model (default: every model)."),
            dry_run_option,
            tracking_option(),
            output_option,
        )
    ):
        func = decorate(func)
    return func


@grant_group.command("right")
@_right_arguments
def grant_right(
    username: str, right: str, model: str | None, dry_run: bool, tracking_uri: str | None, output: str
) -> None:
    """Grant a platform right: create_experiment, create_registered_model, or promote."""
    _change_right(paths.RIGHTS_GRANT, username, right, model, dry_run, tracking_uri, output)


@grant_group.command("revoke-right")
@_right_arguments
def revoke_right(
    username: str, right: str, model: str | None, dry_run: bool, tracking_uri: str | None, output: str
) -> None:
    """Revoke a platform right."""
    _change_right(paths.RIGHTS_REVOKE, username, right, model, dry_run, tracking_uri, output)


@grant_group.command("rights")
@click.option("--user", "username", help="Only this user's rights.")
@tracking_option()
@output_option
def list_rights(username: str | None, tracking_uri: str | None, output: str) -> None:
    """Platform rights held (admins only)."""
    rights = (
        admin_client(tracking_uri).call("GET", paths.RIGHTS_LIST, {"username": username}).get("rights", [])
    )
    if output == "json":
        click.echo(json.dumps({"rights": rights}, sort_keys=True))
        return
    for right in rights:
        click.echo(f"{right['username']:<32} {right['right']:<24} {right['resource']}")
