"""GoCD names: the rule, sanitising MLflow names, collisions and literal fnmatch patterns."""

from __future__ import annotations

import fnmatch

import pytest

from mlflow_ext.errors import PipelineError
from mlflow_ext.gocd import names


@pytest.mark.parametrize("name", ["iris", "a.b-c_d", "-lead", "_x", "9", "x" * 255])
def test_valid_names(name):
    assert names.is_valid(name)


@pytest.mark.parametrize("name", ["", ".hidden", "a b", "a/b", "ä", "x" * 256, "a:b"])
def test_invalid_names(name):
    assert not names.is_valid(name)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("iris-classifier", "iris-classifier"),
        ("Fraud Model (EU) v2", "Fraud_Model__EU__v2"),
        (".hidden", "_hidden"),
        ("modèle/ü", "mod_le__"),
    ],
)
def test_sanitise(given, expected):
    assert names.sanitise(given) == expected
    assert names.is_valid(names.sanitise(given))


def test_sanitise_refuses_empty():
    with pytest.raises(PipelineError):
        names.sanitise("")


def test_collisions_ignore_case_and_name_both_originals():
    pairs = [
        ("fraud model", "fraud_model"),
        ("fraud_model", "fraud_model"),
        ("Iris", "Iris"),
        ("iris", "iris"),
    ]
    assert names.find_collisions(pairs) == [
        ("fraud model", "fraud_model", "fraud_model"),
        ("Iris", "iris", "iris"),
    ]
    assert names.find_collisions([("a", "a"), ("a", "a")]) == []


@pytest.mark.parametrize("text", ["plain", "a*b", "what?", "[x]", "a[!b]*"])
def test_fnmatch_literal_matches_only_itself(text):
    pattern = names.fnmatch_literal(text)
    assert fnmatch.fnmatchcase(text, pattern)
    assert not fnmatch.fnmatchcase(text + "x", pattern)
    if "*" in text or "?" in text:
        assert not fnmatch.fnmatchcase(text.replace("*", "zz").replace("?", "q"), pattern)


def test_pipeline_names():
    assert names.build_pipeline("iris") == "iris-build"
    assert names.release_pipeline("iris", "champion") == "iris-release-champion"
