"""The light client (client/pyproject.toml) in a fresh venv, and a training script to run there: what a
laptop or a GoCD agent installs (`make client`, then `pip install dist/mlflow_platform_client-*.whl[data]`).

Building the venv takes about a minute (pip, with PIP_FIND_LINKS and its cache).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Logs two data sets, a param and a metric; prints the run id, the store class and any server module loaded.
TRAIN = """\
import json, sys
import mlflow
import mlflow_ext

data = sys.argv[1]
mlflow.set_experiment(sys.argv[2] if len(sys.argv) > 2 else "client-install")
with mlflow.start_run(run_name="fit") as run:
    mlflow_ext.log_data(data, name="train", role="training")
    mlflow_ext.log_data(data, name="test", role="test")
    mlflow.log_params({"C": 0.5})
    mlflow.log_metric("accuracy", 0.93)
store = type(mlflow.MlflowClient()._tracking_client.store).__name__
print("RESULT=" + json.dumps({"run_id": run.info.run_id, "store": store, "server": sorted(
    m for m in sys.modules if m.split(".")[0] in ("flask", "sqlalchemy") or m.startswith("mlflow.server"))}))
"""


def client_venv(base: Path) -> Path:
    """Build the client wheel into ``base/dist``, install it in the fresh venv ``base/venv``; its bin dir."""
    built = subprocess.run(
        [sys.executable, str(ROOT / "client" / "build.py"), "--out", str(base / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    wheel = Path(built.stdout.strip().splitlines()[-1])
    assert wheel.name.startswith("mlflow_platform_client-") and wheel.suffix == ".whl"
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{wheel}[data]"],
        check=True, timeout=900, capture_output=True,
    )  # fmt: skip
    return venv / "bin"
