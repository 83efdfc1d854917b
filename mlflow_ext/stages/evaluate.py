"""`evaluate`: score the candidate version on the test data, next to the version it would replace.

Predictions come from the registered model through pyfunc (``models:/<name>/<version>``); metrics are
computed here with numpy and pandas, so mlflow_ext needs no scikit-learn. Classifiers get accuracy,
macro precision, recall and F1 and a confusion matrix; regressors RMSE, MAE and R².

The baseline is the version the candidate replaces: in a release pipeline the alias already points at
the candidate, so it is the candidate's ``promotion.from_version`` tag (set by ``mlflow-ext promote``
when ``promotion.alias`` names the alias being released); ``--baseline`` overrides it.

Everything lands in one evaluation run, in the experiment of the candidate's training run:
tags ``evaluation.model``, ``evaluation.version``, ``evaluation.baseline_version``, ``evaluation.alias``,
``evaluation.task``, ``evaluation.status``; metrics ``<metric>`` (candidate), ``baseline_<metric>`` and
``delta_<metric>``; artifacts ``evaluation/report.md``, ``evaluation/report.json``,
``evaluation/confusion_matrix.csv`` and ``evaluation/baseline_confusion_matrix.csv``; the data through
log_data with role ``evaluation``. The candidate version gets ``evaluation.run_id``,
``evaluation.status``, ``evaluation.baseline_version`` and ``evaluation.summary``.
With ``max_drop`` set, a candidate worse than the baseline by more than that on the primary metric
(accuracy, or RMSE for regressors) fails with StageFailed, after everything has been logged.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow_ext import lineage
from mlflow_ext.data import log_data
from mlflow_ext.errors import StageFailed
from mlflow_ext.lineage import PROMOTION_ACTION, PROMOTION_ALIAS, PROMOTION_FROM_VERSION
from mlflow_ext.stages.common import get_version, loaded_model, mlflow_message, version_run_id

# Read back by `mlflow-ext inspect` (mlflow_ext.lineage), where the keys live.
TAG_MODEL = lineage.EVALUATION_MODEL
TAG_VERSION = lineage.EVALUATION_VERSION
TAG_BASELINE = lineage.EVALUATION_BASELINE
TAG_ALIAS = lineage.EVALUATION_ALIAS
TAG_TASK = lineage.EVALUATION_TASK
TAG_STATUS = lineage.EVALUATION_STATUS
TAG_RUN_ID = lineage.EVALUATION_RUN_ID
TAG_SUMMARY = lineage.EVALUATION_SUMMARY

PRIMARY = {"classification": ("accuracy", True), "regression": ("rmse", False)}  # metric, higher is better
_MAX_CLASSES = 20


@dataclass
class Score:
    version: str
    metrics: dict[str, float]
    labels: list[str] = field(default_factory=list)
    matrix: list[list[int]] = field(default_factory=list)  # rows: true label, columns: predicted


@dataclass
class Evaluation:
    model: str
    version: str
    task: str
    target: str
    data: str
    rows: int
    candidate: Score
    baseline: Score | None
    baseline_version: str | None
    notes: list[str]
    status: str = "passed"
    run_id: str | None = None
    experiment_id: str | None = None
    max_drop: float | None = None

    @property
    def primary(self) -> str:
        return PRIMARY[self.task][0]

    def delta(self, metric: str) -> float | None:
        if self.baseline is None or metric not in self.baseline.metrics:
            return None
        return self.candidate.metrics[metric] - self.baseline.metrics[metric]

    def summary(self) -> str:
        value = self.candidate.metrics[self.primary]
        text = f"{self.primary}={value:.4g}"
        if self.baseline is not None and self.primary in self.baseline.metrics:
            text += f" (v{self.baseline.version}: {self.baseline.metrics[self.primary]:.4g})"
        return text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["primary"] = self.primary
        data["deltas"] = {
            metric: delta for metric in self.candidate.metrics if (delta := self.delta(metric)) is not None
        }
        return data


# --- data and predictions ---


def load_table(path: str) -> Any:
    """A CSV or Parquet file (or a folder of them) as one pandas DataFrame."""
    import pandas as pd

    def read(file: str) -> Any:
        if file.lower().endswith((".parquet", ".pq")):
            return pd.read_parquet(file)
        return pd.read_csv(file)

    try:
        if os.path.isdir(path):
            files = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.lower().endswith((".csv", ".parquet", ".pq")) and not name.startswith(("_", "."))
            )
            if not files:
                raise StageFailed(f"{path}: no CSV or Parquet files in this folder")
            return pd.concat([read(file) for file in files], ignore_index=True)
        return read(path)
    except FileNotFoundError:
        raise StageFailed(f"test data {path}: no such file or folder") from None
    except (OSError, ValueError) as exc:
        raise StageFailed(f"test data {path}: cannot read it as a table: {exc}") from None


def split_target(frame: Any, target: str, path: str) -> tuple[Any, Any]:
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise StageFailed(f"test data {path} has no target column {target!r} (columns: {columns})")
    if len(frame) == 0:
        raise StageFailed(f"test data {path} has no rows")
    return frame.drop(columns=[target]), frame[target]


def input_columns(model: Any) -> list[str] | None:
    """Names of the model's input columns when its signature names them."""
    signature = getattr(getattr(model, "metadata", None), "signature", None)
    inputs = getattr(signature, "inputs", None)
    if inputs is None or not getattr(inputs, "has_input_names", lambda: False)():
        return None
    return list(inputs.input_names())


def predict(model: Any, features: Any, what: str) -> Any:
    """One prediction per row as a 1-d numpy array; StageFailed naming ``what`` otherwise."""
    import numpy as np
    import pandas as pd

    columns = input_columns(model)
    if columns is not None:
        missing = [column for column in columns if column not in features.columns]
        if missing:
            raise StageFailed(f"{what}: the data lacks input column(s) {', '.join(missing)}")
        features = features[columns]
    try:
        output = model.predict(features)
    except Exception as exc:
        raise StageFailed(f"{what}: prediction failed: {type(exc).__name__}: {exc}") from None
    if isinstance(output, pd.DataFrame):
        if output.shape[1] != 1:
            raise StageFailed(f"{what}: predicted {output.shape[1]} columns per row, expected one")
        output = output.iloc[:, 0]
    values = np.asarray(output)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or len(values) != len(features):
        raise StageFailed(f"{what}: predictions of shape {values.shape} for {len(features)} rows")
    return values


def task_of(target: Any) -> str:
    """classification for labels (text, booleans, a few whole numbers), regression for measurements."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(target) or not pd.api.types.is_numeric_dtype(target):
        return "classification"
    values = target.dropna()
    if pd.api.types.is_float_dtype(values) and not (values == values.round()).all():
        return "regression"
    return "regression" if values.nunique() > _MAX_CLASSES else "classification"


# --- metrics ---


def _same_kind(truth: Any, predicted: Any) -> tuple[Any, Any]:
    import numpy as np

    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.dtype.kind in "biuf" and predicted.dtype.kind in "biuf":
        return truth, predicted
    return truth.astype(str), predicted.astype(str)


def classification_metrics(truth: Any, predicted: Any, version: str) -> Score:
    import numpy as np

    truth, predicted = _same_kind(truth, predicted)
    labels = sorted(set(truth.tolist()) | set(predicted.tolist()), key=str)
    index = {label: position for position, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for true_label, predicted_label in zip(truth.tolist(), predicted.tolist(), strict=True):
        matrix[index[true_label], index[predicted_label]] += 1
    hits = np.diag(matrix).astype(float)
    predicted_counts = matrix.sum(axis=0).astype(float)
    true_counts = matrix.sum(axis=1).astype(float)
    present = true_counts > 0  # macro averages over the classes in the data, as scikit-learn's labels=
    precision = np.divide(hits, predicted_counts, out=np.zeros_like(hits), where=predicted_counts > 0)
    recall = np.divide(hits, true_counts, out=np.zeros_like(hits), where=true_counts > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    metrics = {
        "accuracy": float(hits.sum() / matrix.sum()),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "f1_macro": float(f1[present].mean()),
    }
    return Score(version, metrics, [str(label) for label in labels], matrix.tolist())


def regression_metrics(truth: Any, predicted: Any, version: str) -> Score:
    import numpy as np

    truth = np.asarray(truth, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    errors = predicted - truth
    spread = float(((truth - truth.mean()) ** 2).sum())
    metrics = {
        "rmse": float(math.sqrt((errors**2).mean())),
        "mae": float(np.abs(errors).mean()),
        "r2": float(1 - (errors**2).sum() / spread) if spread > 0 else 0.0,
    }
    return Score(version, metrics)


def score(task: str, truth: Any, predicted: Any, version: str) -> Score:
    if task == "classification":
        return classification_metrics(truth, predicted, version)
    try:
        return regression_metrics(truth, predicted, version)
    except (TypeError, ValueError):
        raise StageFailed(
            f"version {version}: predictions are not numbers; use --task classification"
        ) from None


# --- report ---


def _matrix_csv(result: Score) -> str:
    lines = ["true\\predicted," + ",".join(result.labels)]
    lines += [
        f"{label}," + ",".join(map(str, row)) for label, row in zip(result.labels, result.matrix, strict=True)
    ]
    return "\n".join(lines) + "\n"


def _matrix_markdown(result: Score) -> list[str]:
    header = "| true \\ predicted | " + " | ".join(result.labels) + " |"
    rule = "|---|" + "---|" * len(result.labels)
    rows = [
        f"| {label} | " + " | ".join(map(str, row)) + " |"
        for label, row in zip(result.labels, result.matrix, strict=True)
    ]
    return [header, rule, *rows]


def render_report(evaluation: Evaluation) -> str:
    e = evaluation
    lines = [
        f"# Evaluation of {e.model} version {e.version}",
        "",
        f"- data: `{e.data}` ({e.rows} rows), target `{e.target}`, task {e.task}",
        f"- baseline: {f'version {e.baseline_version}' if e.baseline_version else 'none'}",
        f"- status: **{e.status}**"
        + (f" (max drop of {e.primary}: {e.max_drop})" if e.max_drop is not None else ""),
        "",
    ]
    header = f"| metric | v{e.version} |"
    rule = "|---|---|"
    if e.baseline is not None:
        header += f" v{e.baseline.version} | delta |"
        rule += "---|---|"
    lines += [header, rule]
    for metric, value in e.candidate.metrics.items():
        row = f"| {metric} | {value:.4f} |"
        if e.baseline is not None:
            base = e.baseline.metrics.get(metric)
            delta = e.delta(metric)
            row += f" {'' if base is None else f'{base:.4f}'} | {'' if delta is None else f'{delta:+.4f}'} |"
        lines.append(row)
    for result in (e.candidate, e.baseline):
        if result is not None and result.matrix:
            lines += ["", f"## Confusion matrix, version {result.version}", "", *_matrix_markdown(result)]
    if e.notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in e.notes]]
    return "\n".join(lines) + "\n"


# --- the stage ---


def baseline_version(version: Any, alias: str | None, explicit: str | None, notes: list[str]) -> str | None:
    """``explicit`` (``none`` for no comparison), else the candidate's promotion.from_version when the
    promotion it records is the one of ``alias`` (or names no alias)."""
    if explicit is not None:
        return None if explicit.lower() == "none" else explicit
    tags = version.tags or {}
    previous = tags.get(PROMOTION_FROM_VERSION) or None
    promoted_to = tags.get(PROMOTION_ALIAS) or None
    if previous is None:
        if alias:
            notes.append(
                f"version {version.version} records no {PROMOTION_FROM_VERSION}: nothing to compare with"
            )
        return None
    if alias and promoted_to and promoted_to != alias:
        notes.append(
            f"{PROMOTION_FROM_VERSION}={previous} belongs to a promotion to @{promoted_to}, not @{alias}: "
            "no baseline"
        )
        return None
    if previous == str(version.version):
        return None
    return previous


def evaluate(
    client: Any,
    version: Any,
    data: str,
    target: str,
    *,
    alias: str | None = None,
    baseline: str | None = None,
    task: str = "auto",
    max_drop: float | None = None,
    experiment: str | None = None,
) -> Evaluation:
    """Score ``version`` (and its baseline) on ``data``, log the evaluation run, tag the version."""
    import mlflow

    name, number = version.name, str(version.version)
    frame = load_table(data)
    features, truth = split_target(frame, target, data)
    task = task_of(truth) if task == "auto" else task
    notes: list[str] = []

    def load_and_score(which: str) -> Score:
        uri = f"models:/{name}/{which}"
        with contextlib.ExitStack() as stack:
            try:
                model = stack.enter_context(loaded_model(uri))
            except Exception as exc:
                raise StageFailed(f"cannot load {uri}: {mlflow_message(exc)}") from None
            return score(task, truth, predict(model, features, f"version {which} of {name}"), which)

    candidate = load_and_score(number)
    previous = baseline_version(version, alias, baseline, notes)
    base_score = None
    if previous is not None:
        try:
            get_version(client, name, previous)
            base_score = load_and_score(previous)
        except StageFailed as exc:
            if baseline is not None:
                raise
            notes.append(f"baseline version {previous} not scored: {exc}")
    evaluation = Evaluation(
        model=name,
        version=number,
        task=task,
        target=target,
        data=data,
        rows=len(frame),
        candidate=candidate,
        baseline=base_score,
        baseline_version=previous,
        notes=notes,
        max_drop=max_drop,
    )
    primary, higher_is_better = PRIMARY[task]
    delta = evaluation.delta(primary)
    # A rollback goes back on purpose, usually to a weaker version: report the drop, never fail on it.
    rollback = baseline is None and (version.tags or {}).get(PROMOTION_ACTION) == "rollback"
    if max_drop is not None and delta is not None:
        drop = -delta if higher_is_better else delta
        if drop > max_drop and rollback:
            notes.append(f"{primary} is worse than version {previous} by {drop:.4g}; allowed for a rollback")
        elif drop > max_drop:
            evaluation.status = "failed"
            notes.append(f"{primary} is worse than version {previous} by {drop:.4g}, more than {max_drop}")

    experiment_id = _experiment_id(client, version, experiment)
    tags = {TAG_MODEL: name, TAG_VERSION: number, TAG_TASK: task, TAG_STATUS: evaluation.status}
    if previous:
        tags[TAG_BASELINE] = previous
    if alias:
        tags[TAG_ALIAS] = alias
    # MLflow prints links to the run on stdout when it ends; stdout belongs to --output json.
    with (
        contextlib.redirect_stdout(sys.stderr),
        _new_run(experiment_id=experiment_id, run_name=f"evaluate {name} v{number}", tags=tags) as run,
    ):
        evaluation.run_id, evaluation.experiment_id = run.info.run_id, experiment_id
        mlflow.log_params({"data": data, "target": target, "rows": len(frame)})
        metrics = dict(candidate.metrics)
        if base_score is not None:
            metrics |= {f"baseline_{key}": value for key, value in base_score.metrics.items()}
            metrics |= {
                f"delta_{key}": value
                for key in candidate.metrics
                if (value := evaluation.delta(key)) is not None
            }
        mlflow.log_metrics(metrics)
        log_data(data, role="evaluation")
        with tempfile.TemporaryDirectory(prefix="mlflow-ext-evaluate-") as tmp:
            files = {
                "report.md": render_report(evaluation),
                "report.json": json.dumps(evaluation.to_dict(), indent=2, sort_keys=True) + "\n",
            }
            if candidate.matrix:
                files["confusion_matrix.csv"] = _matrix_csv(candidate)
            if base_score is not None and base_score.matrix:
                files["baseline_confusion_matrix.csv"] = _matrix_csv(base_score)
            for file_name, text in files.items():
                with open(os.path.join(tmp, file_name), "w", encoding="utf-8") as handle:
                    handle.write(text)
            mlflow.log_artifacts(tmp, "evaluation")
    for key, value in {
        TAG_RUN_ID: run.info.run_id,
        TAG_STATUS: evaluation.status,
        TAG_SUMMARY: evaluation.summary(),
        **({TAG_BASELINE: previous} if previous else {}),
    }.items():
        client.set_model_version_tag(name, number, key, value)
    if evaluation.status == "failed":
        raise StageFailed(
            f"version {number} of {name} fails evaluation: {notes[-1]} (evaluation run {run.info.run_id})"
        )
    return evaluation


@contextlib.contextmanager
def _new_run(**kwargs: Any) -> Iterator[Any]:
    """A new run, always. ``mlflow.start_run`` resumes the run named by MLFLOW_RUN_ID, and the bridge
    passes the training run's id under that name: the evaluation would land on the training run."""
    import mlflow

    saved = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        with mlflow.start_run(**kwargs) as run:
            yield run
    finally:
        if saved is not None:
            os.environ["MLFLOW_RUN_ID"] = saved


def _experiment_id(client: Any, version: Any, experiment: str | None) -> str:
    if experiment:
        found = client.get_experiment_by_name(experiment)
        return str(found.experiment_id if found else client.create_experiment(experiment))
    return str(client.get_run(version_run_id(client, version)).info.experiment_id)
