"""evaluate: metrics computed without scikit-learn agree with scikit-learn; baselines; the report."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk

from mlflow_ext.errors import StageFailed
from mlflow_ext.stages import evaluate


def test_classification_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    labels = np.array(["setosa", "versicolor", "virginica", "other"])
    truth = labels[rng.integers(0, 3, 200)]
    predicted = labels[rng.integers(0, 4, 200)]  # predicts a class the data lacks, too
    score = evaluate.classification_metrics(truth, predicted, "1")
    present = sorted(set(truth))
    assert score.metrics["accuracy"] == pytest.approx(sk.accuracy_score(truth, predicted))
    for name, function in (
        ("precision_macro", sk.precision_score),
        ("recall_macro", sk.recall_score),
        ("f1_macro", sk.f1_score),
    ):
        expected = function(truth, predicted, average="macro", labels=present, zero_division=0)
        assert score.metrics[name] == pytest.approx(expected), name
    assert score.labels == sorted(set(truth) | set(predicted))
    assert score.matrix == sk.confusion_matrix(truth, predicted, labels=score.labels).tolist()


def test_numeric_labels_and_string_predictions_are_compared_as_text():
    score = evaluate.classification_metrics(np.array([0, 1, 1]), np.array(["0", "1", "0"]), "1")
    assert score.metrics["accuracy"] == pytest.approx(2 / 3)


def test_regression_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=100)
    predicted = truth + rng.normal(scale=0.3, size=100)
    score = evaluate.regression_metrics(truth, predicted, "1")
    assert score.metrics["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(truth, predicted)))
    assert score.metrics["mae"] == pytest.approx(sk.mean_absolute_error(truth, predicted))
    assert score.metrics["r2"] == pytest.approx(sk.r2_score(truth, predicted))


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b"], "classification"),
        ([True, False], "classification"),
        ([0, 1, 2, 1], "classification"),
        ([0.5, 1.25, 3.0], "regression"),
        (list(range(50)), "regression"),
        ([1.0, 2.0, 1.0], "classification"),
    ],
)
def test_task_from_the_target(values, task):
    assert evaluate.task_of(pd.Series(values)) == task


class Model:
    def __init__(self, output, columns=None):
        self.output = output
        inputs = None
        if columns:
            from mlflow.types import ColSpec, Schema

            inputs = Schema([ColSpec("double", name) for name in columns])
        self.metadata = SimpleNamespace(signature=SimpleNamespace(inputs=inputs) if inputs else None)
        self.seen = None

    def predict(self, frame):
        self.seen = list(frame.columns)
        if isinstance(self.output, Exception):
            raise self.output
        return self.output


def test_predict_selects_signature_columns_and_flattens():
    features = pd.DataFrame({"b": [1.0, 2.0], "a": [3.0, 4.0], "extra": [0, 0]})
    model = Model(pd.DataFrame({"p": ["x", "y"]}), columns=["a", "b"])
    assert evaluate.predict(model, features, "v1").tolist() == ["x", "y"]
    assert model.seen == ["a", "b"]
    assert evaluate.predict(Model(np.array([[1], [2]])), features, "v1").tolist() == [1, 2]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Model([1]), "predictions of shape \\(1,\\) for 2 rows"),
        (Model(ValueError("bad input")), "prediction failed: ValueError: bad input"),
        (Model(pd.DataFrame({"a": [1, 2], "b": [1, 2]})), "predicted 2 columns"),
        (Model([1, 2], columns=["missing"]), "lacks input column\\(s\\) missing"),
    ],
)
def test_predict_failures_name_the_problem(model, message):
    with pytest.raises(StageFailed, match=message):
        evaluate.predict(model, pd.DataFrame({"a": [1.0, 2.0]}), "version 3 of iris")


def version(number="5", **tags):
    return SimpleNamespace(name="iris", version=number, tags=tags)


def test_baseline_is_the_promotion_source_for_the_same_alias():
    notes: list[str] = []
    tags = {"promotion.from_version": "4", "promotion.alias": "champion"}
    assert evaluate.baseline_version(version(**tags), "champion", None, notes) == "4"
    assert evaluate.baseline_version(version(**tags), None, None, notes) == "4"
    assert evaluate.baseline_version(version(**tags), "staging", None, notes) is None
    assert "not @staging" in notes[-1]
    assert evaluate.baseline_version(version(), "champion", None, notes) is None
    assert "records no promotion.from_version" in notes[-1]
    assert evaluate.baseline_version(version(**tags), "champion", "2", notes) == "2"
    assert evaluate.baseline_version(version(**tags), "champion", "none", notes) is None
    assert evaluate.baseline_version(version("4", **tags), "champion", None, notes) is None


def test_report_shows_both_versions_deltas_and_matrices():
    candidate = evaluate.classification_metrics(["a", "b", "b"], ["a", "b", "b"], "5")
    baseline = evaluate.classification_metrics(["a", "b", "b"], ["a", "a", "b"], "4")
    result = evaluate.Evaluation(
        "iris", "5", "classification", "label", "test.csv", 3, candidate, baseline, "4", ["a note"]
    )
    report = evaluate.render_report(result)
    assert "| metric | v5 | v4 | delta |" in report
    assert "| accuracy | 1.0000 | 0.6667 | +0.3333 |" in report
    assert "## Confusion matrix, version 4" in report and "| b | 1 | 1 |" in report
    assert "- a note" in report
    assert result.summary() == "accuracy=1 (v4: 0.6667)"
    assert result.to_dict()["deltas"]["accuracy"] == pytest.approx(1 / 3)
    assert evaluate._matrix_csv(baseline) == "true\\predicted,a,b\na,1,0\nb,1,1\n"


def test_table_loading_errors(tmp_path):
    with pytest.raises(StageFailed, match="no such file"):
        evaluate.load_table(str(tmp_path / "missing.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageFailed, match="no CSV or Parquet files"):
        evaluate.load_table(str(tmp_path / "empty"))
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    frame = evaluate.load_table(str(tmp_path / "t.csv"))
    with pytest.raises(StageFailed, match=r"no target column 'label' \(columns: a, b\)"):
        evaluate.split_target(frame, "label", "t.csv")


def test_the_evaluation_run_is_new_even_when_mlflow_run_id_names_the_training_run(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    training = mlflow.MlflowClient().create_run("0").info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", training)  # what the bridge passes to release pipelines
    with evaluate._new_run(experiment_id="0", run_name="evaluate") as run:
        assert run.info.run_id != training
    assert os.environ["MLFLOW_RUN_ID"] == training
