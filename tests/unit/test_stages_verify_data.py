"""verify-data: every difference between recorded and found test data is named."""

from __future__ import annotations

import pytest

from mlflow_ext.data import Column, DataFingerprint
from mlflow_ext.errors import StageFailed
from mlflow_ext.stages.common import RecordedData
from mlflow_ext.stages.verify_data import choose, differences


def recorded(**changes):
    values = {
        "name": "test.csv",
        "role": "test",
        "fingerprint": "sha256:aa",
        "uri": "/x/test.csv",
        "rows": 30,
        "format": "csv",
        "schema_text": "a:double, b:double, label:string",
    }
    return RecordedData(**{**values, **changes})


def found(columns, rows=30, digest="aa", fmt="csv"):
    schema = tuple(Column(name, kind) for name, kind in columns)
    return DataFingerprint("/x/test.csv", f"sha256:{digest}", 1, 100, fmt, rows, schema)


SAME = [("a", "double"), ("b", "double"), ("label", "string")]


def test_identical_data_has_no_differences():
    assert differences(recorded(), found(SAME)) == []


def test_every_change_is_named():
    problems = differences(
        recorded(), found([("b", "int64"), ("a", "double"), ("extra", "string")], rows=29, digest="bb")
    )
    assert "column added: extra (string)" in problems
    assert "column removed: label (string)" in problems
    assert "column retyped: b double -> int64" in problems
    assert "columns reordered: a, b -> b, a" in problems
    assert "rows: recorded 30, found 29 (-1)" in problems
    assert problems[-1] == "fingerprint: recorded sha256:aa, found sha256:bb"


def test_same_shape_other_values_is_a_fingerprint_difference():
    assert differences(recorded(), found(SAME, digest="cc")) == [
        "fingerprint: recorded sha256:aa, found sha256:cc"
    ]


def test_format_change():
    assert "format: recorded csv, found parquet" in differences(recorded(), found(SAME, fmt="parquet"))


def test_choose_prefers_role_test_then_the_file_name():
    train = recorded(name="train.csv", role="training")
    assert choose([train, recorded()], "data/other.csv", None, "v1").name == "test.csv"
    two = [recorded(name="a.csv"), recorded(name="b.csv")]
    assert choose(two, "data/b.csv", None, "v1").name == "b.csv"
    with pytest.raises(StageFailed, match="several test datasets"):
        choose(two, "data/c.csv", None, "v1")
    with pytest.raises(StageFailed, match=r"recorded no test data .*train.csv \(training\)"):
        choose([train], "data/test.csv", None, "v1")
    with pytest.raises(StageFailed, match="no dataset named 'x'"):
        choose([train], "data/test.csv", "x", "v1")
    assert choose([train], "data/test.csv", "train.csv", "v1") is train
