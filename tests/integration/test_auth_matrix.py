"""The permission matrix: who may do what on a real server (mlflow-ext-auth on Postgres).

Rows are principals, columns operations; every cell asserts its status code. READ/EDIT/MANAGE are
MLflow grants on one experiment and one registered model; "promote" holds EDIT on both plus the promote
right on the model and signs in with an access token, as a CI agent does.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import pytest

from tests.integration.test_auth_tokens import Api, admin, new_token, new_user

pytestmark = pytest.mark.integration

OPERATIONS = (
    "read",
    "write",
    "delete",
    "create experiment",
    "register model",
    "set protected alias",
    "list users",
    "manage tokens",
)
DENIED = dict.fromkeys(OPERATIONS, 401)
EXPECTED = {
    "anonymous": DENIED,
    "wrong password": DENIED,
    "expired token": DENIED,
    "revoked token": DENIED,
    "READ user": dict(zip(OPERATIONS, (200, 403, 403, 403, 403, 403, 403, 403), strict=True)),
    "EDIT user": dict(zip(OPERATIONS, (200, 200, 403, 403, 403, 403, 403, 403), strict=True)),
    "MANAGE user": dict(zip(OPERATIONS, (200, 200, 200, 403, 403, 403, 403, 403), strict=True)),
    "promote right": dict(zip(OPERATIONS, (200, 200, 403, 403, 403, 200, 403, 403), strict=True)),
    "admin": dict.fromkeys(OPERATIONS, 200),
}


@dataclass
class World:
    url: str
    experiment_id: str
    run_id: str
    model: str
    principals: dict[str, Api]
    target_user: str
    admin: Api


@pytest.fixture(scope="module")
def world(platform) -> World:
    boss = admin(platform)
    experiment_id = boss.ok(
        "POST", "/api/2.0/mlflow/experiments/create", {"name": f"matrix-{secrets.token_hex(4)}"}
    )["experiment_id"]
    run = boss.ok("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id})["run"]
    model = f"matrix-model-{secrets.token_hex(4)}"
    boss.ok("POST", "/api/2.0/mlflow/registered-models/create", {"name": model})
    boss.ok(
        "POST",
        "/api/2.0/mlflow/model-versions/create",
        {"name": model, "source": run["info"]["artifact_uri"] + "/model", "run_id": run["info"]["run_id"]},
    )
    url = platform.tracking_uri

    def grant(username: str, permission: str) -> None:
        for resource_type, resource_id in (("experiment", experiment_id), ("registered_model", model)):
            boss.ok(
                "POST",
                "/api/3.0/mlflow/users/permissions/grant",
                {
                    "username": username,
                    "resource_type": resource_type,
                    "resource_id": resource_id,
                    "permission": permission,
                },
            )

    principals: dict[str, Api] = {"anonymous": Api(url), "admin": boss}
    for level in ("READ", "EDIT", "MANAGE"):
        username, password = new_user(platform, level.lower())
        grant(username, level)
        principals[f"{level} user"] = Api(url, username, password)
    promoter, _ = new_user(platform, "promoter")
    grant(promoter, "EDIT")
    boss.ok(
        "POST",
        "/api/2.0/mlflow-ext/rights/grant",
        {"username": promoter, "right": "promote", "resource": model},
    )
    principals["promote right"] = Api(url, token=new_token(platform, promoter)[1])

    holder, _ = new_user(platform, "holder")
    _, expired = new_token(platform, holder, expires_in_seconds=1)
    revoked_id, revoked = new_token(platform, holder)
    boss.ok("POST", "/api/2.0/mlflow-ext/tokens/revoke", {"id": revoked_id})
    principals["expired token"] = Api(url, token=expired)
    principals["revoked token"] = Api(url, token=revoked)
    time.sleep(1.5)
    target, _ = new_user(platform, "target")
    return World(url, experiment_id, run["info"]["run_id"], model, principals, target, boss)


def attempt(world: World, who: str, operation: str) -> int:
    api = world.principals.get(who, world.principals["anonymous"])
    if who == "wrong password":
        # A fresh account per cell: this row must not lock anybody out.
        username = f"wrongpw-{secrets.token_hex(4)}"
        world.admin.ok(
            "POST", "/api/2.0/mlflow/users/create", {"username": username, "password": "Right-pass-123"}
        )
        api = Api(world.url, username, "Wrong-pass-123")
    name = f"m-{secrets.token_hex(4)}"
    if operation == "read":
        response = api.call("GET", "/api/2.0/mlflow/experiments/get", {"experiment_id": world.experiment_id})
    elif operation == "write":
        response = api.call(
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            {
                "run_id": world.run_id,
                "key": "loss",
                "value": 0.1,
                "timestamp": int(time.time() * 1000),
                "step": 0,
            },
        )
    elif operation == "delete":
        victim = world.admin.ok("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": world.experiment_id})
        response = api.call(
            "POST", "/api/2.0/mlflow/runs/delete", {"run_id": victim["run"]["info"]["run_id"]}
        )
    elif operation == "create experiment":
        response = api.call("POST", "/api/2.0/mlflow/experiments/create", {"name": name})
    elif operation == "register model":
        response = api.call("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
    elif operation == "set protected alias":
        response = api.call(
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": world.model, "alias": "production", "version": "1"},
        )
    elif operation == "list users":
        response = api.call("GET", "/api/2.0/mlflow/users/list")
    else:
        response = api.call(
            "POST", "/api/2.0/mlflow-ext/tokens/create", {"username": world.target_user, "name": name}
        )
    if operation == "set protected alias" and response.status_code == 403:
        assert "requires the promote right" in response.json()["message"]
    return response.status_code


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("who", list(EXPECTED))
def test_permission_matrix(world, who, operation):
    assert attempt(world, who, operation) == EXPECTED[who][operation]


def test_open_create_setting_is_off_and_a_create_right_opens_it(platform, world):
    username, password = new_user(platform, "creator")
    api = Api(platform.tracking_uri, username, password)
    assert (
        api.call(
            "POST", "/api/2.0/mlflow/experiments/create", {"name": f"c-{secrets.token_hex(4)}"}
        ).status_code
        == 403
    )
    world.admin.ok(
        "POST", "/api/2.0/mlflow-ext/rights/grant", {"username": username, "right": "create_experiment"}
    )
    created = api.ok("POST", "/api/2.0/mlflow/experiments/create", {"name": f"c-{secrets.token_hex(4)}"})
    # The creator manages what they created (MLflow's own after-request grant).
    api.ok("POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": created["experiment_id"]})
    # Registering a new version of an existing model needs no create right (the client's register_model).
    world.admin.ok(
        "POST",
        "/api/3.0/mlflow/users/permissions/grant",
        {
            "username": username,
            "resource_type": "registered_model",
            "resource_id": world.model,
            "permission": "EDIT",
        },
    )
    again = api.call("POST", "/api/2.0/mlflow/registered-models/create", {"name": world.model})
    assert again.status_code == 400 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
