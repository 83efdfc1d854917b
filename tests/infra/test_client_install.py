"""The light client on a GoCD agent, against the provisioned platform: a fresh venv installs the client wheel
(mlflow-skinny, no server package), and a training script run there with the gocd account's token, through
https://localhost and trusting the proxy's certificate, gets its run and lineage tags recorded."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.infra.conftest import GOCD_TOKEN_FILE, TLS_CERT, TRACKING_URI, platform_call
from tests.support.client_venv import TRAIN, client_venv
from tests.support.gitrepo import committed_repo

pytestmark = pytest.mark.usefixtures("converged")


def test_a_training_script_on_the_client_records_its_lineage_through_the_proxy(tmp_path, secrets):
    client_bin = client_venv(tmp_path / "client")
    repo = committed_repo(
        tmp_path / "model", {"train.py": TRAIN}, "https://git.example.com/ml/model.git", "train"
    )
    data = tmp_path / "train.csv"
    data.write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(50)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))}
    env |= {
        "MLFLOW_TRACKING_URI": TRACKING_URI,
        "MLFLOW_TRACKING_TOKEN": Path(GOCD_TOKEN_FILE).read_text(encoding="utf-8").strip(),
        "MLFLOW_TRACKING_SERVER_CERT_PATH": TLS_CERT,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    experiment = f"agent-{uuid.uuid4().hex[:8]}"
    trained = subprocess.run(
        [str(client_bin / "python"), str(repo / "train.py"), str(data), experiment],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout.split("RESULT=", 1)[1])
    assert result["server"] == [] and result["store"] == "FastRestStore"

    admin = "Basic " + base64.b64encode(f"admin:{secrets['mlflow_admin_password']}".encode()).decode()
    status, answer = platform_call("GET", f"/api/2.0/mlflow/runs/get?run_id={result['run_id']}", admin)
    assert status == 200
    run = answer["run"]
    tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert tags["lineage.code.commit"] == head.stdout.strip()
    assert tags["lineage.data.train.role"] == "training" and tags["lineage.data.train.rows"] == "50"
    assert tags["lineage.data.test.fingerprint"].startswith("sha256:")
    assert {p["key"]: p["value"] for p in run["data"]["params"]} == {"C": "0.5"}
