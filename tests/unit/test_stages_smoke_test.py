"""smoke-test: every way a deployment can answer wrongly is named."""

from __future__ import annotations

import pytest

from mlflow_ext.errors import StageFailed
from mlflow_ext.stages import smoke_test as smoke
from mlflow_ext.stages.deploy import Deployment, DeployTarget


class Canned(DeployTarget):
    name = "canned"

    def __init__(self, deployment, answer):
        super().__init__()
        self.deployment, self.answer, self.payloads = deployment, answer, []

    def deploy(self, request, *, force=False):
        raise NotImplementedError

    def get(self, name):
        return self.deployment if self.deployment and self.deployment.name == name else None

    def stop(self, name):
        raise NotImplementedError

    def predict(self, deployment, payload, timeout=30):
        self.payloads.append(payload)
        return self.answer(payload) if callable(self.answer) else self.answer


@pytest.fixture
def data(tmp_path, monkeypatch):
    path = tmp_path / "test.csv"
    path.write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n")
    monkeypatch.setattr(smoke, "_input_columns", lambda uri: ["b", "a"])
    return str(path)


def running(version="3", status="running"):
    return Deployment("iris-champion", "canned", "iris", version, status, "http://127.0.0.1:1")


def echo(payload):
    return {"predictions": ["x"] * len(payload["dataframe_split"]["data"])}


def test_a_good_answer_passes_and_sends_the_signature_columns(data):
    target = Canned(running(), echo)
    result = smoke.smoke_test(target, "iris-champion", data, rows=2, expected_version="3", compare=False)
    assert result.rows == 2 and result.predictions == ["x", "x"]
    assert target.payloads[0] == {"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1], [4, 3]]}}


def test_without_signature_the_target_column_is_left_out(data, monkeypatch):
    monkeypatch.setattr(smoke, "_input_columns", lambda uri: None)
    target = Canned(running(), echo)
    smoke.smoke_test(target, "iris-champion", data, target_column="label", compare=False)
    assert target.payloads[0]["dataframe_split"]["columns"] == ["a", "b"]


@pytest.mark.parametrize(
    ("deployment", "answer", "kwargs", "message"),
    [
        (None, echo, {}, "no deployment named iris-champion on target canned"),
        (running(status="stopped"), echo, {}, "is stopped, not running"),
        (running("2"), echo, {"expected_version": "3"}, "serves version 2 of iris, expected version 3"),
        (running(), {"predictions": ["x"]}, {}, "returned 1 predictions for 3 rows"),
        (running(), {"predictions": ["x", None, "y"]}, {}, "empty predictions for rows \\[1\\]"),
        (running(), {"error_code": "BAD_REQUEST"}, {}, "without a list of predictions"),
    ],
)
def test_failures_name_what_was_wrong(data, deployment, answer, kwargs, message):
    with pytest.raises(StageFailed, match=message):
        smoke.smoke_test(Canned(deployment, answer), "iris-champion", data, compare=False, **kwargs)


def test_missing_input_columns(data, monkeypatch):
    monkeypatch.setattr(smoke, "_input_columns", lambda uri: ["a", "c"])
    with pytest.raises(StageFailed, match=r"lacks the model's input column\(s\) c"):
        smoke.smoke_test(Canned(running(), echo), "iris-champion", data, compare=False)


def test_compare_with_the_registered_model(data, monkeypatch):
    class Model:
        def predict(self, frame):
            return ["x", "y", "x"]

    import importlib

    pyfunc = importlib.import_module("mlflow.pyfunc")
    monkeypatch.setattr(pyfunc, "load_model", lambda uri, dst_path: Model())
    with pytest.raises(
        StageFailed, match="differently from models:/iris/3 on 1 of 3 rows: row 1: served 'x'"
    ):
        smoke.smoke_test(Canned(running(), echo), "iris-champion", data)
    good = Canned(running(), {"predictions": ["x", "y", "x"]})
    assert smoke.smoke_test(good, "iris-champion", data).compared


def test_numbers_compare_with_a_tolerance():
    assert smoke._equal(1.0, 1.0 + 1e-9)
    assert not smoke._equal(1.0, 1.1)
    assert smoke._equal(2, "2")
