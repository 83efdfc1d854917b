"""The two pipeline shapes, generated from the catalog, and the files and routing file holding them.

build ``<model>-build`` (git material, runs on every commit, and on its timer when the model has a schedule):
    train -> register -> evaluate
release ``<model>-release-<alias>`` (same material, scheduled by the bridge when the alias moves):
    verify-data -> evaluate -> deploy -> smoke-test -> report
The exec lines are the ones the stage commands document (gocd/README.md, "Stage commands").
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_ext import progress
from mlflow_ext.errors import PipelineError
from mlflow_ext.gocd import emit, names, schedule, validate
from mlflow_ext.gocd.catalog import Alias, Catalog, Model

FORMAT_VERSION = 10
MATERIAL = "code"
SUFFIX = ".gocd.yaml"
BUILD_STAGES = ("train", "register", "evaluate")
RELEASE_STAGES = ("verify-data", "evaluate", "deploy", "smoke-test", "report")


def _exec(command: str, arguments: list[str], directory: str, run_if: str | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {"command": command, "arguments": arguments}
    if directory != ".":
        task["working_directory"] = directory
    if run_if:
        task["run_if"] = run_if
    return {"exec": task}


def _job(model: Model, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    job: dict[str, Any] = {}
    if model.timeout is not None:
        job["timeout"] = model.timeout
    if model.resources:
        job["resources"] = list(model.resources)
    job["tasks"] = tasks
    return job


def _stage(name: str, job: dict[str, Any], approval: dict[str, Any] | None = None) -> dict[str, Any]:
    stage: dict[str, Any] = {}
    if approval:
        stage["approval"] = approval
    stage["jobs"] = {name: job}
    return {name: stage}


def _materials(model: Model) -> dict[str, Any]:
    return {MATERIAL: {"git": model.repository, "branch": model.branch}}


def build_pipeline(model: Model, catalog: Catalog) -> dict[str, Any]:
    """train (the team's entry point, run tags active through GO_* variables), register, evaluate."""
    cwd = model.directory
    variables = dict(model.environment)
    if catalog.tracking_uri:
        variables["MLFLOW_TRACKING_URI"] = catalog.tracking_uri
    evaluate = ["evaluate", "--model", model.name, "--data", model.test_data, "--target", model.target]
    stages = [
        _stage("train", _job(model, [_exec("/bin/sh", ["-c", model.entry_point], cwd)])),
        _stage("register", _job(model, [_exec("mlflow-ext", ["register", "--model", model.name], cwd)])),
        _stage("evaluate", _job(model, [_exec("mlflow-ext", evaluate, cwd)])),
    ]
    pipeline: dict[str, Any] = {
        "group": model.group,
        "label_template": "${COUNT}",
        "lock_behavior": "none",
    }
    if model.timer is not None:
        pipeline["timer"] = {"spec": model.timer.spec, "only_on_changes": model.timer.only_on_changes}
    pipeline["materials"] = _materials(model)
    if variables:
        pipeline["environment_variables"] = dict(sorted(variables.items()))
    pipeline["stages"] = stages
    return pipeline


def release_variables(model: Model, alias: Alias, catalog: Catalog) -> dict[str, str]:
    """Every variable the bridge passes, with defaults for a manual trigger, plus the route's and the
    model's own: GoCD answers 422 to a schedule naming a variable the pipeline does not declare."""
    variables = {
        "MLFLOW_MODEL_NAME": model.name,
        "MLFLOW_MODEL_VERSION": "",
        "MLFLOW_MODEL_ALIAS": alias.name,
        "MLFLOW_RUN_ID": "",
        "MLFLOW_MODEL_URI": "",
        "MLFLOW_TRACKING_URI": catalog.tracking_uri or "",
        **model.environment,
        **alias.variables,
    }
    return dict(sorted(variables.items()))


def release_pipeline(model: Model, alias: Alias, catalog: Catalog) -> dict[str, Any]:
    """verify-data, evaluate, deploy (manual approval for a production alias), smoke-test, report; each job
    ends with a ``run_if: failed`` report of the stage that failed."""
    cwd = model.directory
    deploy = ["deploy", "--target", alias.deploy.target]
    if alias.deploy.port is not None:
        deploy += ["--port", str(alias.deploy.port)]
    commands = {
        "verify-data": ["verify-data", "--data", model.test_data],
        "evaluate": ["evaluate", "--data", model.test_data, "--target", model.target],
        "deploy": deploy,
        "smoke-test": ["smoke-test", "--data", model.test_data],
        "report": ["report", "--status", "deployed"],
    }
    stages = []
    for name in RELEASE_STAGES:
        tasks = [
            _exec("mlflow-ext", commands[name], cwd),
            _exec("mlflow-ext", ["report", "--status", "failed", "--stage", name], cwd, run_if="failed"),
        ]
        approval: dict[str, Any] | None = None
        if name == "verify-data":
            # A manual first stage: the pipeline runs when scheduled (by the bridge or a person), never
            # because the shared git material changed.
            approval = {"type": "manual"}
        elif name == "deploy" and alias.production:
            approval = {"type": "manual", "allow_only_on_success": True}
            if model.approval_roles:
                approval["roles"] = list(model.approval_roles)
            if model.approval_users:
                approval["users"] = list(model.approval_users)
        stages.append(_stage(name, _job(model, tasks), approval))
    return {
        "group": model.group,
        "label_template": "${COUNT}",
        "lock_behavior": "none",
        "materials": _materials(model),
        "environment_variables": release_variables(model, alias, catalog),
        "stages": stages,
    }


def model_pipelines(model: Model, catalog: Catalog) -> dict[str, dict[str, Any]]:
    """The build pipeline and one release pipeline per alias, by name (sorted)."""
    pipelines = {model.build_pipeline: build_pipeline(model, catalog)}
    for alias in model.aliases:
        pipelines[model.release_pipeline(alias)] = release_pipeline(model, alias, catalog)
    return dict(sorted(pipelines.items()))


def files_of(catalog: Catalog, per: str = "model") -> dict[str, list[Model]]:
    """File name -> the models it holds: one file per model, or per team (sorted)."""
    if per not in ("model", "team"):
        raise PipelineError(f"--per must be model or team, not {per!r}")
    files: dict[str, list[Model]] = {}
    for model in catalog.models:
        key = model.gocd_name if per == "model" else model.group
        files.setdefault(f"{key}{SUFFIX}", []).append(model)
    return dict(sorted(files.items()))


def document(models: list[Model], catalog: Catalog) -> dict[str, Any]:
    """One GoCD file: ``format_version`` and the models' pipelines, sorted by name."""
    found: dict[str, dict[str, Any]] = {}
    for model in models:
        found.update(model_pipelines(model, catalog))
    return {"format_version": FORMAT_VERSION, "pipelines": dict(sorted(found.items()))}


def documents(catalog: Catalog, per: str = "model") -> dict[str, dict[str, Any]]:
    """File name -> GoCD document (``format_version`` and ``pipelines``), one file per model or team."""
    return {name: document(models, catalog) for name, models in files_of(catalog, per).items()}


def routes(catalog: Catalog) -> dict[str, Any]:
    """The bridge's routing file: each model and alias (literal fnmatch patterns) to its release pipeline."""
    entries = []
    for model in catalog.models:
        for alias in model.aliases:
            entries.append(
                {
                    "model": names.fnmatch_literal(model.name),
                    "alias": names.fnmatch_literal(alias.name),
                    "pipeline": model.release_pipeline(alias),
                    "variables": dict(alias.variables),
                }
            )
    return {"routes": entries}


def header(catalog: Catalog) -> str:
    source = "the registry" if catalog.source == "registry" else os.path.basename(catalog.source)
    return (
        f"Generated by `mlflow-ext gocd generate` from {source}.\n"
        "Do not edit: change the catalog and generate again (gocd/README.md)."
    )


_RENDERING: dict[str, Any] = {}


def _render_one(name: str) -> tuple[str, str | None, list[Any], dict[str, tuple[str, ...]]]:
    """Build, write and check one file; into the staging folder when there is one (then no text comes
    back). Runs in worker processes for large catalogs."""
    built = document(_RENDERING["files"][name], _RENDERING["catalog"])
    text = emit.dump(built, _RENDERING["header"])
    issues = validate.default_validator().check_document(built, name, text)
    declared = validate.declared_by(built)
    folder = _RENDERING.get("folder")
    if folder is None:
        return name, text, issues, declared
    if not issues:
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    return name, None, issues, declared


def render(catalog: Catalog, per: str = "model") -> dict[str, str]:
    """File name -> file text, validated; PipelineError lists every problem found.

    Large catalogs are written and checked in forked worker processes (validate.parallel_map).
    """
    texts, _declared = _render(catalog, per)
    return {name: text for name, text in texts.items() if text is not None}


def _render(
    catalog: Catalog, per: str, folder: Path | None = None
) -> tuple[dict[str, str | None], dict[str, tuple[str, ...]]]:
    """The files' texts (written into ``folder`` instead, if given), and the variables each pipeline
    declares at pipeline level."""
    files = files_of(catalog, per)
    _RENDERING.update(
        files=files, catalog=catalog, header=header(catalog), folder=str(folder) if folder else None
    )
    label = "gocd generate: writing and checking files" if folder else "gocd: rendering and checking files"
    try:
        with progress.task(label, total=len(files), unit="files") as bar:
            rendered = validate.parallel_map(_render_one, list(files), advance=bar.advance)
    finally:
        _RENDERING.clear()
    issues = [issue for _name, _text, found, _declared in rendered for issue in found]
    results = [validate.FileResult(name, [], declared) for name, _text, _found, declared in rendered]
    issues += validate.cross_check(results)
    if issues:
        raise PipelineError("generated pipelines are invalid:\n" + "\n".join(f"  {i}" for i in issues))
    declared = {name: names for result in results for name, names in result.declared.items()}
    return {name: text for name, text, _found, _declared in rendered}, declared


def render_routes(catalog: Catalog, data: dict[str, Any] | None = None) -> str:
    return emit.dump(data if data is not None else routes(catalog), header(catalog))


# -- atomic output ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    out: str
    files: int
    pipelines: int
    models: int
    routes: str | None
    timers: int = 0
    busiest_hour: str | None = None  # the (day, hour) most timers start in, e.g. "SUN 02:00"
    busiest_hour_starts: int = 0


def _foreign_entries(out: Path) -> list[str]:
    if not out.exists():
        return []
    if not out.is_dir():
        raise PipelineError(f"{out}: exists and is not a directory")
    return sorted(p.name for p in out.iterdir() if not (p.is_file() and p.name.endswith(SUFFIX)))


def write(
    catalog: Catalog, out: str | Path, per: str = "model", routes_file: str | Path | None = None
) -> Written:
    """Render, validate, then replace ``out`` (and ``routes_file``) only once everything is ready.

    ``out`` belongs to the generator: it may hold only ``*.gocd.yaml`` files, and stale ones (models that
    left the catalog) disappear. Files are written into a temporary directory beside ``out`` and renamed
    into place; on any error the previous ``out`` and routing file stay as they were.
    """
    out = Path(out)
    if routes_file is not None and out.resolve() in Path(routes_file).resolve().parents:
        raise PipelineError(
            f"{routes_file}: the routing file cannot live inside --out ({out}), which is replaced"
        )
    foreign = _foreign_entries(out)
    if foreign:
        raise PipelineError(
            f"{out}: refusing to replace a directory holding files the generator did not write: "
            + ", ".join(foreign[:5])
            + (" ..." if len(foreign) > 5 else "")
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    route_tmp: Path | None = None
    try:
        rendered, declared = _render(catalog, per, folder=staging)
        if routes_file is not None:
            route_data = routes(catalog)
            problems = validate.check_routes(route_data, str(routes_file), declared)
            if problems:
                raise PipelineError("routing file is invalid:\n" + "\n".join(f"  {p}" for p in problems))
            routes_path = Path(routes_file)
            routes_path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{routes_path.name}.", dir=routes_path.parent)
            route_tmp = Path(tmp)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(render_routes(catalog, route_data))
            route_tmp.chmod(0o644)
        staging.chmod(0o755)
        _swap_in(staging, out)
        if route_tmp is not None and routes_file is not None:
            os.replace(route_tmp, routes_file)
            route_tmp = None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if route_tmp is not None:
            route_tmp.unlink(missing_ok=True)
    specs = [m.timer.spec for m in catalog.models if m.timer is not None]
    busiest = schedule.busiest_hour(specs)
    return Written(
        out=str(out),
        files=len(rendered),
        pipelines=sum(len(m.aliases) + 1 for m in catalog.models),
        models=len(catalog.models),
        routes=str(routes_file) if routes_file is not None else None,
        timers=len(specs),
        busiest_hour=busiest[0] if busiest else None,
        busiest_hour_starts=busiest[1] if busiest else 0,
    )


def _swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` with renames; the old directory is removed only after the swap."""
    if not out.exists():
        os.rename(staging, out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    retired.rmdir()
    os.rename(out, retired)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(retired, out)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def check(catalog: Catalog, out: str | Path, per: str = "model") -> list[str]:
    """Files under ``out`` that differ from what the catalog generates (missing, stale or changed)."""
    out = Path(out)
    rendered = render(catalog, per)
    present = {p.name for p in out.glob(f"*{SUFFIX}")} if out.is_dir() else set()
    drift = []
    for name in sorted(set(rendered) | present):
        if name not in present:
            drift.append(f"{out / name}: missing")
        elif name not in rendered:
            drift.append(f"{out / name}: stale (no model generates it)")
        elif (out / name).read_text(encoding="utf-8") != rendered[name]:
            drift.append(f"{out / name}: differs from the catalog")
    return drift
