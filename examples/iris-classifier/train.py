"""Train the iris classifier and log it, with the data it used, to the MLflow platform.

    export MLFLOW_TRACKING_URI=https://mlflow.example.com
    export MLFLOW_TRACKING_USERNAME=alice MLFLOW_TRACKING_PASSWORD=...
    python train.py                      # from this folder; the build pipeline runs exactly this

The run records its parameters, test metrics, the model (flavour sklearn, served through pyfunc) and
both data files through ``mlflow_ext.data.log_data``: ``data/train.csv`` with role ``training`` and
``data/test.csv`` with role ``test``. The release pipeline's ``verify-data`` compares the test file
it checks out with the fingerprint and schema recorded here. Registering is the pipeline's
``register`` stage, not this script's job. Prints one JSON line: run id, model id, metrics.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlflow_ext.data import log_data

HERE = Path(__file__).resolve().parent
TARGET = "species"


def requirements() -> list[str]:
    """Pinned to what trained the model; naming them skips MLflow's slow import-inference step."""
    names = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "cloudpickle")
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME", "iris-classifier"))
    parser.add_argument("--train", type=Path, default=HERE / "data" / "train.csv")
    parser.add_argument("--test", type=Path, default=HERE / "data" / "test.csv")
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    parser.add_argument("--max-iter", type=int, default=500)
    args = parser.parse_args()

    train, test = pd.read_csv(args.train), pd.read_csv(args.test)
    features = [column for column in train.columns if column != TARGET]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=args.C, max_iter=args.max_iter))
    model.fit(train[features], train[TARGET])
    predicted = model.predict(test[features])
    metrics = {
        "test_accuracy": float(accuracy_score(test[TARGET], predicted)),
        "test_f1_macro": float(f1_score(test[TARGET], predicted, average="macro")),
    }

    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_params({"C": args.C, "max_iter": args.max_iter, "features": ",".join(features)})
        mlflow.log_metrics(metrics)
        log_data(args.train, name="train.csv", role="training")
        log_data(args.test, name="test.csv", role="test")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(train[features], model.predict(train[features])),
            input_example=train[features].head(3),
            pip_requirements=requirements(),
        )
    print(json.dumps({"run_id": run.info.run_id, "model_id": info.model_id, "metrics": metrics}))


if __name__ == "__main__":
    main()
