"""An artifact store that is down answers a retryable 503, which MLflow's client retries.

The store (SeaweedFS here) restarts for an upgrade or runs out of room: the server cannot reach it or it
refuses the write for now. Uploads and downloads through the server's artifact proxy then get MLflow's
error JSON with ``TEMPORARILY_UNAVAILABLE``, never a 500 that reads as a bug and names no remedy.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.services import Platform, running_platform, stop_process

pytestmark = pytest.mark.integration

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture(scope="module")
def own_platform() -> Iterator[Platform]:
    with running_platform() as started:
        yield started


def test_uploads_and_downloads_get_a_retryable_503_while_the_store_is_down(own_platform):
    platform = own_platform
    session = requests.Session()
    session.auth = (platform.admin_username, platform.admin_password)
    stored = f"{platform.tracking_uri}{ARTIFACTS}/store-down/kept.bin"
    assert session.put(stored, data=b"k" * 1024, timeout=60).status_code == 200
    assert session.get(stored, timeout=60).content == b"k" * 1024

    assert platform.s3.process is not None
    stop_process(platform.s3.process)
    platform.s3.process = None

    for method, url, body in [
        ("PUT", f"{platform.tracking_uri}{ARTIFACTS}/store-down/new.bin", b"n" * 1024),
        ("GET", stored, None),
    ]:
        answer = session.request(method, url, data=body, timeout=120)
        assert answer.status_code == 503, (method, answer.status_code, answer.text[:300])
        assert "Retry-After" not in answer.headers, "a fixed wait would cut the client's backoff short"
        error = answer.json()
        assert error["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert "127.0.0.1" not in error["message"] and platform.bucket not in error["message"]
