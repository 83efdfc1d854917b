"""Drift guards for the GoCD generator and validator.

- Golden files: tests/contract/golden/gocd/ holds a catalog and what the generator makes of it, per model,
  per team and the routing file. After an intended change, regenerate them with the commands at the top
  of golden/gocd/catalog.yaml and review the diff.
- The example in gocd/examples/ is the generator's output for its catalog (same regeneration, see there).
- The broken corpus: every tests/contract/gocd/broken/*.gocd.yaml is rejected, with exactly the messages
  its `# expect:` lines give, naming the file (and the pipeline when there is one).
- The schema is a valid JSON Schema, and jsonschema agrees with the validator on which files break it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlflow_ext.gocd import catalog, pipelines, validate

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "contract" / "golden" / "gocd"
EXAMPLES = ROOT / "gocd" / "examples"
BROKEN = sorted((ROOT / "tests" / "contract" / "gocd" / "broken").glob("*.gocd.yaml"))


def _files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.gocd.yaml"))}


@pytest.mark.parametrize(("per", "folder"), [("model", "per-model"), ("team", "per-team")])
def test_golden_pipelines(per, folder):
    found = catalog.load(GOLDEN / "catalog.yaml")
    assert pipelines.render(found, per) == _files(GOLDEN / folder), (
        "generated pipelines drifted from the golden files: regenerate them "
        "(golden/gocd/catalog.yaml says how) and review the diff"
    )


def test_golden_routes():
    found = catalog.load(GOLDEN / "catalog.yaml")
    assert pipelines.render_routes(found) == (GOLDEN / "routes.yaml").read_text(encoding="utf-8")


def test_example_pipelines_are_generated_from_the_example_catalog():
    found = catalog.load(EXAMPLES / "catalog.yaml")
    assert pipelines.render(found) == _files(EXAMPLES / "pipelines"), (
        "regenerate gocd/examples (see its catalog)"
    )
    assert pipelines.render_routes(found) == (EXAMPLES / "routes.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("folder", [GOLDEN / "per-model", GOLDEN / "per-team", EXAMPLES / "pipelines"])
def test_generated_files_validate(folder):
    routes = GOLDEN / "routes.yaml" if folder.parent == GOLDEN else EXAMPLES / "routes.yaml"
    report = validate.validate_paths([folder], routes)
    assert report.issues == []
    assert report.files and report.pipelines


def _expected(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.removeprefix("# expect: ") for line in lines if line.startswith("# expect: ")]


def test_the_corpus_is_not_empty():
    assert len(BROKEN) >= 30


@pytest.mark.parametrize("path", BROKEN, ids=[p.name.removesuffix(".gocd.yaml") for p in BROKEN])
def test_broken_file_is_rejected_with_its_message(path):
    expected = _expected(path)
    assert expected, f"{path.name} has no `# expect:` line"
    report = validate.validate_paths([path])
    messages = [str(issue) for issue in report.issues]
    assert len(messages) == len(expected), messages
    for want in expected:
        assert any(want in message for message in messages), (want, messages)
    for issue in report.issues:
        assert issue.file == str(path)
        if issue.pipeline is None:
            assert issue.path or issue.message.startswith(("not valid YAML", "missing required key"))


def _schema_errors(document) -> list:
    compiled = validate.SchemaCompiler(validate.load_schema()).compile(validate.load_schema())
    found: list = []
    compiled(document, (), found)
    return found


def test_schema_is_a_valid_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(validate.load_schema())


def _parsed_corpus() -> list[tuple[str, object]]:
    documents = []
    for path in [
        *BROKEN,
        *(GOLDEN / "per-model").glob("*.gocd.yaml"),
        *(EXAMPLES / "pipelines").glob("*.yaml"),
    ]:
        try:
            documents.append((path.name, yaml.safe_load(path.read_text(encoding="utf-8"))))
        except yaml.YAMLError:
            continue
    return documents


def test_jsonschema_agrees_with_the_validator_on_the_corpus():
    jsonschema = pytest.importorskip("jsonschema")
    checker = jsonschema.Draft202012Validator(validate.load_schema())
    for name, document in _parsed_corpus():
        theirs = bool(list(checker.iter_errors(document)))
        ours = bool(_schema_errors(document))
        assert theirs == ours, (
            f"{name}: jsonschema says {'invalid' if theirs else 'valid'}, the validator disagrees"
        )


def test_schema_refuses_keywords_the_validator_does_not_implement():
    with pytest.raises(ValueError, match="does not implement"):
        validate.SchemaCompiler({}).compile({"type": "string", "format": "uri"})


def test_schema_file_ships_with_the_package():
    assert validate.load_schema()["properties"]["format_version"]["const"] == 10
    assert '"mlflow_ext.gocd" = ["*.schema.json"]' in (ROOT / "pyproject.toml").read_text()


def test_the_bridge_reads_the_generated_routing_file():
    from mlflow_ext import routing
    from mlflow_ext.events import ALIAS_CREATED, Event

    routes = routing.load(str(GOLDEN / "routes.yaml"))
    found = catalog.load(GOLDEN / "catalog.yaml")
    for model in found.models:
        for alias in model.aliases:
            event = Event(event=ALIAS_CREATED, model=model.name, version="1", alias=alias.name)
            matched = [r for r in routes if r.matches(event)]
            assert [(r.pipeline, dict(r.variables)) for r in matched] == [
                (model.release_pipeline(alias), dict(alias.variables))
            ]
    near_miss = Event(event=ALIAS_CREATED, model="Fraud Model (EU) v2x", version="1", alias="shadow")
    assert not [r for r in routes if r.matches(near_miss)]


def _exec_lines(folder: Path):
    for path in sorted(folder.glob("*.gocd.yaml")):
        for name, pipeline in yaml.safe_load(path.read_text(encoding="utf-8"))["pipelines"].items():
            for stage in pipeline["stages"]:
                ((stage_name, body),) = stage.items()
                for job in body["jobs"].values():
                    for task in job["tasks"]:
                        yield f"{name}/{stage_name}", task["exec"]["command"], task["exec"]["arguments"]


def test_every_generated_mlflow_ext_line_parses_with_the_real_command(monkeypatch):
    """The stage commands and the generator agree on options (gocd/README.md, "Stage commands")."""
    import click

    from mlflow_ext.cli import main

    for name, value in {
        "MLFLOW_MODEL_NAME": "m", "MLFLOW_MODEL_VERSION": "1", "MLFLOW_MODEL_ALIAS": "a",
        "MLFLOW_MODEL_URI": "models:/m/1", "GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "1",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    seen = set()
    for where, command, arguments in _exec_lines(GOLDEN / "per-model"):
        if command != "mlflow-ext":
            continue
        subcommand = main.get_command(click.Context(main), arguments[0])
        assert subcommand is not None, f"{where}: no `mlflow-ext {arguments[0]}` command"
        try:
            subcommand.make_context(arguments[0], list(arguments[1:]))
        except click.ClickException as exc:
            pytest.fail(f"{where}: `mlflow-ext {' '.join(arguments)}` does not parse: {exc.format_message()}")
        seen.add(arguments[0])
    assert seen == {"register", "evaluate", "verify-data", "deploy", "smoke-test", "report"}
