"""Bad input to the auth layer and its REST API: a clear 4xx, never a 500."""

from __future__ import annotations

import base64
import statistics
import time

import pytest

from tests.integration.test_auth_tokens import CURRENT, Api, admin, new_user

pytestmark = pytest.mark.integration


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic !!!not-base64!!!",
        basic(b"no-colon-here"),
        basic(b":password-without-user"),
        basic(b"\xff\xfe:\xff"),
        basic(b"user:" + b"p" * 2000),
        basic(b"u" * 300 + b":password"),
        "Bearer",
        "Bearer not-a-token",
        "Bearer mlxt_" + "A" * 43,  # well-formed, unknown
        "Bearer mlxt_" + "A" * 43 + " extra",
        "Digest username=x",
        "Garbage c29tZXRoaW5n",
        "Basic " + "A" * 5000,
        basic(b"no-such-user-anywhere:some-password"),
    ],
    ids=lambda header: header[:40],
)
def test_malformed_and_unknown_credentials_get_a_401_challenge(platform, header):
    response = Api(platform.tracking_uri, headers={"Authorization": header}).call("GET", CURRENT)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "expected"),
    [
        ("POST", "/api/2.0/mlflow-ext/tokens/create", {}, 400),
        ("POST", "/api/2.0/mlflow-ext/tokens/create", {"name": "x" * 300}, 400),
        ("POST", "/api/2.0/mlflow-ext/tokens/create", {"name": "t", "expires_in_seconds": "soon"}, 400),
        ("POST", "/api/2.0/mlflow-ext/tokens/create", {"name": "t", "expires_in_seconds": 0}, 400),
        ("POST", "/api/2.0/mlflow-ext/tokens/create", {"name": "t", "username": "no-such-user"}, 404),
        ("POST", "/api/2.0/mlflow-ext/tokens/revoke", {"id": "x"}, 400),
        ("POST", "/api/2.0/mlflow-ext/tokens/revoke", {"id": 999999}, 404),
        ("POST", "/api/2.0/mlflow-ext/rights/grant", {"username": "admin", "right": "root"}, 400),
        ("POST", "/api/2.0/mlflow-ext/rights/grant", {"username": "no-such-user", "right": "promote"}, 404),
        (
            "POST",
            "/api/2.0/mlflow-ext/rights/grant",
            {"username": "admin", "right": "create_experiment", "resource": "m"},
            400,
        ),
        ("POST", "/api/2.0/mlflow-ext/lockouts/clear", {}, 400),
        ("POST", "/api/2.0/mlflow-ext/service-accounts/create", {"username": "admin"}, 400),
    ],
)
def test_bad_requests_to_the_auth_api(platform, method, path, payload, expected):
    response = admin(platform).call(method, path, payload)
    assert response.status_code == expected, response.text
    assert response.json()["message"]


def test_non_json_body_is_a_clear_400(platform):
    import requests

    response = requests.post(
        platform.tracking_uri + "/api/2.0/mlflow-ext/tokens/create",
        data="name=x",
        auth=(platform.admin_username, platform.admin_password),
        timeout=30,
    )
    assert response.status_code == 400


def test_unknown_user_and_wrong_password_look_the_same(platform):
    username, password = new_user(platform, "same")
    unknown = Api(platform.tracking_uri, "no-such-" + username, password).call("GET", CURRENT)
    wrong = Api(platform.tracking_uri, username, "not-" + password).call("GET", CURRENT)
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


def test_unknown_users_answer_as_late_as_wrong_passwords(platform):
    """Timing tells nothing: medians of interleaved attempts, each from its own address and on its own
    user, so no slow-down or lockout applies."""
    rounds = 20
    users = [new_user(platform, "timed") for _ in range(rounds)]
    unknown: list[float] = []
    wrong: list[float] = []
    for i, (username, password) in enumerate(users):
        for kind, api in (
            (unknown, Api(platform.tracking_uri, f"nobody-{username}", password)),
            (wrong, Api(platform.tracking_uri, username, "not-" + password)),
        ):
            start = time.perf_counter()
            status = api.call("GET", CURRENT).status_code
            kind.append(time.perf_counter() - start)
            assert status == 401, (i, status)
    unknown_median, wrong_median = statistics.median(unknown), statistics.median(wrong)
    print(f"server medians: unknown user {unknown_median:.4f} s, wrong password {wrong_median:.4f} s")
    assert 0.7 <= unknown_median / wrong_median <= 1.4, (unknown, wrong)
