"""The gocd service account: a token in a root-only file, accepted through the proxy, with the create right
the generated pipelines need (mlflow_server_gocd_rights) and no admin rights."""

from __future__ import annotations

import json
import re
import secrets

import pytest

from tests.infra.conftest import (
    GOCD_TOKEN_FILE,
    MLFLOW_CLI,
    MLFLOW_ENV_FILE,
    platform_call,
)

pytestmark = pytest.mark.usefixtures("converged")

TOKEN_PATTERN = re.compile(r"^mlxt_[A-Za-z0-9_-]{43}$")


@pytest.fixture(scope="module")
def gocd_token(host) -> str:
    return host.file(GOCD_TOKEN_FILE).content_string.strip()


def test_token_file_is_root_only(host, gocd_token):
    f = host.file(GOCD_TOKEN_FILE)
    assert (f.mode, f.user, f.group) == (0o600, "root", "root")
    assert TOKEN_PATTERN.match(gocd_token), "the file does not hold an mlxt_ token"


def test_token_authenticates_as_gocd(gocd_token):
    status, answer = platform_call("GET", "/api/2.0/mlflow/users/current", f"Bearer {gocd_token}")
    assert status == 200
    assert answer["user"]["username"] == "gocd"
    assert answer["user"]["is_admin"] is False


def test_token_may_search(gocd_token):
    """Searching is allowed; NO_PERMISSIONS filters the results to what the account was granted."""
    status, answer = platform_call(
        "GET", "/api/2.0/mlflow/experiments/search?max_results=1", f"Bearer {gocd_token}"
    )
    assert status == 200
    assert isinstance(answer.get("experiments", []), list)


def test_token_may_create_experiments_and_nothing_admin(gocd_token):
    """The role grants gocd create_experiment (its pipelines' train stage creates the experiment); listing
    users stays admin-only (docs/auth.md)."""
    name = f"infra-gocd-{secrets.token_hex(4)}"
    status, answer = platform_call(
        "POST", "/api/2.0/mlflow/experiments/create", f"Bearer {gocd_token}", {"name": name}
    )
    assert status == 200, answer
    status, _ = platform_call("POST", "/api/2.0/mlflow/experiments/delete", f"Bearer {gocd_token}", answer)
    assert status == 200
    status, _ = platform_call("GET", "/api/2.0/mlflow/users/list", f"Bearer {gocd_token}")
    assert status == 403


def test_unknown_token_is_refused():
    unknown = "mlxt_" + secrets.token_urlsafe(32)
    status, _ = platform_call("GET", "/api/2.0/mlflow/experiments/search?max_results=1", f"Bearer {unknown}")
    assert status == 401


def test_provisioning_is_idempotent(host):
    """The role's command, as a dry run: the converged account and token need nothing."""
    result = host.run(
        f"{MLFLOW_CLI} tokens ensure-service-account --env-file {MLFLOW_ENV_FILE} --username gocd "
        f"--token-name gocd-agents --token-file {GOCD_TOKEN_FILE} --output json --dry-run"
    )
    assert result.rc == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["changed"] is False, report
    assert report["token_created"] is False and report["token_revoked"] is None
