"""``GET /api/2.0/mlflow-ext/auth/check``: what the proxy asks before it reads an upload's body.

204 for valid credentials of any user (password or token), 401 with ``WWW-Authenticate`` otherwise, 429
while locked out. A failed check counts toward the lockout exactly once, like a failed normal request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.test_auth_tokens import CURRENT, Api, new_token, new_user
from tests.support.services import Platform, running_platform

pytestmark = pytest.mark.integration

CHECK = "/api/2.0/mlflow-ext/auth/check"
USER_FAILURES = 4
SETTINGS = {
    "MLFLOW_EXT_AUTH_LOCKOUT_USER_FAILURES": str(USER_FAILURES),
    "MLFLOW_EXT_AUTH_LOCKOUT_ADDRESS_FAILURES": "50",
    "MLFLOW_EXT_AUTH_LOCKOUT_WINDOW_SECONDS": "60",
    "MLFLOW_EXT_AUTH_LOCKOUT_SECONDS": "60",
    "MLFLOW_EXT_AUTH_SLOWDOWN_AFTER": "10",
}


@pytest.fixture(scope="module")
def strict() -> Iterator[Platform]:
    with running_platform(extra_env=SETTINGS) as started:
        yield started


def test_valid_credentials_of_any_user_get_204(strict):
    username, password = new_user(strict, "checked")
    _, token = new_token(strict, username)
    for api in (Api(strict.tracking_uri, username, password), Api(strict.tracking_uri, token=token)):
        answer = api.call("GET", CHECK)
        assert (answer.status_code, answer.content) == (204, b"")


@pytest.mark.parametrize("credentials", ["none", "wrong password", "unknown token"])
def test_missing_or_wrong_credentials_get_401_with_a_challenge(strict, credentials):
    username, password = new_user(strict, "refused")
    api = {
        "none": Api(strict.tracking_uri),
        "wrong password": Api(strict.tracking_uri, username, "wrong-" + password),
        "unknown token": Api(strict.tracking_uri, token="mlxt_" + "A" * 43),
    }[credentials]
    answer = api.call("GET", CHECK)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


def test_a_failed_check_counts_once_toward_the_lockout(strict):
    """USER_FAILURES - 1 failed checks leave the user unlocked (a double count would lock earlier); the
    next failure, of any kind, locks."""
    username, password = new_user(strict, "counted")
    wrong = Api(strict.tracking_uri, username, "wrong-" + password, headers={"X-Forwarded-For": "192.0.2.9"})
    for _ in range(USER_FAILURES - 1):
        assert wrong.call("GET", CHECK).status_code == 401
    assert wrong.call("GET", CURRENT).status_code == 429  # the USER_FAILURES-th failure locks
    locked = Api(strict.tracking_uri, username, password).call("GET", CHECK)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
