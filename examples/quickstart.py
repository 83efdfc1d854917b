"""Track, register and serve a model on the platform, end to end.

    export MLFLOW_TRACKING_URI=https://mlflow.example.com
    export MLFLOW_TRACKING_USERNAME=alice MLFLOW_TRACKING_PASSWORD=...
    export MLFLOW_TRACKING_SERVER_CERT_PATH=/etc/mlflow-platform/tls/ca.crt   # self-signed setups only
    python examples/quickstart.py --model-name quickstart-demo

Prints one JSON line describing what it created.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.pyfunc import PythonModel


class ScaledSum(PythonModel):
    """A tiny model: a weighted sum of the input columns."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return (model_input.sum(axis=1) * self.weight).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="quickstart")
    parser.add_argument("--model-name", default="quickstart-demo")
    parser.add_argument("--alias", default="champion")
    args = parser.parse_args()

    mlflow.set_experiment(args.experiment)
    weight = 2.0
    with mlflow.start_run() as run:
        mlflow.log_params({"weight": weight, "features": "a,b"})
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            mlflow.log_metric("loss", loss, step=step)
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.txt"
            report.write_text("weighted sum of a and b\n")
            mlflow.log_artifact(str(report), artifact_path="reports")
        example = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ScaledSum(weight),
            input_example=example,
            # Naming requirements skips inference, which would re-import the model in a subprocess.
            pip_requirements=[f"mlflow=={mlflow.__version__}", "pandas"],
            registered_model_name=args.model_name,
        )

    client = MlflowClient()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(args.model_name, args.alias, version)
    client.set_model_version_tag(args.model_name, version, "validated", "true")
    client.set_registered_model_tag(args.model_name, "team", "quickstart")

    # Given no destination, load_model would leave its copy of the model in a new temporary directory.
    with tempfile.TemporaryDirectory() as scratch:
        model = mlflow.pyfunc.load_model(f"models:/{args.model_name}@{args.alias}", dst_path=scratch)
        prediction = model.predict(example)
    print(
        json.dumps(
            {
                "experiment_id": run.info.experiment_id,
                "run_id": run.info.run_id,
                "model_id": info.model_id,
                "model_name": args.model_name,
                "version": version,
                "alias": args.alias,
                "prediction": list(prediction),
            }
        )
    )


if __name__ == "__main__":
    main()
