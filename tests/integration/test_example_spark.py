"""The Spark example against the real platform: `train.py` fits a `pyspark.ml` pipeline in local mode and
logs it with the spark flavour as a logged model of its run (what the register stage looks for); the model
loads back through pyfunc, predicts the test file's labels with the accuracy the run recorded, and names
pyspark among its pinned requirements.

Bounded: one training run and one model load, each a local[1] Spark with a 512 MB driver and no web UI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.environ import patched_environ
from tests.support.services import Platform

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "spark-classifier"
SPARK_ENV = {
    "SPARK_LOCAL_IP": "127.0.0.1",
    "PYSPARK_SUBMIT_ARGS": (
        "--master local[1] --driver-memory 512m --conf spark.ui.enabled=false pyspark-shell"
    ),
}

pytest.importorskip("pyspark", reason="pyspark is in requirements/dev.txt")


@pytest.fixture(scope="module")
def trained(platform: Platform) -> dict:
    env = {
        **os.environ,
        **platform.client_env(),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_EXPERIMENT_NAME": f"spark-{uuid.uuid4().hex[:8]}",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    for key in [key for key in env if key.startswith("GO_")]:
        del env[key]
    result = subprocess.run(
        [sys.executable, "train.py"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_run_logged_a_spark_model_with_its_data_and_metrics(platform, trained):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=platform.tracking_uri)
    with patched_environ(platform.client_env()):
        run = client.get_run(trained["run_id"])
        outputs = [output.model_id for output in run.outputs.model_outputs]
        logged = client.get_logged_model(trained["model_id"])
    assert outputs == [trained["model_id"]] and logged.name == "model"
    assert set(trained["metrics"]) == {"test_accuracy", "test_precision", "test_recall", "test_f1"}
    assert run.data.metrics["test_accuracy"] == pytest.approx(trained["metrics"]["test_accuracy"])
    assert run.data.params["reg_param"] == "0.01" and run.data.params["spark_version"] == "4.3.0"
    assert run.data.tags["lineage.data.test.csv.role"] == "test"
    assert run.data.tags["lineage.data.train.csv.role"] == "training"


def test_the_logged_model_predicts_through_pyfunc(platform, trained):
    import mlflow
    import numpy as np
    import pandas as pd

    test = pd.read_csv(EXAMPLE / "data" / "test.csv")
    uri = f"models:/{trained['model_id']}"
    with patched_environ({**platform.client_env(), **SPARK_ENV}):
        model = mlflow.pyfunc.load_model(uri)
        try:
            predicted = model.predict(test.drop(columns=["churn"]))
        finally:  # the session pyfunc started in this process: stop its JVM
            from pyspark.sql import SparkSession

            active = SparkSession.getActiveSession()
            if active is not None:
                active.stop()
        requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    assert "spark" in model.metadata.flavors
    assert list(model.metadata.signature.inputs.input_names()) == [
        "tenure_months",
        "monthly_charge",
        "support_calls",
        "contract",
    ]
    assert len(predicted) == len(test) and set(predicted) <= {"leaves", "stays"}
    accuracy = float((np.asarray(predicted) == test["churn"].to_numpy()).mean())
    assert accuracy == pytest.approx(trained["metrics"]["test_accuracy"])
    assert accuracy > 0.75  # the majority class alone scores 0.71
    assert "pyspark==4.3.0" in requirements
