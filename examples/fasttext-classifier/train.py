"""Train the fastText ticket classifier and log it, with the data it used, to the MLflow platform.

    export MLFLOW_TRACKING_URI=https://mlflow.example.com
    export MLFLOW_TRACKING_USERNAME=alice MLFLOW_TRACKING_PASSWORD=...
    python train.py                      # from this folder; the build pipeline runs exactly this

The run records its parameters, test metrics, the model (a pyfunc: ``fasttext_model.FastTextClassifier``
around the trained ``model.bin``, with pinned requirements) and both data files through
``mlflow_ext.data.log_data`` (``data/train.csv`` role ``training``, ``data/test.csv`` role ``test``).
Registering is the pipeline's ``register`` stage. Prints one JSON line: run id, model id, metrics.
Training is single-threaded with a fixed seed, so the same data gives the same model.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
from pathlib import Path

import fasttext
import mlflow
import pandas as pd
from mlflow.models import infer_signature

from mlflow_ext.data import log_data

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fasttext_model import PREFIX, TEXT, FastTextClassifier, predict_labels  # noqa: E402

TARGET = "label"
# What the served model needs, pinned to what trained it. fasttext-wheel is the upstream fastText 0.9.2
# binding as a wheel; the wrapper makes it work with numpy 2 (see fasttext_model.py).
REQUIREMENTS = ("mlflow", "fasttext-wheel", "numpy", "pandas", "cloudpickle")


def requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def fasttext_file(frame: pd.DataFrame, path: Path) -> None:
    """fastText's training format: ``__label__<label> <text>``, one example per line."""
    pairs = zip(frame[TEXT], frame[TARGET], strict=True)
    lines = [f"{PREFIX}{label} {' '.join(text.split())}" for text, label in pairs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def accuracy(truth: list[str], predicted: list[str]) -> float:
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME", "fasttext-classifier")
    )
    parser.add_argument("--train", type=Path, default=HERE / "data" / "train.csv")
    parser.add_argument("--test", type=Path, default=HERE / "data" / "test.csv")
    parser.add_argument("--epoch", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--word-ngrams", type=int, default=2)
    parser.add_argument("--dim", type=int, default=20)
    args = parser.parse_args()

    train, test = pd.read_csv(args.train), pd.read_csv(args.test)
    params = {"epoch": args.epoch, "lr": args.lr, "wordNgrams": args.word_ngrams, "dim": args.dim}
    with tempfile.TemporaryDirectory() as scratch:
        corpus, binary = Path(scratch) / "train.txt", Path(scratch) / "model.bin"
        fasttext_file(train, corpus)
        model = fasttext.train_supervised(str(corpus), thread=1, seed=0, verbose=0, **params)
        model.save_model(str(binary))
        predicted = predict_labels(model, test[TEXT].tolist())
        metrics = {"test_accuracy": accuracy(test[TARGET].tolist(), predicted)}

        mlflow.set_experiment(args.experiment)
        with mlflow.start_run(run_name="train") as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            log_data(args.train, name="train.csv", role="training")
            log_data(args.test, name="test.csv", role="test")
            example = test[[TEXT]].head(3)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=FastTextClassifier(),
                artifacts={"fasttext": str(binary)},
                code_paths=[str(HERE / "fasttext_model.py")],
                signature=infer_signature(example, pd.Series(predict_labels(model, example[TEXT].tolist()))),
                input_example=example,
                pip_requirements=requirements(),
            )
    print(json.dumps({"run_id": run.info.run_id, "model_id": info.model_id, "metrics": metrics}))


if __name__ == "__main__":
    main()
