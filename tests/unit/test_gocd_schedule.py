"""Weekly retraining: the catalog's `schedule` becomes a GoCD timer on the build pipeline, specs are
checked as GoCD's Quartz parser would, windows are spread by model name, and `gocd generate` reports the
busiest hour."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from mlflow_ext.cli import main
from mlflow_ext.errors import PipelineError
from mlflow_ext.gocd import catalog, pipelines, schedule, validate

ENTRY = {
    "name": "iris-classifier",
    "team": "data-science",
    "repository": "https://git.example.com/ml.git",
    "entry_point": "python train.py",
    "test_data": "data/test.csv",
    "target": "species",
    "deploy": {"target": "local"},
    "aliases": ["staging"],
}


def _catalog(*entries, **top):
    return catalog.parse({"models": list(entries or [ENTRY]), **top}, "models.yaml")


def _build(found, name="iris-classifier-build"):
    model = next(m for m in found.models if m.build_pipeline == name)
    return pipelines.model_pipelines(model, found)[name]


@pytest.mark.parametrize(
    "spec",
    [
        "0 30 2 ? * SUN",
        "0 0 22 ? * MON-FRI",
        "0 0 12 * * ?",
        "0 0/15 * ? * *",
        "0 15 10 ? * 6L 2027",
        "0 0 0 L * ?",
        "0 0 0 15W * ?",
        "0 0 3 ? * 2#1",
        "0 0 3 ? jan,jul sun",
        "0 0 23-2 ? * FRI-MON",
    ],
)
def test_specs_gocd_accepts(spec):
    assert schedule.check(spec) is None


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("0 2 * * 0", "5 fields (a crontab line)"),
        ("0 0 12 * * *", "exactly one of day-of-month and day-of-week must be '?'"),
        ("0 0 12 ? * ?", "exactly one of day-of-month and day-of-week must be '?'"),
        ("0 61 2 ? * SUN", "minutes field: 61 is outside 0-59"),
        ("0 0 24 ? * SUN", "hours field: 24 is outside 0-23"),
        ("0 0 2 ? * SUNDAY", "day-of-week field"),
        ("0 0 2 ? FOO *", "month field"),
        ("? 0 2 * * SUN", "'?' is only allowed in day-of-month or day-of-week"),
        ("0 0 2 ? * 2#6", "must be 1 to 5"),
        ("0 0 2 ? * SUN 1969", "year field"),
        ("0 0 2 ? * SUN 2030 x", "8 fields"),
        ("", "Quartz cron expression"),
    ],
)
def test_specs_gocd_refuses(spec, why):
    problem = schedule.check(spec)
    assert problem is not None and why in problem


def test_a_spec_becomes_the_build_pipelines_timer():
    found = _catalog({**ENTRY, "schedule": "0 30 2 ? * SUN"})
    generated = pipelines.model_pipelines(found.models[0], found)
    assert generated["iris-classifier-build"]["timer"] == {"spec": "0 30 2 ? * SUN", "only_on_changes": False}
    assert "timer" not in generated["iris-classifier-release-staging"]
    found = _catalog({**ENTRY, "schedule": {"spec": "0 0 4 ? * MON", "only_on_changes": True}})
    assert _build(found)["timer"] == {"spec": "0 0 4 ? * MON", "only_on_changes": True}
    assert "timer" not in _build(_catalog())


def test_the_timer_reaches_the_file_and_validates(tmp_path):
    found = _catalog({**ENTRY, "schedule": "0 30 2 ? * SUN"})
    ((name, text),) = pipelines.render(found).items()
    assert yaml.safe_load(text)["pipelines"]["iris-classifier-build"]["timer"]["spec"] == "0 30 2 ? * SUN"
    (tmp_path / name).write_text(text)
    assert validate.validate_paths([tmp_path]).issues == []


def test_a_bad_spec_names_the_model_and_the_field():
    with pytest.raises(PipelineError) as caught:
        _catalog(
            {**ENTRY, "schedule": "0 2 * * 0"}, {**ENTRY, "name": "fraud", "schedule": {"spec": "1 2 3"}}
        )
    message = str(caught.value)
    where = "models.yaml: models[0] (iris-classifier): field 'schedule'"
    assert f"{where}: '0 2 * * 0' is not a timer spec" in message
    assert "5 fields (a crontab line): GoCD takes Quartz cron, 6 or 7 fields with seconds first" in message
    assert "models[1] (fraud): field 'schedule': '1 2 3' is not a timer spec GoCD accepts" in message


@pytest.mark.parametrize(
    ("schedule_value", "why"),
    [
        ({"spec": "0 0 2 ? * SUN", "window": "SUN 00:00-06:00"}, "give `spec` (a Quartz cron) or `window`"),
        ({"window": "SUN 06:00-02:00"}, "ends before it starts"),
        ({"window": "SUNDAY 00:00-06:00"}, "days are SUN-SAT or daily"),
        ({"window": "SUN 0-6"}, "is not '[DAYS] HH:MM-HH:MM'"),
        ({"window": "SUN 00:00-25:00"}, "is not a time of day"),
        ({"spec": "0 0 2 ? * SUN", "only_on_changes": "yes"}, "'only_on_changes' must be true or false"),
        ({"spec": "0 0 2 ? * SUN", "every": "week"}, "unknown key 'every'"),
        (7, "must be a Quartz spec or a mapping"),
    ],
)
def test_bad_schedules_are_refused(schedule_value, why):
    with pytest.raises(PipelineError, match="field 'schedule'") as caught:
        _catalog({**ENTRY, "schedule": schedule_value})
    assert why in str(caught.value)


def test_a_gocd_file_with_a_crontab_spec_fails_validation(tmp_path):
    found = _catalog({**ENTRY, "schedule": "0 30 2 ? * SUN"})
    ((name, text),) = pipelines.render(found).items()
    (tmp_path / name).write_text(text.replace('"0 30 2 ? * SUN"', '"30 2 * * 0"'))
    issues = [str(i) for i in validate.validate_paths([tmp_path]).issues]
    assert len(issues) == 1
    assert f"{tmp_path / name}: pipeline iris-classifier-build: timer.spec: '30 2 * * 0' is not" in issues[0]
    assert "GoCD takes Quartz cron" in issues[0]


def _many(count, **top):
    entries = [{**ENTRY, "name": f"model-{i:05d}"} for i in range(count)]
    return catalog.parse({"models": entries, **top}, "models.yaml")


def test_a_window_spreads_thousands_of_models_deterministically():
    found = _many(3000, defaults={"schedule": {"window": "SUN 00:00-06:00"}})
    specs = [m.timer.spec for m in found.models]
    assert len(set(specs)) > 300  # 360 minutes in the window
    for spec in specs:
        seconds, minute, hour, dom, month, dow = spec.split()
        assert (seconds, dom, month, dow) == ("0", "?", "*", "SUN")
        assert 0 <= int(hour) < 6 and 0 <= int(minute) < 60
        assert schedule.check(spec) is None
    again = _many(3000, defaults={"schedule": {"window": "SUN 00:00-06:00"}})
    assert [m.timer.spec for m in again.models] == specs
    # a model's start depends on its name only: adding models moves nobody
    more = _many(3500, defaults={"schedule": {"window": "SUN 00:00-06:00"}})
    assert {m.name: m.timer.spec for m in more.models if m.name in {n.name for n in found.models}} == {
        m.name: m.timer.spec for m in found.models
    }
    day, starts = schedule.busiest_hour(specs)
    assert day.startswith("SUN 0") and 3000 / 6 <= starts < 3000 / 6 * 1.25


def test_windows_over_several_days_give_each_model_one_day():
    found = _many(700, defaults={"schedule": {"window": "SAT,SUN 22:00-24:00", "only_on_changes": True}})
    days = {m.timer.spec.split()[5] for m in found.models}
    hours = {m.timer.spec.split()[2] for m in found.models}
    assert days == {"SAT", "SUN"} and hours == {"22", "23"}
    assert all(m.timer.only_on_changes for m in found.models)
    daily = _catalog({**ENTRY, "schedule": {"window": "01:00-02:00"}}).models[0].timer
    assert daily.spec.startswith("0 ") and daily.spec.endswith(" 1 ? * *")


def test_an_entry_overrides_or_opts_out_of_the_catalog_window():
    found = catalog.parse(
        {
            "defaults": {"schedule": {"window": "SUN 00:00-06:00"}},
            "models": [
                ENTRY,
                {**ENTRY, "name": "fixed", "schedule": {"spec": "0 0 9 ? * MON"}},
                {**ENTRY, "name": "manual", "schedule": None},
                {**ENTRY, "name": "changes", "schedule": {"only_on_changes": True}},
            ],
        },
        "models.yaml",
    )
    timers = {m.name: m.timer for m in found.models}
    assert timers["iris-classifier"].window == "SUN 00:00-06:00"
    assert timers["fixed"] == catalog.Timer(spec="0 0 9 ? * MON")
    assert timers["manual"] is None
    assert timers["changes"].only_on_changes and timers["changes"].window == "SUN 00:00-06:00"


def test_busiest_hour_counts_starts_per_day_and_hour():
    assert schedule.busiest_hour([]) is None
    specs = ["0 0 2 ? * SUN", "0 30 2 ? * SUN", "0 0 3 ? * SUN", "0 0 2 ? * MON-FRI"]
    assert schedule.busiest_hour(specs) == ("SUN 02:00", 2)
    # all at once: every model in the same hour
    assert schedule.busiest_hour(["0 0 2 ? * SUN"] * 5) == ("SUN 02:00", 5)


def test_cli_generate_prints_the_busiest_hour(tmp_path):
    entries = [{**ENTRY, "name": f"model-{i:04d}"} for i in range(600)]
    path = tmp_path / "models.yaml"
    window = {"schedule": {"window": "SUN 00:00-06:00"}}
    path.write_text(yaml.safe_dump({"defaults": window, "models": entries}))
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["gocd", "generate", "--catalog", str(path), "--out", str(out)]
    result = runner.invoke(main, [*args, "--output", "json"], catch_exceptions=False, standalone_mode=False)
    report = json.loads(result.output)
    assert report["timers"] == 600
    assert report["busiest_hour"].startswith("SUN 0")
    assert 100 <= report["busiest_hour_starts"] < 130
    result = runner.invoke(main, args, catch_exceptions=False, standalone_mode=False)
    assert f"busiest_hour_starts: {report['busiest_hour_starts']}" in result.output
    assert validate.validate_paths([out]).issues == []
