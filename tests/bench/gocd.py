"""GoCD pipelines for BENCH_GOCD_MODELS models (default 5,000): generate, then validate, vs the plain way.

The catalog: N models in 50 teams, each with two aliases (staging, and production with its manual gate),
so 3 pipelines per model (15,000 for 5,000 models), one file per model.

- platform: what `mlflow-ext gocd generate --catalog ... --out ... --routes ...` runs (load the catalog,
  render and validate every document, write beside --out and swap it in) and then what `mlflow-ext gocd
  validate OUT --routes ...` runs (read every file back: schema, semantic rules, routes); worker processes
  as the machine's cores allow, and again with MLFLOW_EXT_GOCD_WORKERS=1.
- baseline: what a generator script usually does with the same pipeline structures (built one file at a
  time by the same mlflow_ext.gocd.pipelines code): `yaml.safe_dump` per file, then `yaml.safe_load` and
  `jsonschema.Draft202012Validator(...).iter_errors` with the same schema per file, in one process. It checks
  less (no semantic rules, no routes, no atomic swap), so the ratio understates the difference.

Both run in a new process each, timed from inside, after imports: the CLI's own start-up (it imports every
command module, mlflow among them) is the same for any command and is recorded apart, in gocd.json.

Goal: generate + validate under 10 s on this machine. Best of BENCH_GOCD_REPEATS (default 2) platform runs,
the baseline once; CPU seconds (the process and its workers) are reported too, as they vary less than
wall time on a shared box.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

MODELS = int(os.environ.get("BENCH_GOCD_MODELS", "5000"))
REPEATS = int(os.environ.get("BENCH_GOCD_REPEATS", "2"))
GOAL_SECONDS = 10.0

_CPU = """
import resource
def cpu():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
"""

_BASELINE = (
    _CPU
    + """
import sys, time, json
from pathlib import Path
import jsonschema, yaml
from mlflow_ext.gocd import catalog, pipelines, validate

catalog_path, out = sys.argv[1], Path(sys.argv[2])
start, cpu0 = time.perf_counter(), cpu()
found = catalog.load(catalog_path)
out.mkdir()
for name, models in pipelines.files_of(found).items():
    (out / name).write_text(yaml.safe_dump(pipelines.document(models, found), sort_keys=False))
generated = time.perf_counter()
checker = jsonschema.Draft202012Validator(validate.load_schema())
errors = 0
for path in sorted(out.glob("*.gocd.yaml")):
    errors += sum(1 for _ in checker.iter_errors(yaml.safe_load(path.read_text())))
done, cpu1 = time.perf_counter(), cpu()
print(json.dumps({"generate": generated - start, "validate": done - generated, "cpu": cpu1 - cpu0,
                  "errors": errors}))
"""
)


# `mlflow-ext gocd ...` as the console script runs it, from the interpreter running the bench.
_CLI = [
    sys.executable,
    "-c",
    "import sys; from mlflow_ext.cli import run; sys.argv[0] = 'mlflow-ext'; run()",
    "gocd",
]


_PLATFORM = (
    _CPU
    + """
import sys, time, json
from mlflow_ext.gocd import catalog, pipelines, validate

catalog_path, out, routes = sys.argv[1:4]
start, cpu0 = time.perf_counter(), cpu()
pipelines.write(catalog.load(catalog_path), out, routes_file=routes)
generated = time.perf_counter()
report = validate.validate_paths([out], routes)
done, cpu1 = time.perf_counter(), cpu()
if report.issues:
    raise SystemExit(f"{len(report.issues)} problems, first: {report.issues[0]}")
print(json.dumps({"generate": generated - start, "validate": done - generated, "cpu": cpu1 - cpu0}))
"""
)


def _catalog(path: Path, models: int) -> None:
    data = {
        "tracking_uri": "https://mlflow.example.com",
        "defaults": {
            "repository": "https://git.example.com/ml/models.git",
            "entry_point": "python train.py",
            "test_data": "data/test.csv",
            "target": "label",
            "deploy": {"target": "local"},
        },
        "models": [
            {
                "name": f"team-{i % 50:02d}/model {i:05d}",
                "team": f"team-{i % 50:02d}",
                "directory": f"models/model-{i:05d}",
                "aliases": {"staging": {}, "production": {"production": True, "variables": {"TIER": "prod"}}},
            }
            for i in range(models)
        ],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _platform(catalog: Path, work: Path, workers: str | None) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("MLFLOW_EXT_GOCD_WORKERS", None)
    if workers:
        env["MLFLOW_EXT_GOCD_WORKERS"] = workers
    out, routes = work / "out", work / "routes.yaml"
    shutil.rmtree(out, ignore_errors=True)
    answer = subprocess.run(
        [sys.executable, "-c", _PLATFORM, str(catalog), str(out), str(routes)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    measured = json.loads(answer.stdout)
    return {**measured, "total": measured["generate"] + measured["validate"]}


def _cli_start() -> float:
    start = time.perf_counter()
    subprocess.run([*_CLI, "--help"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _baseline(catalog: Path, work: Path) -> dict[str, float]:
    out = work / "baseline"
    shutil.rmtree(out, ignore_errors=True)
    answer = subprocess.run(
        [sys.executable, "-c", _BASELINE, str(catalog), str(out)], check=True, capture_output=True, text=True
    )
    measured = json.loads(answer.stdout)
    if measured["errors"]:
        raise RuntimeError(f"baseline: jsonschema found {measured['errors']} errors in generated files")
    measured["total"] = measured["generate"] + measured["validate"]
    return measured


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["total"])


def run(results_dir: Path) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="bench-gocd-"))
    try:
        catalog = work / "models.yaml"
        _catalog(catalog, MODELS)
        runs: dict[str, list[dict[str, float]]] = {"parallel": [], "serial": [], "baseline": []}
        for repeat in range(REPEATS):
            runs["parallel"].append(_platform(catalog, work, None))
            runs["serial"].append(_platform(catalog, work, "1"))
            if repeat == 0:  # ten times slower and more: one run is enough to place it
                runs["baseline"].append(_baseline(catalog, work))
        files = len(list((work / "out").glob("*.gocd.yaml")))
        cli_start = min(_cli_start() for _ in range(REPEATS))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    parallel, serial, baseline = (_best(runs[k]) for k in ("parallel", "serial", "baseline"))
    cpus = os.cpu_count() or 1
    details = {
        "models": MODELS,
        "files": files,
        "pipelines": MODELS * 3,
        "cpus": cpus,
        "cli_start_seconds": cli_start,
        "runs": runs,
    }
    Path(results_dir, "gocd.json").write_text(json.dumps(details, indent=2) + "\n")
    verdict = "met" if parallel["total"] < GOAL_SECONDS else "missed"
    note = (
        f"gocd: {MODELS:,} models, {MODELS * 3:,} pipelines in {files:,} files; platform = mlflow-ext gocd "
        f"generate + validate ({min(cpus, 4)} workers, or 1; CLI start-up {cli_start:.1f} s not counted); "
        "baseline = yaml.safe_dump, "
        "then yaml.safe_load + jsonschema per file on the same structures and schema, one process, no "
        f"semantic rules; goal < {GOAL_SECONDS:g} s {verdict} ({parallel['total']:.1f} s); "
        f"best of {REPEATS}, baseline once"
    )
    rows = []
    for label, measured in (("", parallel), (", one worker", serial)):
        for part in ("total", "generate", "validate"):
            rows.append(
                {
                    "section": "gocd",
                    "measure": f"{part} seconds, {MODELS:,} models{label}",
                    "platform": measured[part],
                    "baseline": baseline[part],
                    "ratio": baseline[part] / measured[part],
                    "note": note,
                }
            )
    rows.append(
        {
            "section": "gocd",
            "measure": f"CPU seconds, {MODELS:,} models, one worker",
            "platform": serial["cpu"],
            "baseline": baseline["cpu"],
            "ratio": baseline["cpu"] / serial["cpu"],
            "note": note,
        }
    )
    return rows
