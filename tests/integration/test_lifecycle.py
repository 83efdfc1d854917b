"""The model lifecycle against a real server started by `mlflow-ext server run`."""

from __future__ import annotations

import pytest

from tests.integration.lifecycle import UNAUTHENTICATED_CALLS, run_lifecycle, status_without_credentials

pytestmark = pytest.mark.integration


def test_model_lifecycle_end_to_end(platform):
    run_lifecycle(platform.client_env(), platform.s3.client(), platform.bucket)


@pytest.mark.parametrize(("path", "body"), UNAUTHENTICATED_CALLS)
def test_calls_without_credentials_are_refused(platform, path, body):
    assert status_without_credentials(platform.tracking_uri, path, body) == 401


def test_wrong_password_is_refused(platform):
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        platform.tracking_uri + "/api/2.0/mlflow/experiments/search?max_results=1"
    )
    token = base64.b64encode(b"admin:not-the-password").decode()
    request.add_header("Authorization", f"Basic {token}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


def test_health_needs_no_credentials(platform):
    assert status_without_credentials(platform.tracking_uri, "/health") == 200
