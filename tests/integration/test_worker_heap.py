"""A worker's app, built once, is left out of the garbage collector's later passes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.worker_app import WORKER_PRELUDE

pytestmark = pytest.mark.integration

HEAP = (
    WORKER_PRELUDE
    + r"""
import gc, json
from mlflow_ext.auth.app import create_app
served = create_app()
frozen = gc.get_freeze_count()
# What a full collection still walks: what was made since.
print(json.dumps({"frozen": frozen, "walked": len(gc.get_objects())}))
"""
)


def test_the_workers_app_is_frozen_out_of_collections(platform, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", HEAP, str(platform.server.env_file), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    heap = json.loads(result.stdout.splitlines()[-1])
    assert heap["frozen"] > 100_000, heap  # MLflow's server modules and the app
    assert heap["walked"] < heap["frozen"] / 10, heap
