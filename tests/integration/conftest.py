"""One real platform (Postgres, SeaweedFS, mlflow server through the entrypoint) per test session."""

from __future__ import annotations

import pytest

from tests.support.services import Platform, running_platform


@pytest.fixture(scope="session")
def platform() -> Platform:
    with running_platform() as started:
        yield started
