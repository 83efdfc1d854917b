"""`register`: make the model a build pipeline instance trained a new version of the registered model.

The train stage runs the team's entry point with the lineage run tags active, so its run carries
``lineage.ci.pipeline`` and ``lineage.ci.counter`` (GO_PIPELINE_NAME, GO_PIPELINE_COUNTER). This stage
finds the newest finished run of that pipeline instance that logged a model and registers the model,
tagging the version ``build.pipeline``, ``build.counter`` (and ``build.url`` when GoCD's URL is known).
Running it again for the same instance returns the same version instead of adding another one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from mlflow_ext import run_context as keys
from mlflow_ext.errors import ConfigError, StageFailed
from mlflow_ext.stages.common import BUILD_COUNTER, BUILD_PIPELINE, BUILD_URL, mlflow_message, quoted

# Runs of other stages carry the same lineage.ci tags; an evaluation run is never a candidate.
EVALUATION_TAG = "evaluation.model"
_CHUNK = 100  # experiment ids per search request


@dataclass(frozen=True)
class Registered:
    model: str
    version: str
    run_id: str
    model_id: str | None
    source: str
    pipeline: str
    counter: str
    changed: bool

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uri": self.uri}


def _experiment_ids(client: Any, names: tuple[str, ...]) -> list[str]:
    if names:
        ids = []
        for name in names:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise ConfigError(f"no experiment named {name!r}")
            ids.append(str(experiment.experiment_id))
        return ids
    found: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        found.extend(str(experiment.experiment_id) for experiment in page)
        token = page.token
        if not token:
            return found


def _runs(client: Any, experiment_ids: list[str], pipeline: str, counter: str) -> Iterator[Any]:
    query = (
        f"tags.`{keys.CI_PIPELINE}` = {quoted(pipeline, 'pipeline')} "
        f"AND tags.`{keys.CI_COUNTER}` = {quoted(counter, 'pipeline counter')} "
        "AND attributes.status = 'FINISHED'"
    )
    for start in range(0, len(experiment_ids), _CHUNK):
        token = None
        while True:
            page = client.search_runs(
                experiment_ids[start : start + _CHUNK],
                filter_string=query,
                max_results=1000,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                break


def _logged_models(client: Any, run: Any) -> list[Any]:
    outputs = getattr(run, "outputs", None)
    ids = [output.model_id for output in getattr(outputs, "model_outputs", None) or []]
    return [client.get_logged_model(model_id) for model_id in dict.fromkeys(ids)]


def find_build_run(
    client: Any, pipeline: str, counter: str, experiments: tuple[str, ...] = ()
) -> tuple[Any, list[Any]]:
    """The newest finished run of this pipeline instance that logged a model, and its logged models."""
    runs = sorted(
        (
            run
            for run in _runs(client, _experiment_ids(client, experiments), pipeline, counter)
            if EVALUATION_TAG not in run.data.tags
        ),
        key=lambda run: run.info.start_time or 0,
        reverse=True,
    )
    for run in runs:
        models = _logged_models(client, run)
        if models:
            return run, models
    where = f" in experiment(s) {', '.join(experiments)}" if experiments else ""
    if runs:
        raise StageFailed(
            f"pipeline {pipeline} #{counter} logged {len(runs)} finished run(s){where} but no model: "
            "the entry point must log one (e.g. mlflow.sklearn.log_model)"
        )
    raise StageFailed(
        f"no finished run{where} carries {keys.CI_PIPELINE}={pipeline} and {keys.CI_COUNTER}={counter}: "
        "did the train stage run with mlflow-ext installed and MLFLOW_EXT_RUN_TAGS including ci?"
    )


def _pick(models: list[Any], run_id: str, artifact: str | None) -> Any:
    if artifact:
        chosen = [model for model in models if model.name == artifact]
        if not chosen:
            names = ", ".join(sorted(model.name for model in models))
            raise StageFailed(f"run {run_id} logged no model named {artifact!r} (it logged: {names})")
        return chosen[-1]
    if len({model.name for model in models}) > 1:
        names = ", ".join(sorted({model.name for model in models}))
        raise StageFailed(f"run {run_id} logged several models ({names}): choose one with --logged-model")
    return models[-1]


def register(
    client: Any,
    model: str,
    pipeline: str,
    counter: str,
    *,
    experiments: tuple[str, ...] = (),
    logged_model: str | None = None,
    description: str | None = None,
) -> Registered:
    """Register the model pipeline instance ``pipeline``/``counter`` logged as a version of ``model``."""
    from mlflow.exceptions import MlflowException

    run, models = find_build_run(client, pipeline, counter, experiments)
    chosen = _pick(models, run.info.run_id, logged_model)
    model_id = str(chosen.model_id)
    try:
        existing = [
            version
            for version in client.search_model_versions(
                f"name = {quoted(model, 'model name')} AND run_id = '{run.info.run_id}'"
            )
            if (getattr(version, "model_id", None) or model_id) == model_id
        ]
        if existing:
            version = max(existing, key=lambda v: int(v.version))
            return Registered(
                model,
                str(version.version),
                run.info.run_id,
                model_id,
                version.source,
                pipeline,
                counter,
                False,
            )
        try:
            client.create_registered_model(model)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        tags = {BUILD_PIPELINE: pipeline, BUILD_COUNTER: counter}
        url = run.data.tags.get(keys.CI_URL)
        if url:
            tags[BUILD_URL] = url
        source = f"models:/{model_id}"
        version = client.create_model_version(
            model,
            source=source,
            run_id=run.info.run_id,
            tags=tags,
            model_id=model_id,
            description=description,
        )
    except MlflowException as exc:
        raise StageFailed(
            f"cannot register run {run.info.run_id}'s model as {model}: {mlflow_message(exc)}"
        ) from None
    return Registered(model, str(version.version), run.info.run_id, model_id, source, pipeline, counter, True)
