"""The model catalog: every bad input is an error naming the file, the entry and the field."""

from __future__ import annotations

import textwrap

import pytest

from mlflow_ext.errors import PipelineError
from mlflow_ext.gocd import catalog

GOOD = {
    "name": "iris",
    "team": "ds",
    "repository": "https://git.example.com/iris.git",
    "entry_point": "python train.py",
    "test_data": "data/test.csv",
    "target": "species",
    "deploy": {"target": "local"},
    "aliases": {"champion": {"production": True}},
}


def _parse(*models, **top):
    return catalog.parse({"models": list(models), **top}, "models.yaml")


def _error(*models, **top) -> str:
    with pytest.raises(PipelineError) as caught:
        _parse(*models, **top)
    return str(caught.value)


def test_a_good_entry_with_defaults():
    found = _parse(GOOD, {**GOOD, "name": "b", "aliases": ["staging"]})
    iris = found.models[1]
    assert (iris.name, iris.gocd_name, iris.group, iris.branch, iris.directory) == (
        "iris",
        "iris",
        "ds",
        "main",
        ".",
    )
    assert [(a.name, a.production, a.deploy.target) for a in iris.aliases] == [("champion", True, "local")]
    assert found.models[0].aliases[0].production is False


def test_defaults_fill_fields_and_merge_deploy():
    entry = {k: v for k, v in GOOD.items() if k not in ("repository", "deploy")} | {"deploy": {"port": 5201}}
    found = _parse(entry, defaults={"repository": "https://x/r.git", "deploy": {"target": "local"}})
    assert found.models[0].repository == "https://x/r.git"
    assert found.models[0].aliases[0].deploy == catalog.Deploy("local", 5201)


def test_alias_deploy_overrides_and_variables_merge():
    entry = GOOD | {
        "deploy": {"target": "local", "port": 1},
        "variables": {"A": 1, "B": "x"},
        "aliases": {"champion": {"deploy": {"port": 2}, "variables": {"B": "y"}}},
    }
    alias = _parse(entry).models[0].aliases[0]
    assert alias.deploy == catalog.Deploy("local", 2)
    assert alias.variables == {"A": "1", "B": "y"}


def test_duplicate_names():
    message = _error(GOOD, GOOD)
    assert "models.yaml: model 'iris': duplicate name" in message


def test_names_that_sanitise_alike_are_an_error_naming_both():
    message = _error(GOOD | {"name": "fraud model"}, GOOD | {"name": "fraud_model"})
    assert "models 'fraud model' and 'fraud_model'" in message
    assert "set `gocd_name`" in message


def test_names_that_differ_only_in_case_collide():
    assert "models 'Iris' and 'iris'" in _error(GOOD | {"name": "Iris"}, GOOD)


def test_gocd_name_resolves_a_collision_and_must_be_valid():
    found = _parse(GOOD | {"name": "Iris", "gocd_name": "iris-upper"}, GOOD)
    assert sorted(m.gocd_name for m in found.models) == ["iris", "iris-upper"]
    assert "field 'gocd_name': 'bad name' is not a valid GoCD name" in _error(
        GOOD | {"gocd_name": "bad name"}
    )


def test_missing_entry_point_names_file_entry_and_field():
    entry = {k: v for k, v in GOOD.items() if k != "entry_point"}
    assert "models.yaml: models[0] (iris): field 'entry_point': missing" in _error(entry)


def test_every_missing_field_is_listed():
    message = _error({"name": "x"})
    for field in catalog.REQUIRED_KEYS:
        assert f"models[0] (x): field {field!r}: missing" in message
    assert f"has {len(catalog.REQUIRED_KEYS)} problems" in message


def test_missing_name():
    assert "models[1]: field 'name': missing" in _error(GOOD, {k: v for k, v in GOOD.items() if k != "name"})


def test_unknown_keys_everywhere():
    message = _error(
        GOOD
        | {"entrypoint": "x", "deploy": {"target": "local", "host": "h"}, "aliases": {"c": {"prod": True}}},
        extra=1,
    )
    assert "top level: unknown key 'extra'" in message
    assert "models[0] (iris): unknown key 'entrypoint'" in message
    assert "field 'deploy': unknown key 'host'" in message
    assert "aliases.c: unknown key 'prod'" in message


def test_defaults_cannot_hold_names():
    assert "defaults: cannot have a default 'name'" in _error(GOOD, defaults={"name": "x"})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"aliases": {}}, "field 'aliases': must be a non-empty mapping"),
        ({"aliases": {"latest": {}}}, "aliases.latest: 'latest' is not an alias MLflow allows"),
        ({"aliases": {"v3": {}}}, "'v3' is not an alias MLflow allows"),
        ({"aliases": {"a b": {}, "a_b": {}}}, "aliases 'a b' and 'a_b' both become 'a_b'"),
        ({"deploy": {"port": 70000, "target": "local"}}, "'port' 70000 must be a number from 1 to 65535"),
        ({"deploy": {"port": 80}}, "'target' missing"),
        ({"test_data": "../secret.csv"}, "field 'test_data': '../secret.csv' must be a relative path"),
        ({"directory": "/abs"}, "field 'directory': '/abs' must be a relative path"),
        ({"variables": {"MLFLOW_RUN_ID": "x"}}, "variable 'MLFLOW_RUN_ID' is reserved"),
        ({"variables": {"GO_X": "x"}}, "variable 'GO_X' is reserved"),
        ({"environment": {"bad-name": "x"}}, "variable name 'bad-name' must match"),
        ({"environment": {"A": "x"}, "variables": {"A": "y"}}, "variable 'A' is both in 'environment'"),
        ({"team": ""}, "field 'team': must be a non-empty string"),
        ({"timeout": -1}, "field 'timeout': must be a whole number of minutes"),
        ({"resources": "python"}, "field 'resources': must be a list"),
        ({"approval": {"roles": "admins"}}, "field 'approval': 'roles' must be a list of names"),
        ({"name": "m" * 250}, "is longer than 255 characters: set a shorter 'gocd_name'"),
    ],
)
def test_bad_fields(change, expected):
    assert expected in _error(GOOD | change)


def test_teams_that_sanitise_alike():
    assert "teams 'a b' and 'a_b': both become the GoCD group 'a_b'" in _error(
        GOOD | {"team": "a b"}, GOOD | {"name": "other", "team": "a_b"}
    )


def test_load_reports_yaml_problems_with_the_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - name: a\n    name: b\n")
    with pytest.raises(PipelineError, match=r"models.yaml: not valid YAML: duplicate key 'name' .* line 3"):
        catalog.load(path)
    path.write_text("models: [unclosed\n")
    with pytest.raises(PipelineError, match=r"models.yaml: not valid YAML"):
        catalog.load(path)
    with pytest.raises(PipelineError, match="cannot read the catalog"):
        catalog.load(tmp_path / "missing.yaml")
    path.write_text("- just a list\n")
    with pytest.raises(PipelineError, match="top level: must be a mapping"):
        catalog.load(path)


def test_load_a_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        textwrap.dedent(
            """
            tracking_uri: https://mlflow.example.com
            models:
              - name: iris
                team: ds
                repository: https://git.example.com/iris.git
                entry_point: python train.py
                test_data: data/test.csv
                target: species
                deploy: {target: local}
                aliases: [staging]
            """
        )
    )
    found = catalog.load(path)
    assert found.tracking_uri == "https://mlflow.example.com"
    assert found.source == str(path)


# -- the registry ---------------------------------------------------------------------------------------

TAGS = {
    "gocd.team": "ds",
    "gocd.repository": "https://git.example.com/r.git",
    "gocd.entry_point": "python train.py",
    "gocd.test_data": "data/test.csv",
    "gocd.target": "label",
    "gocd.aliases": "staging, champion",
    "gocd.production_aliases": "champion",
    "gocd.deploy.target": "local",
    "gocd.deploy.port": "5300",
}


def test_from_registry_takes_tagged_models_only():
    found = catalog.from_registry({"tagged": TAGS, "untagged": {"owner": "x"}})
    (model,) = found.models
    assert model.name == "tagged"
    assert [(a.name, a.production) for a in model.aliases] == [("champion", True), ("staging", False)]
    assert model.aliases[0].deploy == catalog.Deploy("local", 5300)


def test_from_registry_uses_catalog_defaults_and_entries():
    base = catalog.parse(
        {"defaults": {"repository": "https://d/r.git", "deploy": {"target": "local"}}, "models": [GOOD]},
        "m.yaml",
    )
    tags = {
        k: v
        for k, v in TAGS.items()
        if k not in ("gocd.repository", "gocd.deploy.target", "gocd.deploy.port")
    }
    found = catalog.from_registry({"iris": {"gocd.team": "ignored"}, "other": tags}, base)
    assert [m.name for m in found.models] == ["iris", "other"]
    assert found.models[0].team == "ds"  # the catalog entry wins over tags
    assert found.models[1].repository == "https://d/r.git"


def test_from_registry_refuses_a_catalog_model_missing_from_the_registry():
    base = catalog.parse({"models": [GOOD]}, "m.yaml")
    with pytest.raises(PipelineError, match=r"m.yaml: model 'iris' is not in the registry"):
        catalog.from_registry({"other": {}}, base)


def test_from_registry_errors_name_the_registered_model():
    with pytest.raises(PipelineError) as caught:
        catalog.from_registry(
            {"m1": {"gocd.team": "ds", "gocd.colour": "red", "gocd.production_aliases": "x"}}
        )
    message = str(caught.value)
    assert "registered model 'm1': unknown tag 'gocd.colour'" in message
    assert "gocd.production_aliases names 'x', not in gocd.aliases" in message
    with pytest.raises(PipelineError, match=r"registered model 'm1': field 'entry_point': missing"):
        catalog.from_registry({"m1": {"gocd.team": "ds"}})


def test_from_registry_with_nothing_tagged():
    with pytest.raises(PipelineError, match=r"no registered model carries the tag .gocd.team."):
        catalog.from_registry({"a": {}})


class _Page(list):
    def __init__(self, items, token):
        super().__init__(items)
        self.token = token


class _Model:
    def __init__(self, name, tags):
        self.name, self.tags = name, tags


class _Client:
    def __init__(self):
        self.calls = []

    def search_registered_models(self, max_results, page_token):
        self.calls.append(page_token)
        if page_token is None:
            return _Page([_Model("a", {"gocd.team": "x"})], "next")
        return _Page([_Model("b", None)], None)


def test_registry_models_reads_every_page():
    client = _Client()
    assert catalog.registry_models(client) == {"a": {"gocd.team": "x"}, "b": {}}
    assert client.calls == [None, "next"]
