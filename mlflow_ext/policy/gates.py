"""Evaluate a policy's gates for one candidate version: the same code in the CLI and in the server.

The facts come from a :class:`Candidate` (the version's run tags and metrics) and, for relative gates,
the :class:`Candidate` currently holding the alias. ``read_version`` builds one from anything with
MlflowClient's method names: the client itself, or the server's stores (:class:`StoreReader`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mlflow_ext import run_context as keys
from mlflow_ext.policy.rules import CODE, TRAINING_DATA, MetricRule, Rules

# MLflow's own commit tag, accepted like mlflow_ext.lineage does for runs logged without mlflow_ext.
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
# The version tag `mlflow-ext evaluate` leaves: its evaluation run (metrics of `from: evaluation` gates).
EVALUATION_RUN_ID = "evaluation.run_id"

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Candidate:
    """One model version and what its run recorded."""

    name: str
    version: str
    run_id: str | None
    run_tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    version_tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    evaluation_run_id: str | None = None
    evaluation_metrics: Mapping[str, float] = field(default_factory=dict)

    def metric(self, rule: MetricRule) -> float | None:
        metrics = self.evaluation_metrics if rule.source == "evaluation" else self.metrics
        return metrics.get(rule.metric)

    def where(self, rule: MetricRule) -> str:
        if rule.source != "evaluation":
            return _run(self)
        if self.evaluation_run_id:
            return f"evaluation run {self.evaluation_run_id}"
        return f"version {self.version} (no evaluation run: no {EVALUATION_RUN_ID} tag)"


@dataclass(frozen=True)
class GateResult:
    gate: str  # what the gate demands, e.g. "accuracy >= 0.9"
    kind: Literal["lineage", "absolute", "relative"]
    status: Status
    found: str  # what was found, e.g. "accuracy = 0.85 on run 1f2e..."

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"gate '{self.gate}' {self.status}: {self.found}"


def _num(value: float) -> str:
    return f"{value:.6g}"


def _run(candidate: Candidate) -> str:
    return f"run {candidate.run_id}" if candidate.run_id else "no run"


def training_fingerprints(tags: Mapping[str, str]) -> dict[str, str]:
    """name -> fingerprint of every dataset recorded with role ``training`` (mlflow_ext.log_data)."""
    return {
        name: value
        for name, value in keys.data_fingerprints(tags).items()
        if value and tags.get(f"{keys.DATA_PREFIX}{name}.role", "").lower() == "training"
    }


def _lineage_gate(requirement: str, candidate: Candidate) -> GateResult:
    tags = candidate.run_tags
    if requirement == CODE:
        gate = f"code revision ({keys.CODE_COMMIT})"
        if candidate.run_id is None:
            return GateResult(gate, "lineage", "failed", f"version {candidate.version} has no run")
        for key in (keys.CODE_COMMIT, MLFLOW_GIT_COMMIT):
            if tags.get(key):
                return GateResult(gate, "lineage", "passed", f"{key} = {tags[key]} on {_run(candidate)}")
        return GateResult(
            gate,
            "lineage",
            "failed",
            f"no {keys.CODE_COMMIT} (nor {MLFLOW_GIT_COMMIT}) tag on {_run(candidate)}",
        )
    if requirement == TRAINING_DATA:
        gate = f"training-data fingerprint ({keys.DATA_PREFIX}<name>.fingerprint, role training)"
        if candidate.run_id is None:
            return GateResult(gate, "lineage", "failed", f"version {candidate.version} has no run")
        found = training_fingerprints(tags)
        if found:
            text = ", ".join(f"{name} = {value}" for name, value in sorted(found.items()))
            return GateResult(gate, "lineage", "passed", f"{text} on {_run(candidate)}")
        others = sorted(
            key for key in tags if key.startswith(keys.DATA_PREFIX) and key.endswith(".fingerprint")
        )
        extra = f" (only datasets of other roles: {', '.join(others)})" if others else ""
        return GateResult(
            gate, "lineage", "failed", f"no training-data fingerprint on {_run(candidate)}{extra}"
        )
    gate = f"run tag {requirement}"
    if candidate.run_id is None:
        return GateResult(gate, "lineage", "failed", f"version {candidate.version} has no run")
    matching = sorted(key for key, value in tags.items() if value and fnmatch.fnmatchcase(key, requirement))
    if matching:
        shown = ", ".join(f"{key} = {tags[key][:80]}" for key in matching[:3])
        more = f" (+{len(matching) - 3} more)" if len(matching) > 3 else ""
        return GateResult(gate, "lineage", "passed", f"{shown}{more} on {_run(candidate)}")
    return GateResult(gate, "lineage", "failed", f"no tag {requirement} on {_run(candidate)}")


def _label(rule: MetricRule) -> str:
    return f"evaluation {rule.metric}" if rule.source == "evaluation" else rule.metric


def _absolute_gates(rule: MetricRule, candidate: Candidate) -> list[GateResult]:
    results = []
    value = candidate.metric(rule)
    for op, bound in ((">=", rule.min), ("<=", rule.max)):
        if bound is None:
            continue
        gate = f"{_label(rule)} {op} {_num(bound)}"
        if value is None:
            found = f"no metric {rule.metric} on {candidate.where(rule)}"
            results.append(GateResult(gate, "absolute", "failed", found))
            continue
        ok = value >= bound if op == ">=" else value <= bound
        found = f"{rule.metric} = {_num(value)} on {candidate.where(rule)}"
        results.append(GateResult(gate, "absolute", "passed" if ok else "failed", found))
    return results


def _relative_gate(
    rule: MetricRule, candidate: Candidate, holder: Candidate | None, alias: str, rollback: bool
) -> GateResult | None:
    if rule.max_regression is None or rule.better is None:
        return None
    direction = "higher is better" if rule.better == "higher" else "lower is better"
    gate = f"{_label(rule)} not worse than @{alias} by more than {_num(rule.max_regression)} ({direction})"
    if rollback:
        return GateResult(gate, "relative", "skipped", "rollback: relative gates do not apply")
    if holder is None:
        return GateResult(gate, "relative", "skipped", f"@{alias} has no current holder")
    if holder.version == candidate.version:
        return GateResult(gate, "relative", "skipped", f"version {candidate.version} already holds @{alias}")
    value = candidate.metric(rule)
    if value is None:
        return GateResult(gate, "relative", "failed", f"no metric {rule.metric} on {candidate.where(rule)}")
    reference = holder.metric(rule)
    if reference is None:
        return GateResult(
            gate,
            "relative",
            "skipped",
            f"version {holder.version} (current @{alias}) has no metric {rule.metric} to compare with",
        )
    worse_by = reference - value if rule.better == "higher" else value - reference
    found = (
        f"{rule.metric} = {_num(value)}, version {holder.version} (current @{alias}) has {_num(reference)}"
    )
    # A tolerance of a few ulps keeps "0.93 vs 0.92 with 0.01" from failing on float rounding.
    if worse_by > rule.max_regression + 1e-12 * max(1.0, abs(reference)):
        return GateResult(gate, "relative", "failed", f"{found}: worse by {_num(worse_by)}")
    return GateResult(gate, "relative", "passed", found)


def evaluate(
    rules: Rules, candidate: Candidate, holder: Candidate | None, alias: str, *, rollback: bool = False
) -> list[GateResult]:
    """Every gate of ``rules`` for ``candidate`` becoming ``@alias`` (``holder``: who has it now)."""
    results = [_lineage_gate(requirement, candidate) for requirement in rules.require]
    for rule in rules.metrics:
        results += _absolute_gates(rule, candidate)
        relative = _relative_gate(rule, candidate, holder, alias, rollback)
        if relative is not None:
            results.append(relative)
    return results


def failed(results: list[GateResult]) -> list[GateResult]:
    return [result for result in results if result.status == "failed"]


def refusal(name: str, version: str, alias: str, results: list[GateResult], source: str) -> str:
    """The one-line message of a refused promotion: every failed gate and what was found."""
    bad = "; ".join(result.line() for result in failed(results))
    return f"promotion of {name!r} version {version} to @{alias} refused ({source}): {bad}"


# --- reading the facts ----------------------------------------------------------------------------


def read_version(reader: Any, name: str, version: str) -> Candidate:
    """The version, its run's tags and metrics. ``reader`` has MlflowClient's method names."""
    found = reader.get_model_version(name, str(version))
    return _candidate(reader, found)


def read_holder(reader: Any, name: str, alias: str) -> Candidate | None:
    """The version holding ``@alias`` now, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = reader.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
    return _candidate(reader, found) if found is not None else None


def _candidate(reader: Any, found: Any) -> Candidate:
    run_id = found.run_id or None
    model_id = getattr(found, "model_id", None)
    if run_id is None and model_id:  # MLflow 3: a version of a logged model, through its source run
        run_id = reader.get_logged_model(str(model_id)).source_run_id or None
    tags: dict[str, str] = {}
    metrics: dict[str, float] = {}
    if run_id:
        run = reader.get_run(run_id)
        tags = dict(run.data.tags)
        metrics = {key: float(value) for key, value in run.data.metrics.items()}
    version_tags = dict(found.tags or {})
    evaluation_run_id = version_tags.get(EVALUATION_RUN_ID) or None
    evaluation: dict[str, float] = {}
    if evaluation_run_id:
        from mlflow.exceptions import MlflowException

        try:
            evaluation = {k: float(v) for k, v in reader.get_run(evaluation_run_id).data.metrics.items()}
        except MlflowException:  # deleted or unreadable: its gates fail, naming the run
            evaluation = {}
    return Candidate(
        name=found.name,
        version=str(found.version),
        run_id=run_id,
        run_tags=tags,
        metrics=metrics,
        version_tags=version_tags,
        aliases=tuple(found.aliases or ()),
        evaluation_run_id=evaluation_run_id,
        evaluation_metrics=evaluation,
    )


class StoreReader:
    """MlflowClient's read methods over the server's own stores (used inside the auth app)."""

    def __init__(self, registry: Any, tracking: Any) -> None:
        self.registry = registry
        self.tracking = tracking

    def get_model_version(self, name: str, version: str) -> Any:
        return self.registry.get_model_version(name, version)

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        return self.registry.get_model_version_by_alias(name, alias)

    def get_logged_model(self, model_id: str) -> Any:
        return self.tracking.get_logged_model(model_id)

    def get_run(self, run_id: str) -> Any:
        return self.tracking.get_run(run_id)
