"""Train the Spark churn classifier and log it, with the data it used, to the MLflow platform.

    export MLFLOW_TRACKING_URI=https://mlflow.example.com
    export MLFLOW_TRACKING_USERNAME=alice MLFLOW_TRACKING_PASSWORD=...
    python train.py                      # from this folder; the build pipeline runs exactly this

A ``pyspark.ml`` Pipeline (contract indexed and one-hot encoded, assembled with the numeric columns,
scaled, logistic regression, predicted index turned back into the label) trained in Spark local mode:
one core, a small driver, no web UI, bound to the loopback interface. The run records its parameters,
test metrics, the model (``mlflow.spark``, served through pyfunc: a DataFrame of the four input columns
in, one label per row out) and both data files through ``mlflow_ext.data.log_data`` (``data/train.csv``
role ``training``, ``data/test.csv`` role ``test``). Registering is the pipeline's ``register`` stage.
Prints one JSON line: run id, model id, metrics. One partition and a fixed data order make the same data
give the same model.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

import mlflow
import mlflow.spark
import pandas as pd
from mlflow.models import Model, infer_signature

from mlflow_ext.data import log_data

HERE = Path(__file__).resolve().parent
TARGET = "churn"
NUMERIC = ("tenure_months", "monthly_charge", "support_calls")
CATEGORICAL = "contract"
FEATURES = (*NUMERIC, CATEGORICAL)
# What the served model needs, pinned to what trained it; the serving host also needs Java 17 (or 21).
REQUIREMENTS = ("mlflow", "pyspark", "pandas", "numpy")
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.memory": "512m",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "1",
    "spark.sql.session.timeZone": "UTC",
}


def requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def spark_session(master: str = "local[1]") -> Any:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName("spark-classifier")
    for key, value in SPARK_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def pipeline(labels: list[str], reg_param: float, max_iter: int) -> Any:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import (
        IndexToString,
        OneHotEncoder,
        StandardScaler,
        StringIndexer,
        VectorAssembler,
    )

    return Pipeline(
        stages=[
            # A contract never seen in training gets an index of its own instead of failing the request.
            StringIndexer(
                inputCol=CATEGORICAL,
                outputCol="contract_index",
                handleInvalid="keep",
                stringOrderType="alphabetAsc",
            ),
            OneHotEncoder(inputCol="contract_index", outputCol="contract_vector"),
            VectorAssembler(inputCols=[*NUMERIC, "contract_vector"], outputCol="raw_features"),
            StandardScaler(inputCol="raw_features", outputCol="features", withMean=True),
            LogisticRegression(
                labelCol="label_index",
                predictionCol="prediction_index",
                regParam=reg_param,
                maxIter=max_iter,
            ),
            # pyfunc serves the column named "prediction": the label itself, not its index.
            IndexToString(inputCol="prediction_index", outputCol="prediction", labels=labels),
        ]
    )


def scores(truth: list[str], predicted: list[str], positive: str = "leaves") -> dict[str, float]:
    pairs = list(zip(truth, predicted, strict=True))
    hits = sum(t == p for t, p in pairs)
    true_positive = sum(t == p == positive for t, p in pairs)
    precision = true_positive / max(sum(p == positive for _, p in pairs), 1)
    recall = true_positive / max(sum(t == positive for t, _ in pairs), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "test_accuracy": hits / len(pairs),
        "test_precision": precision,
        "test_recall": recall,
        "test_f1": f1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME", "spark-classifier"))
    parser.add_argument("--train", type=Path, default=HERE / "data" / "train.csv")
    parser.add_argument("--test", type=Path, default=HERE / "data" / "test.csv")
    parser.add_argument("--reg-param", type=float, default=0.01)
    parser.add_argument("--max-iter", type=int, default=100)
    args = parser.parse_args()

    train, test = pd.read_csv(args.train), pd.read_csv(args.test)
    spark = spark_session()
    try:
        # Labels in a fixed order (alphabetical), so the label index does not depend on class counts.
        labels = sorted(train[TARGET].unique().tolist())
        indexed = train.assign(
            label_index=train[TARGET].map({label: float(i) for i, label in enumerate(labels)})
        )
        model = pipeline(labels, args.reg_param, args.max_iter).fit(
            spark.createDataFrame(indexed[[*FEATURES, "label_index"]]).coalesce(1)
        )
        rows = model.transform(spark.createDataFrame(test[list(FEATURES)])).select("prediction").collect()
        predicted = [row.prediction for row in rows]
        metrics = scores(test[TARGET].tolist(), predicted)

        mlflow.set_experiment(args.experiment)
        with mlflow.start_run(run_name="train") as run:
            mlflow.log_params(
                {
                    "reg_param": args.reg_param,
                    "max_iter": args.max_iter,
                    "features": ",".join(FEATURES),
                    "spark_version": spark.version,
                }
            )
            mlflow.log_metrics(metrics)
            log_data(args.train, name="train.csv", role="training")
            log_data(args.test, name="test.csv", role="test")
            example = test[list(FEATURES)].head(3)
            # The spark flavour through Model.log, which records a logged model as an output of the run
            # (what the register stage looks for); mlflow.spark.log_model of MLflow 3.17 stores a run
            # artifact only, without a logged model.
            info = Model.log(
                artifact_path=None,
                name="model",
                flavor=mlflow.spark,
                spark_model=model,
                signature=infer_signature(example, pd.Series(predicted[:3], name="prediction")),
                input_example=example,
                pip_requirements=requirements(),
            )
    finally:
        spark.stop()
    print(json.dumps({"run_id": run.info.run_id, "model_id": info.model_id, "metrics": metrics}))


if __name__ == "__main__":
    main()
