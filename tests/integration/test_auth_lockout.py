"""Brute-force protection on a real server: slow-down, lockout per user and per address, expiry.

A platform of its own with small thresholds and a short lockout, so the test can watch it expire.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.integration.test_auth_tokens import CURRENT, Api, admin, new_token, new_user
from tests.support.services import VENV_BIN, Platform, running_platform

pytestmark = pytest.mark.integration

# Long enough that a lock outlasts the checks made while it holds (an operator's CLI run among them, which
# took over 4 s on a loaded machine), short enough to wait out once.
LOCKOUT_SECONDS = 15
SETTINGS = {
    "MLFLOW_EXT_AUTH_LOCKOUT_USER_FAILURES": "4",
    "MLFLOW_EXT_AUTH_LOCKOUT_ADDRESS_FAILURES": "6",
    "MLFLOW_EXT_AUTH_LOCKOUT_WINDOW_SECONDS": "60",
    "MLFLOW_EXT_AUTH_LOCKOUT_SECONDS": str(LOCKOUT_SECONDS),
    "MLFLOW_EXT_AUTH_SLOWDOWN_AFTER": "2",
}


@pytest.fixture(scope="module")
def strict() -> Iterator[Platform]:
    with running_platform(extra_env=SETTINGS) as started:
        yield started


def from_address(platform: Platform, address: str, username: str, password: str) -> Api:
    return Api(platform.tracking_uri, username, password, headers={"X-Forwarded-For": address})


def test_user_lockout_slows_then_locks_then_expires(strict):
    username, password = new_user(strict, "victim")
    wrong = Api(strict.tracking_uri, username, "wrong-" + password)  # one address per call
    timings = []
    for _ in range(3):
        start = time.monotonic()
        assert wrong.call("GET", CURRENT).status_code == 401
        timings.append(time.monotonic() - start)
    assert timings[2] >= 0.25  # the third failure (after SLOWDOWN_AFTER=2) is answered late
    locked = wrong.call("GET", CURRENT)  # the fourth failure locks the user
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
    # Locked means locked: the right password is refused too, from any address and on every worker.
    for _ in range(4):
        right = Api(strict.tracking_uri, username, password).call("GET", CURRENT)
        assert right.status_code == 429
    assert "Too many failed logins" in right.json()["message"]
    locks = admin(strict).ok("GET", "/api/2.0/mlflow-ext/lockouts/list")["lockouts"]
    assert f"user:{username}" in {lock["key"] for lock in locks}
    time.sleep(LOCKOUT_SECONDS + 0.5)
    assert Api(strict.tracking_uri, username, password).call("GET", CURRENT).status_code == 200


def test_address_lockout_spares_other_addresses(strict):
    address = f"192.0.2.{secrets.randbelow(200) + 1}"
    for _ in range(6):  # six different unknown users, one address
        status = from_address(strict, address, f"nobody-{secrets.token_hex(3)}", "guess-guess-1").call(
            "GET", CURRENT
        )
    assert status.status_code == 429
    username, password = new_user(strict, "neighbour")
    _, token = new_token(strict, username)
    assert from_address(strict, address, username, password).call("GET", CURRENT).status_code == 429
    by_token = Api(strict.tracking_uri, token=token, headers={"X-Forwarded-For": address})
    assert by_token.call("GET", CURRENT).status_code == 429  # tokens from a locked address too
    assert Api(strict.tracking_uri, username, password).call("GET", CURRENT).status_code == 200
    # An admin lifts it early.
    admin(strict).ok("POST", "/api/2.0/mlflow-ext/lockouts/clear", {"address": address})
    assert from_address(strict, address, username, password).call("GET", CURRENT).status_code == 200


def test_spoofed_forwarding_headers_do_not_dodge_the_lockout(strict):
    """Only loopback (the proxy) is trusted, and only its right-most hop counts."""
    username, password = new_user(strict, "spoof")
    real = f"198.51.100.{secrets.randbelow(200) + 1}"
    for _ in range(6):
        forged = f"203.0.113.{secrets.randbelow(200) + 1}, {real}"
        Api(
            strict.tracking_uri,
            f"nobody-{secrets.token_hex(3)}",
            "x" * 12,
            headers={"X-Forwarded-For": forged},
        ).call("GET", CURRENT)
    assert from_address(strict, real, username, password).call("GET", CURRENT).status_code == 429


def test_lockout_events_are_audited(strict):
    events = [line for line in strict.server.log().splitlines() if '"event": "auth.lockout"' in line]
    assert events
    raw = base64.b64encode(b"x").decode()
    assert raw not in "".join(events)


def test_revoked_and_unknown_tokens_never_lock_out_the_address(strict):
    """A CI job retrying a revoked token: 401 each time, audited; its neighbours (admin too) keep access."""
    address = f"203.0.113.{secrets.randbelow(200) + 1}"
    username, _ = new_user(strict, "ci")
    token_id, token = new_token(strict, username)
    admin(strict).ok("POST", "/api/2.0/mlflow-ext/tokens/revoke", {"id": token_id})
    unknown = "mlxt_" + secrets.token_urlsafe(32)[:43]
    for _ in range(8):  # more than MLFLOW_EXT_AUTH_LOCKOUT_ADDRESS_FAILURES (6) of each
        for secret in (token, unknown):
            answer = Api(strict.tracking_uri, token=secret, headers={"X-Forwarded-For": address}).call(
                "GET", CURRENT
            )
            assert answer.status_code == 401, answer.text
            assert answer.headers["WWW-Authenticate"]
    me = from_address(strict, address, strict.admin_username, strict.admin_password).call("GET", CURRENT)
    assert me.status_code == 200, me.text
    failures = [
        line
        for line in strict.server.log().splitlines()
        if '"event": "auth.failure"' in line and f'"address": "{address}"' in line
    ]
    assert len(failures) == 16 and token not in "".join(failures)
    assert sum('"reason": "revoked token"' in line for line in failures) == 8


def offline_unlock(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    """`mlflow-ext users unlock` as an operator runs it on the server host: no server login at all."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [
            str(VENV_BIN / "mlflow-ext"),
            "users",
            "unlock",
            *args,
            "--env-file",
            str(platform.server.env_file),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env={**environment, "MLFLOW_DISABLE_TELEMETRY": "true"},
        timeout=120,
    )


def lock_address(platform: Platform, address: str) -> None:
    for _ in range(6):
        answer = from_address(platform, address, f"nobody-{secrets.token_hex(3)}", "guess-guess-1").call(
            "GET", CURRENT
        )
    assert answer.status_code == 429


def test_an_operator_locked_out_of_the_api_unlocks_offline(strict):
    address = f"198.18.0.{secrets.randbelow(200) + 1}"
    lock_address(strict, address)
    as_admin = from_address(strict, address, strict.admin_username, strict.admin_password)
    assert as_admin.call("GET", CURRENT).status_code == 429  # the admin too, from that address

    dry = offline_unlock(strict, "--address", address, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["changed"] is True
    assert [(row["key"], row["locked"]) for row in report["cleared"]] == [(f"addr:{address}", True)]
    assert as_admin.call("GET", CURRENT).status_code == 429  # a dry run changes nothing

    done = offline_unlock(strict, "--address", address)
    assert done.returncode == 0, done.stderr
    assert [row["key"] for row in json.loads(done.stdout)["cleared"]] == [f"addr:{address}"]
    assert as_admin.call("GET", CURRENT).status_code == 200  # every worker saw it at once
    again = offline_unlock(strict, "--address", address)
    assert json.loads(again.stdout) == {"changed": False, "dry_run": False, "cleared": []}


def test_offline_unlock_of_a_user_and_of_everything(strict):
    username, password = new_user(strict, "locked")
    wrong = Api(strict.tracking_uri, username, "wrong-" + password)
    for _ in range(4):
        wrong.call("GET", CURRENT)
    assert Api(strict.tracking_uri, username, password).call("GET", CURRENT).status_code == 429
    done = offline_unlock(strict, username)
    assert done.returncode == 0, done.stderr
    assert f"user:{username}" in [row["key"] for row in json.loads(done.stdout)["cleared"]]
    assert Api(strict.tracking_uri, username, password).call("GET", CURRENT).status_code == 200

    address = f"198.18.1.{secrets.randbelow(200) + 1}"
    lock_address(strict, address)
    everything = offline_unlock(strict, "--all")
    assert everything.returncode == 0, everything.stderr
    assert f"addr:{address}" in [row["key"] for row in json.loads(everything.stdout)["cleared"]]
    assert admin(strict).ok("GET", "/api/2.0/mlflow-ext/lockouts/list")["lockouts"] == []
    assert offline_unlock(strict).returncode == 2  # nothing named: a usage error
