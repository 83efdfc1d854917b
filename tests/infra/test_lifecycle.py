"""The model lifecycle through https://localhost, as the admin; anonymous calls are refused."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request

import pytest

from tests.infra.conftest import BUCKET, TLS_CERT, TRACKING_URI
from tests.integration.lifecycle import UNAUTHENTICATED_CALLS, run_lifecycle, status_without_credentials

pytestmark = pytest.mark.usefixtures("converged")


def test_model_lifecycle_through_the_proxy(admin_env, s3_client):
    summary = run_lifecycle(admin_env, s3_client, BUCKET)
    assert summary["version"]


@pytest.mark.parametrize(("path", "body"), UNAUTHENTICATED_CALLS)
def test_calls_without_credentials_are_refused(path, body):
    assert status_without_credentials(TRACKING_URI, path, body, cafile=TLS_CERT) == 401


def test_wrong_password_is_refused():
    import ssl

    request = urllib.request.Request(TRACKING_URI + "/api/2.0/mlflow/experiments/search?max_results=1")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"admin:not-the-password").decode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=TLS_CERT))
    assert refused.value.code == 401
