"""Access tokens on a real server (mlflow-ext-auth on Postgres): CLI, REST, storage, revocation.

Also holds the small HTTP helpers the other ``test_auth_*`` modules import.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.services import VENV_BIN, MlflowServer, Platform

pytestmark = pytest.mark.integration

TIMEOUT = 30


class Api:
    """One principal talking to one server: Basic, Bearer, or nothing."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.auth = (username, password) if username is not None and password is not None else None
        # Each principal comes from its own client address, as clients do behind the platform's proxy
        # (loopback is a trusted proxy): failed logins in one test never lock out the tests' loopback.
        self.headers = {"X-Forwarded-For": f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.7"}
        self.headers.update(headers or {})
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> requests.Response:
        kwargs: dict[str, Any] = {"auth": self.auth, "headers": self.headers, "timeout": TIMEOUT}
        if method == "GET":  # as MLflow's own client: a JSON body for everything else, DELETE included
            kwargs["params"] = payload
        else:
            kwargs["json"] = payload or {}
        # A fresh connection per call, so successive calls spread over the server's workers.
        with requests.Session() as session:
            return session.request(method, self.url + path, **kwargs)

    def ok(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.call(method, path, payload)
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.text.strip() else {}


def admin(platform: Platform) -> Api:
    return Api(platform.tracking_uri, platform.admin_username, platform.admin_password)


def new_user(platform: Platform, prefix: str = "user") -> tuple[str, str]:
    username = f"{prefix}-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    admin(platform).ok("POST", "/api/2.0/mlflow/users/create", {"username": username, "password": password})
    return username, password


def new_token(platform: Platform, username: str, name: str | None = None, **extra: Any) -> tuple[int, str]:
    answer = admin(platform).ok(
        "POST",
        "/api/2.0/mlflow-ext/tokens/create",
        {"username": username, "name": name or f"t-{secrets.token_hex(3)}", **extra},
    )
    return answer["token_info"]["id"], answer["token"]


def cli(platform: Platform, *args: str, env: dict[str, str] | None = None, check: bool = True) -> Any:
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": platform.tracking_uri,
        "MLFLOW_TRACKING_USERNAME": platform.admin_username,
        "MLFLOW_TRACKING_PASSWORD": platform.admin_password,
        **(env or {}),
    }
    result = subprocess.run(
        [str(VENV_BIN / "mlflow-ext"), *args], capture_output=True, text=True, env=environment, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if "--output" in args else result.stdout
    return result


CURRENT = "/api/2.0/mlflow/users/current"


def test_token_lifecycle_through_the_cli(platform):
    username, _ = new_user(platform, "alice")
    created = cli(
        platform, "tokens", "create", "laptop", "--user", username, "--expires-in", "1d", "--output", "json"
    )
    token, info = created["token"], created["token_info"]
    assert token.startswith("mlxt_") and info["username"] == username and info["expires_at"]

    me = Api(platform.tracking_uri, token=token).ok("GET", CURRENT)
    assert me["user"]["username"] == username

    listed = cli(platform, "tokens", "list", "--user", username, "--output", "json")["tokens"]
    assert [t["name"] for t in listed] == ["laptop"]
    assert listed[0]["last_used_at"] is not None
    assert token not in json.dumps(listed)

    # Only the hash is stored.
    stored = platform.postgres.psql(
        "SELECT token_hash, prefix FROM mlflow_ext_tokens", database="mlflow_auth"
    )
    assert token not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored

    cli(platform, "tokens", "revoke", str(info["id"]), "--output", "json")
    assert Api(platform.tracking_uri, token=token).call("GET", CURRENT).status_code == 401


def test_mlflow_clients_use_the_standard_token_variable(platform, monkeypatch):
    from mlflow import MlflowClient

    username, _ = new_user(platform, "ci")
    admin(platform).ok(
        "POST", "/api/2.0/mlflow-ext/rights/grant", {"username": username, "right": "create_experiment"}
    )
    _, token = new_token(platform, username)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", platform.tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    client = MlflowClient()
    experiment_id = client.create_experiment(f"token-{secrets.token_hex(4)}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "loss", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}


def test_expired_token_is_refused(platform):
    username, _ = new_user(platform, "short")
    _, token = new_token(platform, username, expires_in_seconds=2)
    api = Api(platform.tracking_uri, token=token)
    assert api.call("GET", CURRENT).status_code == 200
    time.sleep(2.5)
    assert api.call("GET", CURRENT).status_code == 401


@pytest.fixture(scope="module")
def second_replica(platform) -> Iterator[MlflowServer]:
    """Another server on the same databases, as a second host would run it."""
    replica = MlflowServer(dict(platform.server.env)).start()
    try:
        yield replica
    finally:
        replica.stop()


def test_revocation_is_refused_at_once_by_every_worker_and_replica(platform, second_replica):
    username, _ = new_user(platform, "agent")
    token_id, token = new_token(platform, username)
    servers = [platform.tracking_uri, second_replica.url]
    # Warm every worker's cache on both replicas (fresh connections spread over the workers).
    for url in servers:
        for _ in range(12):
            assert Api(url, token=token).call("GET", CURRENT).status_code == 200
    # Revoke through the second replica; the first one (and all its workers) refuse at once.
    Api(second_replica.url, platform.admin_username, platform.admin_password).ok(
        "POST", "/api/2.0/mlflow-ext/tokens/revoke", {"id": token_id}
    )
    for url in servers:
        statuses = {Api(url, token=token).call("GET", CURRENT).status_code for _ in range(12)}
        assert statuses == {401}, (url, statuses)


def test_password_change_is_seen_by_every_worker_at_once(platform):
    username, password = new_user(platform, "rotate")
    old = Api(platform.tracking_uri, username, password)
    for _ in range(8):
        assert old.call("GET", CURRENT).status_code == 200
    admin(platform).ok(
        "PATCH",
        "/api/2.0/mlflow/users/update-password",
        {"username": username, "password": "N3w-" + password},
    )
    # Three attempts: below the lockout threshold (5), and enough to reach both workers more often than not.
    assert {old.call("GET", CURRENT).status_code for _ in range(3)} == {401}
    assert Api(platform.tracking_uri, username, "N3w-" + password).call("GET", CURRENT).status_code == 200


def test_users_manage_only_their_own_tokens(platform):
    alice, alice_password = new_user(platform, "self")
    bob, _ = new_user(platform, "other")
    as_alice = Api(platform.tracking_uri, alice, alice_password)
    own = as_alice.ok("POST", "/api/2.0/mlflow-ext/tokens/create", {"name": "mine"})
    assert own["token_info"]["username"] == alice
    assert (
        as_alice.call("POST", "/api/2.0/mlflow-ext/tokens/create", {"name": "x", "username": bob}).status_code
        == 403
    )
    # A token cannot mint more tokens.
    by_token = Api(platform.tracking_uri, token=own["token"])
    assert by_token.call("POST", "/api/2.0/mlflow-ext/tokens/create", {"name": "child"}).status_code == 403
    assert [t["name"] for t in as_alice.ok("GET", "/api/2.0/mlflow-ext/tokens/list")["tokens"]] == ["mine"]
    assert as_alice.call("GET", "/api/2.0/mlflow-ext/tokens/list", {"username": bob}).status_code == 403
    bob_token_id, _ = new_token(platform, bob)
    assert as_alice.call("POST", "/api/2.0/mlflow-ext/tokens/revoke", {"id": bob_token_id}).status_code == 403
    assert (
        as_alice.call(
            "POST", "/api/2.0/mlflow-ext/tokens/revoke", {"id": own["token_info"]["id"]}
        ).status_code
        == 200
    )


def test_service_account_provisioning_is_idempotent(platform, tmp_path):
    token_file = tmp_path / "gocd_token"
    args = (
        "tokens",
        "ensure-service-account",
        "--username",
        "gocd",
        "--token-name",
        "gocd-agents",
        "--token-file",
        str(token_file),
        "--right",
        "create_experiment",
        "--env-file",
        str(platform.server.env_file),
        "--output",
        "json",
    )
    dry = cli(platform, *args, "--dry-run")
    assert dry["changed"] is True and not token_file.exists()
    first = cli(platform, *args)
    assert first["changed"] is True and first["user_created"] and first["token_created"]
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    assert token not in json.dumps(first)
    assert cli(platform, *args)["changed"] is False
    assert cli(platform, *args, "--dry-run")["changed"] is False
    me = Api(platform.tracking_uri, token=token).ok("GET", CURRENT)
    assert me["user"]["username"] == "gocd"
    # A lost token file is replaced, and the token nobody holds any more is revoked.
    token_file.unlink()
    again = cli(platform, *args)
    assert again["changed"] is True and again["token_revoked"] == first["token_id"]
    assert Api(platform.tracking_uri, token=token).call("GET", CURRENT).status_code == 401
    assert (
        "gocd" in admin(platform).ok("GET", "/api/2.0/mlflow-ext/service-accounts/list")["service_accounts"]
    )
