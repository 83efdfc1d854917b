"""The Spark example's committed data is what its generator makes (the test data's fingerprint is what
verify-data checks, so it must not change by accident), and its metrics are computed as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "spark-classifier"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"spark_example_{name}", EXAMPLE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_data_is_the_generators_output(tmp_path):
    _module("dataset").main(tmp_path)
    for name in ("train.csv", "test.csv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / "data" / name).read_bytes(), (
            f"examples/spark-classifier/data/{name} drifted: run `python dataset.py` there"
        )
    lines = (EXAMPLE / "data" / "test.csv").read_text().splitlines()
    assert lines[0] == "tenure_months,monthly_charge,support_calls,contract,churn" and len(lines) == 101
    labels = {line.rsplit(",", 1)[1] for line in lines[1:]}
    assert labels == {"leaves", "stays"}


def test_scores_of_the_positive_class():
    scores = _module("train").scores
    found = scores(["leaves", "stays", "leaves", "stays"], ["leaves", "leaves", "stays", "stays"])
    assert found == {
        "test_accuracy": 0.5,
        "test_precision": 0.5,
        "test_recall": 0.5,
        "test_f1": pytest.approx(0.5),
    }
    assert scores(["stays"], ["stays"])["test_f1"] == 0.0  # no positive at all: 0, not a division by zero


def test_the_model_needs_pyspark_and_the_serving_stack_pinned():
    pins = _module("train").requirements()
    assert [pin.split("==")[0] for pin in pins] == ["mlflow", "pyspark", "pandas", "numpy"]
    assert all("==" in pin for pin in pins)
