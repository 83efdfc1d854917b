"""The model lifecycle a user relies on, run against any deployment of the platform.

Used by the integration tests (server on loopback) and the infra tests (through the TLS proxy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from mlflow import MlflowClient

from tests.support.environ import patched_environ

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def _client_environment(env: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    return {**base, "MLFLOW_DISABLE_TELEMETRY": "true", **env}


def run_lifecycle(env: dict[str, str], s3_client, bucket: str) -> dict:
    """Run examples/quickstart.py as a user would, then check each thing it claims to have done.

    ``env`` holds MLFLOW_TRACKING_URI and the credentials (and the CA path for TLS).
    """
    model_name = f"lifecycle-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="quickstart-tmp-") as scratch:
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), "--experiment", model_name, "--model-name", model_name],
            env={**_client_environment(env), "TMPDIR": scratch},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        left = sorted(path.name for path in Path(scratch).iterdir())
    assert result.returncode == 0, result.stderr[-3000:]
    assert left == [], f"the quickstart left {left} in the temporary directory"  # a model copy, each run
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["prediction"] == [8.0, 12.0]

    with patched_environ(env):
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        run = client.get_run(summary["run_id"])
        assert run.data.params == {"weight": "2.0", "features": "a,b"}
        assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.9, 0.5, 0.3]
        assert [a.path for a in client.list_artifacts(run.info.run_id, "reports")] == ["reports/report.txt"]
        version = client.get_model_version_by_alias(model_name, "champion")
        assert version.version == summary["version"]
        assert version.tags["validated"] == "true"
        assert client.get_registered_model(model_name).tags["team"] == "quickstart"

    # Artifacts went through the server into the bucket: the run's file and the model's MLmodel.
    keys = [
        obj["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{summary['experiment_id']}/"
        )
        for obj in page.get("Contents", [])
    ]
    assert f"{summary['experiment_id']}/{summary['run_id']}/artifacts/reports/report.txt" in keys
    assert any(k.endswith(f"/models/{summary['model_id']}/artifacts/MLmodel") for k in keys), keys
    return summary


def status_without_credentials(
    tracking_uri: str, path: str, body: dict | None = None, cafile: str | None = None
) -> int:
    """HTTP status of one REST call sent with no credentials at all."""
    import ssl

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        tracking_uri.rstrip("/") + path, data=data, headers={"Content-Type": "application/json"}
    )
    context = ssl.create_default_context(cafile=cafile) if tracking_uri.startswith("https") else None
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


UNAUTHENTICATED_CALLS = [
    ("/api/2.0/mlflow/experiments/search?max_results=1", None),
    ("/api/2.0/mlflow/experiments/create", {"name": "anonymous"}),
    ("/api/2.0/mlflow/registered-models/search", None),
    ("/api/2.0/mlflow-artifacts/artifacts?path=", None),
]
