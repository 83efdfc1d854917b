"""Validator rules that need more than one file, a routing file, or a valid counterpart to a broken case."""

from __future__ import annotations

import copy

import pytest

from mlflow_ext.gocd import catalog, validate

PIPELINE = {
    "group": "g",
    "materials": {"code": {"git": "https://example.com/r.git"}},
    "stages": [{"build": {"jobs": {"build": {"tasks": [{"exec": {"command": "make"}}]}}}}],
}


def _doc(**pipelines):
    return {"format_version": 10, "pipelines": {name: copy.deepcopy(p) for name, p in pipelines.items()}}


def _issues(document, file="f.gocd.yaml"):
    return [str(i) for i in validate.Validator().check_document(document, file)]


def _shell(script, **levels):
    pipeline = copy.deepcopy(PIPELINE)
    job = pipeline["stages"][0]["build"]["jobs"]["build"]
    job["tasks"] = [{"exec": {"command": "/bin/bash", "arguments": ["-ec", script]}}]
    for level, variables in levels.items():
        target = {"pipeline": pipeline, "stage": pipeline["stages"][0]["build"], "job": job}[level]
        target["environment_variables"] = variables
    return pipeline


def test_a_minimal_pipeline_is_valid():
    assert _issues(_doc(p=PIPELINE)) == []


def test_single_job_shorthand_is_valid():
    pipeline = copy.deepcopy(PIPELINE)
    pipeline["stages"] = [
        {"build": {"approval": "manual", "resources": ["linux"], "tasks": [{"exec": {"command": "x"}}]}}
    ]
    assert _issues(_doc(p=pipeline)) == []


@pytest.mark.parametrize("level", ["pipeline", "stage", "job"])
def test_shell_variables_declared_at_any_level(level):
    assert _issues(_doc(p=_shell("echo ${A} $A", **{level: {"A": "1"}}))) == []


def test_shell_variables_from_an_environment_of_the_file():
    document = _doc(p=_shell("echo $A"))
    document["environments"] = {"prod": {"environment_variables": {"A": "1"}, "pipelines": ["p"]}}
    assert _issues(document) == []
    document["environments"]["prod"]["pipelines"] = ["other"]
    assert len(_issues(document)) == 1


def test_shell_ignores_go_agent_single_quoted_and_escaped_variables():
    assert _issues(_doc(p=_shell("echo $GO_PIPELINE_NAME $HOME '$NOT_EXPANDED' \\$ALSO_NOT $1 $?"))) == []
    assert "reads $MISSING" in _issues(_doc(p=_shell("echo $MISSING")))[0]


def test_on_cancel_tasks_are_checked():
    pipeline = copy.deepcopy(PIPELINE)
    task = {
        "exec": {
            "command": "make",
            "on_cancel": {"exec": {"command": "sh", "arguments": ["-c", "kill $PID"]}},
        }
    }
    pipeline["stages"][0]["build"]["jobs"]["build"]["tasks"] = [task]
    (message,) = _issues(_doc(p=pipeline))
    assert "tasks[0].exec.on_cancel.exec.arguments[1]: the shell script reads $PID" in message


def test_declared_parameters_secret_references_and_label_templates():
    pipeline = copy.deepcopy(PIPELINE)
    pipeline["parameters"] = {"target": "all"}
    pipeline["stages"][0]["build"]["jobs"]["build"]["tasks"] = [
        {"exec": {"command": "make", "arguments": ["#{target}", "##{literal}"]}}
    ]
    pipeline["environment_variables"] = {"REL": "1"}
    pipeline["secure_variables"] = {"TOKEN": "{{SECRET:[vault][gocd-token]}}", "KEY": "AES:abc:def"}
    pipeline["label_template"] = "${COUNT}-${code[:8]}-${env:REL}"
    assert _issues(_doc(p=pipeline)) == []
    pipeline["label_template"] = "${env:NOPE}"
    assert "${env:NOPE} is neither COUNT" in _issues(_doc(p=pipeline))[0]


def test_messages_name_file_pipeline_and_path():
    pipeline = copy.deepcopy(PIPELINE)
    pipeline["stages"][0]["build"]["jobs"]["build"]["tasks"][0]["exec"]["run_if"] = "sometimes"
    (issue,) = validate.Validator().check_document(_doc(release=pipeline), "x.gocd.yaml")
    assert (issue.file, issue.pipeline, issue.path) == (
        "x.gocd.yaml",
        "release",
        "stages[0].build.jobs.build.tasks[0].exec.run_if",
    )


def test_pipeline_names_unique_across_files_ignoring_case():
    issues = validate.Validator().check_documents(
        [("a.gocd.yaml", _doc(Iris=PIPELINE)), ("b.gocd.yaml", _doc(iris=PIPELINE))]
    )
    assert [str(i) for i in issues] == [
        "b.gocd.yaml: pipeline iris: pipeline name is also defined in a.gocd.yaml (as Iris); "
        "GoCD needs names unique, ignoring case"
    ]


def test_routes_need_the_pipeline_and_every_passed_variable():
    declared = {
        "iris-release-champion": (*catalog.BRIDGE_VARIABLES, "TIER"),
        "partial": ("MLFLOW_MODEL_NAME",),
    }
    routes = {"routes": [
        {"model": "iris", "alias": "c", "pipeline": "iris-release-champion", "variables": {"TIER": "p"}},
        {"model": "iris", "alias": "c", "pipeline": "IRIS-release-champion", "variables": {"OTHER": "x"}},
        {"model": "x", "alias": "y", "pipeline": "missing"},
        {"model": "x", "alias": "y", "pipeline": "partial"},
        {"model": "x", "alias": "y", "pipeline": "bad name"},
        "not a route",
    ]}  # fmt: skip
    messages = [str(i) for i in validate.check_routes(routes, "routes.yaml", declared)]
    assert messages == [
        "routes.yaml: pipeline IRIS-release-champion: routes[1]: the pipeline does not declare OTHER at "
        "pipeline level: GoCD answers 422 when the bridge passes them",
        "routes.yaml: pipeline missing: routes[2]: no checked file defines this pipeline (GoCD answers 404)",
        "routes.yaml: pipeline partial: routes[3]: the pipeline does not declare MLFLOW_MODEL_VERSION, "
        "MLFLOW_MODEL_ALIAS, MLFLOW_RUN_ID, MLFLOW_MODEL_URI, MLFLOW_TRACKING_URI at pipeline level: GoCD "
        "answers 422 when the bridge passes them",
        "routes.yaml: routes[4].pipeline: 'bad name' is not a GoCD pipeline name",
        "routes.yaml: routes[5]: must be a mapping",
    ]
    assert [str(i) for i in validate.check_routes({"routes": {}}, "r.yaml", {})] == [
        "r.yaml: routes: must be a list of routes"
    ]


def test_validate_paths_reads_directories_and_routes(tmp_path):
    from mlflow_ext.gocd import emit

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.gocd.yaml").write_text(emit.dump(_doc(a=PIPELINE)))
    (tmp_path / "b.gocd.yml").write_text(emit.dump(_doc(b=PIPELINE)))
    (tmp_path / "notes.yaml").write_text("ignored: true\n")
    (tmp_path / "routes.yaml").write_text(emit.dump({"routes": [{"pipeline": "a"}]}))
    report = validate.validate_paths([tmp_path], tmp_path / "routes.yaml")
    assert (report.files, report.pipelines) == (2, 2)
    assert len(report.issues) == 1 and "does not declare MLFLOW_MODEL_NAME" in report.issues[0].message


def test_parallel_and_serial_runs_agree(tmp_path, monkeypatch):
    from mlflow_ext.gocd import emit

    broken = copy.deepcopy(PIPELINE)
    broken["lock"] = True
    for index in range(30):
        pipeline = broken if index % 7 == 0 else PIPELINE
        (tmp_path / f"p{index:02d}.gocd.yaml").write_text(emit.dump(_doc(**{f"p{index}": pipeline})))
    files = [str(p) for p in validate.expand([tmp_path])]
    monkeypatch.setenv("MLFLOW_EXT_GOCD_WORKERS", "1")
    serial = validate.parallel_map(validate.check_file, files, min_items=1)
    monkeypatch.setenv("MLFLOW_EXT_GOCD_WORKERS", "2")
    parallel = validate.parallel_map(validate.check_file, files, min_items=1)
    assert serial == parallel
    assert sum(len(r.issues) for r in serial) == 5


def test_large_catalogs_render_the_same_in_worker_processes(monkeypatch):
    from mlflow_ext.gocd import pipelines

    entry = {
        "team": "t", "repository": "https://g/r.git", "entry_point": "make", "test_data": "d.csv",
        "target": "y", "deploy": {"target": "local"}, "aliases": ["staging"],
    }  # fmt: skip
    found = catalog.parse({"models": [entry | {"name": f"m{i}"} for i in range(210)]}, "big.yaml")
    monkeypatch.setenv("MLFLOW_EXT_GOCD_WORKERS", "1")
    serial = pipelines.render(found)
    monkeypatch.setenv("MLFLOW_EXT_GOCD_WORKERS", "2")
    assert pipelines.render(found) == serial
    assert len(serial) == 210


def test_duplicate_keys_are_refused_by_the_loader():
    with pytest.raises(Exception, match="duplicate key 'a'"):
        validate.load_text("a: 1\na: 2\n")
    assert validate.load_text("base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\nlist: [*b]\n") == {
        "base": {"x": 1}, "use": {"x": 1, "y": 2}, "list": [{"x": 1}],
    }  # fmt: skip
    assert validate.load_text("") is None
    assert validate.load_text("a: yes\nb: '1'\nc: 1\nd: ~\ne: 1.5\n") == {
        "a": True,
        "b": "1",
        "c": 1,
        "d": None,
        "e": 1.5,
    }
