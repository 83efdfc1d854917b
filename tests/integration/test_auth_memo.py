"""Memoised authorization never serves a stale decision: two servers (each with two workers) on one
auth database; changes go through server A while server B's memos are warm for the user concerned."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.integration.test_auth_tokens import Api, admin, new_token, new_user
from tests.support.services import MlflowServer

pytestmark = pytest.mark.integration

TRIES = 12  # fresh connections: enough to reach every worker of a server more often than not
GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"


@pytest.fixture(scope="module")
def server_b(platform) -> Iterator[str]:
    replica = MlflowServer(dict(platform.server.env)).start()
    try:
        yield replica.url
    finally:
        replica.stop()


def _experiment_with_run(platform) -> tuple[str, str]:
    boss = admin(platform)
    experiment_id = boss.ok(
        "POST", "/api/2.0/mlflow/experiments/create", {"name": f"memo-{secrets.token_hex(4)}"}
    )["experiment_id"]
    run = boss.ok("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id})["run"]
    return experiment_id, run["info"]["run_id"]


def _grant(platform, path: str, username: str, experiment_id: str, permission: str = "EDIT") -> None:
    payload = {"username": username, "resource_type": "experiment", "resource_id": experiment_id}
    if path == GRANT:
        payload["permission"] = permission
    admin(platform).ok("POST", path, payload)


def _log_statuses(api: Api, run_id: str, tries: int = TRIES) -> set[int]:
    payload = {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 0, "step": 0}
    return {api.call("POST", "/api/2.0/mlflow/runs/log-metric", payload).status_code for _ in range(tries)}


def test_a_revoked_grant_is_refused_at_once_by_another_server(platform, server_b):
    experiment_id, run_id = _experiment_with_run(platform)
    username, _ = new_user(platform, "memo-revoke")
    _grant(platform, GRANT, username, experiment_id)
    _, token = new_token(platform, username)
    on_b = Api(server_b, token=token)
    assert _log_statuses(on_b, run_id) == {200}  # memos warm on B's workers
    _grant(platform, REVOKE, username, experiment_id)
    assert _log_statuses(on_b, run_id) == {403}
    assert _log_statuses(Api(platform.tracking_uri, token=token), run_id) == {403}


def test_a_new_grant_is_honoured_at_once_by_another_server(platform, server_b):
    experiment_id, run_id = _experiment_with_run(platform)
    username, password = new_user(platform, "memo-grant")
    on_b = Api(server_b, username, password)
    assert _log_statuses(on_b, run_id) == {403}  # the empty grants are memoised on B
    _grant(platform, GRANT, username, experiment_id)
    assert _log_statuses(on_b, run_id) == {200}
    # A lower level replacing it: READ is not enough to write.
    _grant(platform, REVOKE, username, experiment_id)
    _grant(platform, GRANT, username, experiment_id, "READ")
    assert _log_statuses(on_b, run_id) == {403}


def test_a_new_experiment_is_usable_by_its_creator_at_once_everywhere(platform, server_b):
    other_experiment, _ = _experiment_with_run(platform)
    username, password = new_user(platform, "memo-creator")
    admin(platform).ok(
        "POST", "/api/2.0/mlflow-ext/rights/grant", {"username": username, "right": "create_experiment"}
    )
    on_a, on_b = Api(platform.tracking_uri, username, password), Api(server_b, username, password)
    get = "/api/2.0/mlflow/experiments/get"
    for api in (on_a, on_b):  # warm both servers' memos with the user's (empty) grants
        assert {
            api.call("GET", get, {"experiment_id": other_experiment}).status_code for _ in range(TRIES)
        } == {403}
    created = on_a.ok("POST", "/api/2.0/mlflow/experiments/create", {"name": f"mine-{secrets.token_hex(4)}"})
    experiment_id = created["experiment_id"]
    assert {on_b.call("GET", get, {"experiment_id": experiment_id}).status_code for _ in range(TRIES)} == {
        200
    }
    run = on_b.ok("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id})["run"]
    assert _log_statuses(on_b, run["info"]["run_id"]) == {200}
    assert _log_statuses(on_a, run["info"]["run_id"]) == {200}


def test_a_deleted_user_is_refused_at_once_by_another_server(platform, server_b):
    experiment_id, run_id = _experiment_with_run(platform)
    username, password = new_user(platform, "memo-deleted")
    _grant(platform, GRANT, username, experiment_id)
    _, token = new_token(platform, username)
    assert _log_statuses(Api(server_b, username, password), run_id) == {200}
    assert _log_statuses(Api(server_b, token=token), run_id) == {200}
    admin(platform).ok("DELETE", "/api/2.0/mlflow/users/delete", {"username": username})
    # Below the lockout threshold for the username; each token attempt from its own address.
    assert _log_statuses(Api(server_b, username, password), run_id, tries=3) == {401}
    assert {_log_statuses(Api(server_b, token=token), run_id, tries=1).pop() for _ in range(TRIES)} == {401}
