"""Protected aliases and the audit log on a real server (mlflow-ext-auth on Postgres)."""

from __future__ import annotations

import json
import secrets

import pytest

from tests.integration.test_auth_tokens import Api, admin, new_token, new_user

pytestmark = pytest.mark.integration

ALIAS = "/api/2.0/mlflow/registered-models/alias"


@pytest.fixture(scope="module")
def model(platform) -> dict:
    boss = admin(platform)
    experiment_id = boss.ok(
        "POST", "/api/2.0/mlflow/experiments/create", {"name": f"alias-{secrets.token_hex(4)}"}
    )["experiment_id"]
    run = boss.ok("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id})["run"]["info"]
    name = f"alias-model-{secrets.token_hex(4)}"
    boss.ok("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
    for _ in range(3):
        boss.ok(
            "POST",
            "/api/2.0/mlflow/model-versions/create",
            {"name": name, "source": run["artifact_uri"] + "/model", "run_id": run["run_id"]},
        )
    manager, password = new_user(platform, "manager")
    boss.ok(
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        {
            "username": manager,
            "resource_type": "registered_model",
            "resource_id": name,
            "permission": "MANAGE",
        },
    )
    return {"name": name, "manager": Api(platform.tracking_uri, manager, password), "manager_name": manager}


def audit_events(platform) -> list[dict]:
    events = []
    for line in platform.server.log().splitlines():
        if line.startswith("{") and '"event"' in line:
            events.append(json.loads(line))
    return events


def test_unprotected_aliases_need_only_mlflows_permission(model):
    model["manager"].ok("POST", ALIAS, {"name": model["name"], "alias": "candidate", "version": "1"})
    model["manager"].ok("DELETE", ALIAS, {"name": model["name"], "alias": "candidate"})


@pytest.mark.parametrize("alias", ["production", "Production"])
def test_protected_alias_needs_the_promote_right(model, alias):
    response = model["manager"].call("POST", ALIAS, {"name": model["name"], "alias": alias, "version": "1"})
    assert response.status_code == 403
    body = response.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    assert "promote right" in body["message"] and model["name"] in body["message"]


def test_promote_right_sets_moves_and_deletes_and_everything_is_audited(platform, model):
    boss = admin(platform)
    boss.ok(
        "POST",
        "/api/2.0/mlflow-ext/rights/grant",
        {"username": model["manager_name"], "right": "promote", "resource": model["name"]},
    )
    _, token = new_token(platform, model["manager_name"])
    promoter = Api(platform.tracking_uri, token=token)
    promoter.ok("POST", ALIAS, {"name": model["name"], "alias": "production", "version": "1"})
    promoter.ok("POST", ALIAS, {"name": model["name"], "alias": "production", "version": "2"})  # move
    got = promoter.ok(
        "GET", "/api/2.0/mlflow/registered-models/alias", {"name": model["name"], "alias": "production"}
    )
    assert got["model_version"]["version"] == "2"
    promoter.ok("DELETE", ALIAS, {"name": model["name"], "alias": "production"})

    events = audit_events(platform)
    changes = [e for e in events if e["event"] == "alias.protected_changed" and e["name"] == model["name"]]
    assert [(c["action"], c.get("version")) for c in changes] == [
        ("set", "1"),
        ("set", "2"),
        ("delete", None),
    ]
    assert all(c["actor"] == model["manager_name"] for c in changes)
    assert any(e["event"] == "alias.protected_denied" and e["name"] == model["name"] for e in events)
    assert any(e["event"] == "right.granted" and e["user"] == model["manager_name"] for e in events)
    assert token not in platform.server.log()


def test_deleting_a_version_that_carries_a_protected_alias_needs_promote(platform, model):
    boss = admin(platform)
    boss.ok("POST", ALIAS, {"name": model["name"], "alias": "production", "version": "3"})
    boss.ok(
        "POST",
        "/api/2.0/mlflow-ext/rights/revoke",
        {"username": model["manager_name"], "right": "promote", "resource": model["name"]},
    )
    manager = model["manager"]
    refused = manager.call(
        "DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": model["name"], "version": "3"}
    )
    assert refused.status_code == 403 and "promote right" in refused.json()["message"]
    refused = manager.call(
        "POST", "/api/2.0/mlflow/registered-models/rename", {"name": model["name"], "new_name": "x"}
    )
    assert refused.status_code == 403
    refused = manager.call("DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": model["name"]})
    assert refused.status_code == 403
    # A version without a protected alias is the manager's to delete.
    manager.ok("DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": model["name"], "version": "1"})


def test_audit_log_records_auth_events_and_never_secrets(platform):
    boss = admin(platform)
    username, password = new_user(platform, "audited")
    Api(platform.tracking_uri, username, "not-" + password).call("GET", "/api/2.0/mlflow/users/current")
    token_id, token = new_token(platform, username)
    boss.ok("POST", "/api/2.0/mlflow-ext/tokens/revoke", {"id": token_id})
    boss.ok(
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        {"username": username, "resource_type": "experiment", "resource_id": "0", "permission": "READ"},
    )
    events = audit_events(platform)
    kinds = {(e["event"], e.get("user") or e.get("username")) for e in events}
    for expected in ("auth.failure", "token.created", "token.revoked", "grant.changed"):
        assert (expected, username) in kinds, expected
    failure = next(e for e in events if e["event"] == "auth.failure" and e.get("user") == username)
    assert failure["address"].startswith("10.")  # the client behind the trusted proxy, not the proxy
    log = platform.server.log()
    assert password not in log and token not in log
