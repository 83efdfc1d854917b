"""Where a model version came from and what happened to it since, in one place: run, parameters,
metrics, data, code, environment, the GoCD pipeline that built it, who registered and who promoted it
(and why), its evaluation against the alias's previous holder, the release that deployed it and the
runs that reproduced it.

``collect`` reads the registry and the run (the ``lineage.*`` tags that mlflow_ext.run_context and
mlflow_ext.data set, MLflow's own ``mlflow.source.*`` tags as a fallback) into a :class:`Lineage`;
``render_table`` and ``render_json`` show it. The tags other parts of the platform leave are read
here, and their keys defined here, so that the writers and this reader share one name:

- ``promotion.*`` on the version: ``mlflow-ext promote``/``rollback`` and the auth app (policy.audit);
- ``evaluation.*`` on the version and on the evaluation run: ``mlflow-ext evaluate``;
- ``gocd.*`` on the version: the bridge, once GoCD scheduled the release (bridge.feedback);
- ``deploy.*`` on the version: ``mlflow-ext deploy`` (target, name, endpoint) and ``mlflow-ext
  report`` (status, time, pipeline and counter of the job);
- ``reproduction.of`` and ``reproduction.status`` on runs: ``mlflow-ext reproduce``.

Who registered a version is MLflow's ``user_id`` of the version, which MLflow's server leaves empty:
the mlflow-ext-auth app fills it with the authenticated user when the version is created
(mlflow_ext.auth.registrant).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow_ext import run_context as keys
from mlflow_ext.data import tag_name
from mlflow_ext.errors import LineageError, LineageNotFound, ModelURIError

# Model-version tags the promotion workflow sets; shown as MISSING until it has run.
PROMOTION_BY = "promotion.by"
PROMOTION_AT = "promotion.at"
PROMOTION_FROM_VERSION = "promotion.from_version"
PROMOTION_REASON = "promotion.reason"
PROMOTION_ALIAS = "promotion.alias"
PROMOTION_ACTION = "promotion.action"  # promote or rollback

# Evaluation: tags `mlflow-ext evaluate` sets on the version (run id, status, baseline, summary) and on
# its run (model, version, baseline, alias, task, status); the run's metrics are the candidate's
# (<metric>), the baseline's (baseline_<metric>) and the difference (delta_<metric>).
EVALUATION_MODEL = "evaluation.model"
EVALUATION_VERSION = "evaluation.version"
EVALUATION_BASELINE = "evaluation.baseline_version"
EVALUATION_ALIAS = "evaluation.alias"
EVALUATION_TASK = "evaluation.task"
EVALUATION_STATUS = "evaluation.status"
EVALUATION_RUN_ID = "evaluation.run_id"
EVALUATION_SUMMARY = "evaluation.summary"
BASELINE_PREFIX = "baseline_"
DELTA_PREFIX = "delta_"

# The GoCD run the bridge scheduled for the version (bridge.feedback).
GOCD_PIPELINE = "gocd.pipeline"
GOCD_COUNTER = "gocd.counter"
GOCD_URL = "gocd.url"
GOCD_SCHEDULED_AT = "gocd.scheduled_at"

# The deployment: where (`mlflow-ext deploy`) and its outcome (`mlflow-ext report`).
DEPLOY_TARGET = "deploy.target"
DEPLOY_NAME = "deploy.name"
DEPLOY_ENDPOINT = "deploy.endpoint"
DEPLOY_STATUS = "deploy.status"
DEPLOY_AT = "deploy.at"
DEPLOY_MESSAGE = "deploy.message"
DEPLOY_STAGE = "deploy.stage"
DEPLOY_PIPELINE = "deploy.pipeline"
DEPLOY_COUNTER = "deploy.counter"
DEPLOY_URL = "deploy.url"
DEPLOY_ALIAS = "deploy.alias"

# Runs of `mlflow-ext reproduce`: which run they train again, and the verdict.
REPRODUCTION_OF = "reproduction.of"
REPRODUCTION_STATUS = "reproduction.status"
MAX_REPRODUCTIONS = 20  # the newest ones; more are rare and the table shows three

MISSING = "—"

# MLflow's own tags, used when the lineage.* ones are absent (runs logged without mlflow_ext).
_MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
_MLFLOW_GIT_BRANCH = "mlflow.source.git.branch"
_MLFLOW_GIT_REPO = "mlflow.source.git.repoURL"
_MLFLOW_SOURCE_NAME = "mlflow.source.name"
_MLFLOW_USER = "mlflow.user"
_MLFLOW_RUN_NAME = "mlflow.runName"
_DATA_CONTEXT = "mlflow.data.context"

_MODEL_ALIAS = re.compile(r"^models:/([^/@]+)@([^/@]+)/?$")
_MODEL_VERSION = re.compile(r"^models:/([^/@]+)/(\d+)/?$")
_RUN = re.compile(r"^runs:/([0-9a-zA-Z_-]+)(/.*)?$")
URI_FORMS = "models:/<name>@<alias>, models:/<name>/<version> or runs:/<run_id>"


@dataclass(frozen=True)
class Target:
    """A parsed URI: a registered model version (by version or alias), or a run."""

    uri: str
    model: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None


def parse_uri(uri: str) -> Target:
    """Raises ModelURIError unless ``uri`` is one of URI_FORMS."""
    text = uri.strip()
    if match := _MODEL_ALIAS.match(text):
        return Target(text, model=match[1], alias=match[2])
    if match := _MODEL_VERSION.match(text):
        return Target(text, model=match[1], version=match[2])
    if match := _RUN.match(text):
        return Target(text, run_id=match[1])
    raise ModelURIError(f"malformed model URI {uri!r}: expected {URI_FORMS}")


@dataclass
class ModelInfo:
    name: str
    version: str
    aliases: list[str]
    status: str | None
    source: str | None
    registered_at: str | None
    registered_by: str | None
    description: str | None


@dataclass
class PromotionInfo:
    by: str | None = None
    at: str | None = None
    from_version: str | None = None
    reason: str | None = None
    alias: str | None = None
    action: str | None = None


@dataclass
class EvaluationInfo:
    """The version's last evaluation run: its metrics, the baseline's and the differences."""

    run_id: str
    status: str | None = None
    alias: str | None = None
    baseline_version: str | None = None
    summary: str | None = None
    task: str | None = None
    at: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    deltas: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # the run could not be read (deleted, no permission)


@dataclass
class DeploymentInfo:
    """The release of the version: the GoCD run the bridge scheduled, where it was deployed, the outcome."""

    gocd_pipeline: str | None = None
    gocd_counter: str | None = None
    gocd_url: str | None = None
    gocd_scheduled_at: str | None = None
    target: str | None = None
    name: str | None = None
    endpoint: str | None = None
    status: str | None = None
    at: str | None = None
    message: str | None = None
    stage: str | None = None
    pipeline: str | None = None
    counter: str | None = None
    url: str | None = None
    alias: str | None = None


@dataclass
class ReproductionInfo:
    run_id: str
    status: str | None
    run_status: str
    started_at: str | None
    user: str | None


@dataclass
class RunInfo:
    id: str
    name: str | None
    experiment_id: str
    experiment_name: str | None
    status: str
    user: str | None
    started_at: str | None
    ended_at: str | None
    entry_point: str | None


@dataclass
class DatasetInfo:
    name: str
    role: str | None
    fingerprint: str | None
    digest: str | None
    source: str | None
    files: int | None = None
    bytes: int | None = None
    format: str | None = None
    rows: int | None = None
    schema: str | None = None


@dataclass
class CodeInfo:
    commit: str | None = None
    branch: str | None = None
    remote_url: str | None = None
    dirty: bool | None = None
    diff: str | None = None


@dataclass
class EnvironmentInfo:
    python: str | None = None
    mlflow: str | None = None
    platform: str | None = None
    hash: str | None = None
    listing: str | None = None
    libraries: dict[str, str] = field(default_factory=dict)


@dataclass
class CIInfo:
    system: str | None = None
    pipeline: str | None = None
    counter: str | None = None
    label: str | None = None
    stage: str | None = None
    stage_counter: str | None = None
    job: str | None = None
    trigger_user: str | None = None
    url: str | None = None
    revisions: dict[str, str] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)


@dataclass
class Lineage:
    """Everything ``inspect`` shows. ``model``, ``promotion``, ``evaluation`` and ``deployment`` are
    None for a ``runs:/`` URI; ``evaluation`` also when the version was never evaluated."""

    uri: str
    model: ModelInfo | None
    promotion: PromotionInfo | None
    run: RunInfo | None
    evaluation: EvaluationInfo | None = None
    deployment: DeploymentInfo | None = None
    reproductions: list[ReproductionInfo] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    datasets: list[DatasetInfo] = field(default_factory=list)
    code: CodeInfo = field(default_factory=CodeInfo)
    environment: EnvironmentInfo = field(default_factory=EnvironmentInfo)
    ci: CIInfo = field(default_factory=CIInfo)
    host: str | None = None
    host_user: str | None = None
    notebook: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(millis: int | None) -> str | None:
    if not millis:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _mlflow_error(uri: str, exc: Exception) -> LineageError:
    code = getattr(exc, "error_code", "")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return LineageNotFound(f"{uri}: not found")
    message = getattr(exc, "message", None) or str(exc)
    return LineageError(f"{uri}: {message.splitlines()[0] if message else type(exc).__name__}")


def collect(uri: str, *, client: Any | None = None, tracking_uri: str | None = None) -> Lineage:
    """Read the lineage of a model version (``models:/``) or a run (``runs:/``).

    Raises ModelURIError for a malformed URI and LineageError when the server has nothing under it
    or refuses to answer.
    """
    target = parse_uri(uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient(tracking_uri=tracking_uri)
    tags: Mapping[str, str] = {}
    try:
        model, promotion, run_id = None, None, target.run_id
        if target.model is not None:
            if target.alias is not None:
                version = client.get_model_version_by_alias(target.model, target.alias)
            else:
                version = client.get_model_version(target.model, str(target.version))
            model = ModelInfo(
                name=version.name,
                version=str(version.version),
                aliases=sorted(version.aliases or []),
                status=version.status,
                source=version.source,
                registered_at=_iso(version.creation_timestamp),
                registered_by=version.user_id or None,
                description=version.description or None,
            )
            tags = version.tags or {}
            promotion = PromotionInfo(
                by=tags.get(PROMOTION_BY),
                at=tags.get(PROMOTION_AT),
                from_version=tags.get(PROMOTION_FROM_VERSION),
                reason=tags.get(PROMOTION_REASON),
                alias=tags.get(PROMOTION_ALIAS),
                action=tags.get(PROMOTION_ACTION),
            )
            run_id = version.run_id or None
            model_id = getattr(version, "model_id", None)
            if not run_id and model_id:  # MLflow 3: through the logged model
                run_id = client.get_logged_model(str(model_id)).source_run_id
        lineage = Lineage(uri=target.uri, model=model, promotion=promotion, run=None)
        if model is not None:
            lineage.deployment = _deployment(tags)
            lineage.evaluation = _evaluation(client, tags)
        if run_id:
            _add_run(lineage, client, run_id)
            lineage.reproductions = _reproductions(client, lineage)
        return lineage
    except MlflowException as exc:
        raise _mlflow_error(target.uri, exc) from None


def _add_run(lineage: Lineage, client: Any, run_id: str) -> None:
    run = client.get_run(run_id)
    tags: Mapping[str, str] = run.data.tags
    try:
        experiment_name = client.get_experiment(run.info.experiment_id).name
    except Exception:  # a user may read a run but not its experiment
        experiment_name = None
    lineage.run = RunInfo(
        id=run.info.run_id,
        name=run.info.run_name or tags.get(_MLFLOW_RUN_NAME),
        experiment_id=run.info.experiment_id,
        experiment_name=experiment_name,
        status=run.info.status,
        user=tags.get(_MLFLOW_USER) or run.info.user_id or None,
        started_at=_iso(run.info.start_time),
        ended_at=_iso(run.info.end_time),
        entry_point=tags.get(_MLFLOW_SOURCE_NAME),
    )
    lineage.params = dict(sorted(run.data.params.items()))
    lineage.metrics = dict(sorted(run.data.metrics.items()))
    lineage.datasets = _datasets(run, tags)
    dirty = tags.get(keys.CODE_DIRTY)
    lineage.code = CodeInfo(
        commit=tags.get(keys.CODE_COMMIT) or tags.get(_MLFLOW_GIT_COMMIT),
        branch=tags.get(keys.CODE_BRANCH) or tags.get(_MLFLOW_GIT_BRANCH),
        remote_url=tags.get(keys.CODE_REMOTE_URL) or tags.get(_MLFLOW_GIT_REPO),
        dirty=None if dirty is None else dirty == "true",
        diff=f"runs:/{run_id}/{tags[keys.CODE_DIFF]}" if keys.CODE_DIFF in tags else None,
    )
    lineage.environment = EnvironmentInfo(
        python=tags.get(keys.ENV_PYTHON),
        mlflow=tags.get(keys.ENV_MLFLOW),
        platform=tags.get(keys.ENV_PLATFORM),
        hash=tags.get(keys.ENV_HASH),
        listing=tags.get(keys.ENV_LISTING),
        libraries={
            key[len(keys.ENV_LIB_PREFIX) :]: value
            for key, value in sorted(tags.items())
            if key.startswith(keys.ENV_LIB_PREFIX)
        },
    )
    lineage.ci = CIInfo(
        system=tags.get(keys.CI_SYSTEM),
        pipeline=tags.get(keys.CI_PIPELINE),
        counter=tags.get(keys.CI_COUNTER),
        label=tags.get(keys.CI_LABEL),
        stage=tags.get(keys.CI_STAGE),
        stage_counter=tags.get(keys.CI_STAGE_COUNTER),
        job=tags.get(keys.CI_JOB),
        trigger_user=tags.get(keys.CI_TRIGGER_USER),
        url=tags.get(keys.CI_URL),
        revisions=_prefixed(tags, keys.CI_REVISION_PREFIX, keys.CI_REVISION),
        upstream=_prefixed(tags, keys.CI_UPSTREAM_PREFIX),
    )
    lineage.host = tags.get(keys.HOST_NAME)
    lineage.host_user = tags.get(keys.HOST_USER)
    lineage.notebook = tags.get(keys.NOTEBOOK_PATH)


def _deployment(tags: Mapping[str, str]) -> DeploymentInfo:
    return DeploymentInfo(
        gocd_pipeline=tags.get(GOCD_PIPELINE),
        gocd_counter=tags.get(GOCD_COUNTER),
        gocd_url=tags.get(GOCD_URL),
        gocd_scheduled_at=tags.get(GOCD_SCHEDULED_AT),
        target=tags.get(DEPLOY_TARGET),
        name=tags.get(DEPLOY_NAME),
        endpoint=tags.get(DEPLOY_ENDPOINT),
        status=tags.get(DEPLOY_STATUS),
        at=tags.get(DEPLOY_AT),
        message=tags.get(DEPLOY_MESSAGE),
        stage=tags.get(DEPLOY_STAGE),
        pipeline=tags.get(DEPLOY_PIPELINE),
        counter=tags.get(DEPLOY_COUNTER),
        url=tags.get(DEPLOY_URL),
        alias=tags.get(DEPLOY_ALIAS),
    )


def _evaluation(client: Any, tags: Mapping[str, str]) -> EvaluationInfo | None:
    """The evaluation run the version's ``evaluation.run_id`` names, split into the candidate's
    metrics, the baseline's and the differences; the version's tags when the run cannot be read."""
    run_id = tags.get(EVALUATION_RUN_ID)
    if not run_id:
        return None
    found = EvaluationInfo(
        run_id=run_id,
        status=tags.get(EVALUATION_STATUS),
        baseline_version=tags.get(EVALUATION_BASELINE),
        summary=tags.get(EVALUATION_SUMMARY),
    )
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # deleted, or a user who may read the version but not that experiment
        message = getattr(exc, "message", None) or str(exc)
        found.error = message.splitlines()[0] if message else type(exc).__name__
        return found
    run_tags: Mapping[str, str] = run.data.tags
    found.status = run_tags.get(EVALUATION_STATUS) or found.status
    found.alias = run_tags.get(EVALUATION_ALIAS)
    found.baseline_version = run_tags.get(EVALUATION_BASELINE) or found.baseline_version
    found.task = run_tags.get(EVALUATION_TASK)
    found.at = _iso(run.info.end_time or run.info.start_time)
    for key, value in sorted(run.data.metrics.items()):
        if key.startswith(BASELINE_PREFIX):
            found.baseline_metrics[key[len(BASELINE_PREFIX) :]] = value
        elif key.startswith(DELTA_PREFIX):
            found.deltas[key[len(DELTA_PREFIX) :]] = value
        else:
            found.metrics[key] = value
    return found


def _reproductions(client: Any, lineage: Lineage) -> list[ReproductionInfo]:
    """Runs tagged ``reproduction.of`` = the run, newest first (`mlflow-ext reproduce` puts them in the
    run's experiment)."""
    run = lineage.run
    if run is None:
        return []
    try:
        runs = client.search_runs(
            [run.experiment_id],
            filter_string=f"tags.`{REPRODUCTION_OF}` = '{run.id}'",
            max_results=MAX_REPRODUCTIONS,
            order_by=["attributes.start_time DESC"],
        )
    except Exception:  # as for the experiment's name: a user may read the run but not search it
        return []
    return [
        ReproductionInfo(
            run_id=found.info.run_id,
            status=found.data.tags.get(REPRODUCTION_STATUS),
            run_status=found.info.status,
            started_at=_iso(found.info.start_time),
            user=found.data.tags.get(_MLFLOW_USER) or found.info.user_id or None,
        )
        for found in runs
    ]


def _prefixed(tags: Mapping[str, str], prefix: str, single: str | None = None) -> dict[str, str]:
    found = {key[len(prefix) :]: value for key, value in sorted(tags.items()) if key.startswith(prefix)}
    if single and single in tags:
        found = {"": tags[single], **found}
    return found


def _datasets(run: Any, tags: Mapping[str, str]) -> list[DatasetInfo]:
    """Dataset inputs of the run, completed by the lineage.data.<name>.* tags of log_data."""
    found: list[DatasetInfo] = []
    seen: set[str] = set()
    inputs = getattr(run, "inputs", None)
    for item in getattr(inputs, "dataset_inputs", None) or []:
        dataset = item.dataset
        input_tags = {tag.key: tag.value for tag in item.tags or []}
        profile = _json(dataset.profile)
        prefix = f"{keys.DATA_PREFIX}{tag_name(dataset.name)}."
        source = _json(dataset.source)
        found.append(
            DatasetInfo(
                name=dataset.name,
                role=input_tags.get(_DATA_CONTEXT) or tags.get(prefix + "role"),
                fingerprint=profile.get("fingerprint") or tags.get(prefix + "fingerprint"),
                digest=dataset.digest,
                source=source.get("uri") or dataset.source or None,
                files=_int(profile.get("files", tags.get(prefix + "files"))),
                bytes=_int(profile.get("bytes", tags.get(prefix + "bytes"))),
                format=profile.get("format") or tags.get(prefix + "format"),
                rows=_int(profile.get("rows", tags.get(prefix + "rows"))),
                schema=tags.get(prefix + "schema"),
            )
        )
        seen.add(tag_name(dataset.name))
    # Data recorded as tags only (an input that failed to log, or tags copied from elsewhere).
    for name in sorted(set(keys.data_fingerprints(tags)) - seen):
        prefix = f"{keys.DATA_PREFIX}{name}."
        found.append(
            DatasetInfo(
                name=name,
                role=tags.get(prefix + "role"),
                fingerprint=tags.get(prefix + "fingerprint"),
                digest=None,
                source=tags.get(prefix + "uri"),
                files=_int(tags.get(prefix + "files")),
                bytes=_int(tags.get(prefix + "bytes")),
                format=tags.get(prefix + "format"),
                rows=_int(tags.get(prefix + "rows")),
                schema=tags.get(prefix + "schema"),
            )
        )
    return found


def _json(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- rendering ---


def render_json(lineage: Lineage) -> str:
    return json.dumps(lineage.to_dict(), indent=2, sort_keys=True)


def _v(value: Any) -> str:
    return MISSING if value in (None, "", {}, []) else str(value)


def _size(count: int | None) -> str:
    if count is None:
        return MISSING
    size = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return MISSING  # pragma: no cover


def _pairs(values: Mapping[str, Any], limit: int, number: bool = False) -> list[str]:
    items = [f"{key}={value:.6g}" if number else f"{key}={value}" for key, value in values.items()]
    lines, line = [], ""
    for item in items[:limit]:
        if line and len(line) + len(item) > 84:
            lines.append(line)
            line = ""
        line = f"{line}  {item}" if line else item
    if line:
        lines.append(line)
    if len(items) > limit:
        lines.append(f"(+{len(items) - limit} more: --output json)")
    return lines or [MISSING]


def _render_evaluation(add: Any, e: EvaluationInfo | None, limit: int) -> None:
    if e is None:
        add("evaluation", MISSING)
        return
    against = f"version {e.baseline_version}" if e.baseline_version else "no baseline"
    if e.alias:
        against += f" (previous @{e.alias})"
    add("evaluation", f"run {e.run_id} ({_v(e.status)}) against {against}, {_v(e.at)}")
    if e.error:
        add("", f"{_v(e.summary)}; run unreadable: {e.error}")
        return
    scores: dict[str, str] = {}
    for metric, value in e.metrics.items():
        text = f"{value:.6g}"
        if metric in e.baseline_metrics:
            delta = e.deltas.get(metric, value - e.baseline_metrics[metric])
            text += f" (v{e.baseline_version or '?'} {e.baseline_metrics[metric]:.6g}, {delta:+.3g})"
        scores[metric] = text
    add("eval metrics", *_pairs(scores, limit))


def _render_deployment(add: Any, d: DeploymentInfo) -> None:
    if d.gocd_pipeline or d.gocd_counter:
        add(
            "release", f"gocd {_v(d.gocd_pipeline)} #{_v(d.gocd_counter)} scheduled {_v(d.gocd_scheduled_at)}"
        )
        add("release url", _v(d.gocd_url))
    else:
        add("release", MISSING)
    if d.status:
        where = f"{_v(d.pipeline)} #{_v(d.counter)}" + (f" stage {d.stage}" if d.stage else "")
        alias = f" as @{d.alias}" if d.alias else ""
        add("deployed", f"{d.status} at {_v(d.at)}{alias} by {where}")
        if d.message:
            add("", d.message if len(d.message) <= 84 else d.message[:83] + "…")
    if d.target or d.name:
        endpoint = f" at {d.endpoint}" if d.endpoint else ""
        add("deployed to", f"{_v(d.target)} {_v(d.name)}{endpoint}")
    if not d.status and not (d.target or d.name):
        add("deployed", MISSING)


def _render_reproductions(add: Any, found: list[ReproductionInfo], shown: int = 3) -> None:
    if not found:
        add("reproduced", MISSING)
        return
    lines = [
        f"{item.run_id} {_v(item.status)} ({item.run_status}, {_v(item.started_at)} by {_v(item.user)})"
        for item in found[:shown]
    ]
    if len(found) > shown:
        lines.append(f"(+{len(found) - shown} more: --output json)")
    add("reproduced", *lines)


def render_table(lineage: Lineage, *, limit: int = 12) -> str:
    """A one-screen, human-readable view; MISSING (—) marks what was not recorded."""
    rows: list[tuple[str, str]] = []

    def add(label: str, *values: str) -> None:
        for index, value in enumerate(values):
            rows.append((label if index == 0 else "", value))

    if lineage.model is not None:
        m = lineage.model
        aliases = ", ".join(f"@{alias}" for alias in m.aliases) or "no alias"
        add("model", f"{m.name} version {m.version} ({aliases}) {_v(m.status)}")
        add("registered", f"{_v(m.registered_at)} by {_v(m.registered_by)}; source {_v(m.source)}")
    if lineage.promotion is not None:
        p = lineage.promotion
        add("promoted by", _v(p.by))
        move = f" to @{p.alias}" if p.alias else ""
        move += ", a rollback" if p.action == "rollback" else ""
        add("promoted at", f"{_v(p.at)} (from version {_v(p.from_version)}{move})")
        add("reason", _v(p.reason))
    if lineage.model is not None:
        _render_evaluation(add, lineage.evaluation, limit)
    if lineage.deployment is not None:
        _render_deployment(add, lineage.deployment)
    r = lineage.run
    if r is None:
        add("run", MISSING)
    else:
        add("run", f"{r.id} {_v(r.name)} ({r.status}) by {_v(r.user)}")
        add("experiment", f"{_v(r.experiment_name)} (id {r.experiment_id})")
        add("ran", f"{_v(r.started_at)} to {_v(r.ended_at)}")
        add("entry point", _v(r.entry_point))
    c = lineage.code
    dirty = MISSING if c.dirty is None else ("dirty" if c.dirty else "clean")
    add("code", f"{_v(c.commit)} on {_v(c.branch)} ({dirty})")
    add("remote", _v(c.remote_url))
    if c.diff:
        add("diff", c.diff)
    ci = lineage.ci
    if ci.pipeline:
        add("pipeline", f"{ci.system or 'ci'} {ci.pipeline} #{_v(ci.counter)} (label {_v(ci.label)})")
        add("stage", f"{_v(ci.stage)} (run {_v(ci.stage_counter)}), job {_v(ci.job)}")
        add("triggered by", _v(ci.trigger_user))
        add("pipeline url", _v(ci.url))
        revisions = {name or "revision": value for name, value in ci.revisions.items()}
        add("materials", *_pairs({**revisions, **ci.upstream}, limit))
    else:
        add("pipeline", MISSING)
    e = lineage.environment
    add("python", f"{_v(e.python)} on {_v(e.platform)}, mlflow {_v(e.mlflow)}")
    add("libraries", *_pairs(e.libraries, limit))
    add("environment", f"sha256 {_v(e.hash)}")
    add("listing", _v(e.listing))
    add("host", f"{_v(lineage.host)} as {_v(lineage.host_user)}")
    if lineage.notebook:
        add("notebook", lineage.notebook)
    if not lineage.datasets:
        add("data", MISSING)
    for dataset in lineage.datasets:
        rows_text = MISSING if dataset.rows is None else f"{dataset.rows} rows"
        add(
            f"data ({_v(dataset.role)})",
            f"{dataset.name}: {_v(dataset.fingerprint or dataset.digest)}",
            f"{rows_text}, {_v(dataset.files)} files, {_size(dataset.bytes)}, {_v(dataset.format)}; "
            f"{_v(dataset.source)}",
        )
    add("params", *_pairs(lineage.params, limit))
    add("metrics", *_pairs(lineage.metrics, limit, number=True))
    if lineage.run is not None:
        _render_reproductions(add, lineage.reproductions)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows) + "\n"
