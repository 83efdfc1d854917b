"""Gate evaluation, audit-tag rules and deploy tags, on plain values (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlflow_ext.errors import PromotionRejected
from mlflow_ext.policy import audit
from mlflow_ext.policy.gates import Candidate, evaluate, failed, refusal, training_fingerprints
from mlflow_ext.policy.rules import MetricRule, Rules
from mlflow_ext.promotion.promote import PromotionError, deploy_tags

LINEAGE = {
    "lineage.code.commit": "0123abc",
    "lineage.data.train.fingerprint": "sha256:aa",
    "lineage.data.train.role": "training",
    "lineage.data.holdout.fingerprint": "sha256:bb",
    "lineage.data.holdout.role": "test",
}


def version(
    number: str, metrics: dict[str, float] | None = None, tags=LINEAGE, run: str | None = "r"
) -> Candidate:
    return Candidate("m", number, f"{run}{number}" if run else None, dict(tags), metrics or {})


def by_gate(results):
    return {result.gate: result for result in results}


def test_lineage_gates_pass_on_the_tags_the_platform_writes():
    results = evaluate(Rules(), version("2"), None, "production")
    assert [r.status for r in results] == ["passed", "passed"]
    assert "lineage.code.commit = 0123abc" in results[0].found
    assert results[1].found.startswith("train = sha256:aa")  # only the training dataset
    assert training_fingerprints(LINEAGE) == {"train": "sha256:aa"}


def test_mlflows_own_commit_tag_counts_as_code_revision():
    tags = {"mlflow.source.git.commit": "feed", **{k: v for k, v in LINEAGE.items() if "code" not in k}}
    results = evaluate(Rules(require=("code",)), version("2", tags=tags), None, "production")
    assert results[0].status == "passed" and "mlflow.source.git.commit = feed" in results[0].found


def test_missing_lineage_is_named_with_what_was_found():
    tags = {"lineage.data.holdout.fingerprint": "sha256:bb", "lineage.data.holdout.role": "test"}
    results = evaluate(
        Rules(require=("code", "training_data", "lineage.ci.*")), version("3", tags=tags), None, "production"
    )
    assert [r.status for r in results] == ["failed"] * 3
    assert "no lineage.code.commit (nor mlflow.source.git.commit) tag on run r3" in results[0].found
    assert "only datasets of other roles: lineage.data.holdout.fingerprint" in results[1].found
    assert results[2].gate == "run tag lineage.ci.*" and "no tag lineage.ci.*" in results[2].found

    no_run = evaluate(Rules(), version("4", run=None), None, "production")
    assert all(r.status == "failed" and "version 4 has no run" in r.found for r in no_run)


def test_tag_patterns_match_any_key():
    tags = {**LINEAGE, "lineage.ci.pipeline": "train-iris"}
    results = evaluate(Rules(require=("lineage.ci.*",)), version("2", tags=tags), None, "a")
    assert results[0].status == "passed" and "lineage.ci.pipeline = train-iris" in results[0].found


RULES = Rules(
    require=(),
    metrics=(
        MetricRule("accuracy", min=0.9, better="higher", max_regression=0.01),
        MetricRule("rmse", max=0.5, better="lower", max_regression=0.02),
    ),
)


def test_absolute_gates():
    results = by_gate(evaluate(RULES, version("2", {"accuracy": 0.85, "rmse": 0.4}), None, "production"))
    assert results["accuracy >= 0.9"].status == "failed"
    assert results["accuracy >= 0.9"].found == "accuracy = 0.85 on run r2"
    assert results["rmse <= 0.5"].status == "passed"
    missing = by_gate(evaluate(RULES, version("2", {"accuracy": 0.95}), None, "production"))
    assert missing["rmse <= 0.5"].status == "failed" and "no metric rmse" in missing["rmse <= 0.5"].found


@pytest.mark.parametrize(
    ("candidate", "holder", "accuracy_status", "rmse_status"),
    [
        ({"accuracy": 0.94, "rmse": 0.31}, {"accuracy": 0.95, "rmse": 0.30}, "passed", "passed"),
        (
            {"accuracy": 0.94, "rmse": 0.32},
            {"accuracy": 0.95, "rmse": 0.30},
            "passed",
            "passed",
        ),  # at the edge
        ({"accuracy": 0.93, "rmse": 0.33}, {"accuracy": 0.95, "rmse": 0.30}, "failed", "failed"),
        ({"accuracy": 0.99, "rmse": 0.10}, {"accuracy": 0.95, "rmse": 0.30}, "passed", "passed"),  # better
    ],
)
def test_relative_gates_follow_each_metrics_direction(candidate, holder, accuracy_status, rmse_status):
    results = by_gate(evaluate(RULES, version("3", candidate), version("2", holder), "production"))
    accuracy = results["accuracy not worse than @production by more than 0.01 (higher is better)"]
    rmse = results["rmse not worse than @production by more than 0.02 (lower is better)"]
    assert (accuracy.status, rmse.status) == (accuracy_status, rmse_status)
    if accuracy_status == "failed":
        assert accuracy.found == "accuracy = 0.93, version 2 (current @production) has 0.95: worse by 0.02"
        assert rmse.found.endswith("worse by 0.03")


def test_relative_gates_skip_without_a_holder_a_holder_metric_or_on_rollback():
    candidate = version("3", {"accuracy": 0.5, "rmse": 0.4})
    for holder, reason in (
        (None, "@production has no current holder"),
        (version("2", {"rmse": 0.1}), "version 2 (current @production) has no metric accuracy"),
    ):
        gate = evaluate(RULES, candidate, holder, "production")[1]
        assert gate.kind == "relative" and gate.status == "skipped" and gate.found.startswith(reason)
    rollback = evaluate(RULES, candidate, version("2", {"accuracy": 0.99}), "production", rollback=True)
    relative = [r for r in rollback if r.kind == "relative"]
    assert relative and all(r.status == "skipped" and "rollback" in r.found for r in relative)
    assert [r.status for r in rollback if r.kind == "absolute"] == ["failed", "passed"]  # still checked


def test_refusal_names_every_failed_gate_and_the_policy():
    results = evaluate(RULES, version("3", {"accuracy": 0.85}), None, "production")
    message = refusal("m", "3", "production", results, "models[0] (name 'm') of p.yaml")
    assert message.startswith(
        "promotion of 'm' version 3 to @production refused (models[0] (name 'm') of p.yaml): "
    )
    assert "gate 'accuracy >= 0.9' failed: accuracy = 0.85 on run r3" in message
    assert "gate 'rmse <= 0.5' failed: no metric rmse on run r3" in message
    assert len(failed(results)) == 2
    assert issubclass(PromotionError, Exception) and PromotionRejected.exit_code == 4


def test_rollback_is_recognised_from_the_holders_own_record():
    holder_tags = {audit.PROMOTION_ALIAS: "Production", audit.PROMOTION_FROM_VERSION: "3"}
    assert audit.is_rollback(holder_tags, "3", "production")
    assert not audit.is_rollback(holder_tags, "2", "production")
    assert not audit.is_rollback(holder_tags, "3", "staging")
    assert not audit.is_rollback(None, "3", "production")


def test_tags_describe_a_move_only_when_fresh_and_for_this_alias_and_holder():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    tags = {k: v for k, v in audit.tags_for(
        by="alice", alias="production", from_version="3", reason="why", rollback=False, at=now.isoformat()
    ).items() if v is not None}  # fmt: skip
    assert tags[audit.PROMOTION_ACTION] == "promote"
    assert audit.describes(tags, "production", "3", False, now=now + timedelta(seconds=30))
    assert not audit.describes(tags, "production", "3", False, now=now + timedelta(hours=1))
    assert not audit.describes(tags, "staging", "3", False, now=now)
    assert not audit.describes(tags, "production", "4", False, now=now)
    assert not audit.describes(tags, "production", "3", True, now=now)  # the action must match too
    assert not audit.describes({**tags, audit.PROMOTION_AT: "yesterday"}, "production", "3", False, now=now)
    first = audit.tags_for(by="a", alias="production", from_version=None, reason=None, rollback=True)
    assert first[audit.PROMOTION_FROM_VERSION] is None and first[audit.PROMOTION_ACTION] == "rollback"
    assert audit.describes({k: v for k, v in first.items() if v is not None}, "production", None, True)


def test_deploy_tags_record_the_gocd_run_and_clear_stale_ones():
    environ = {
        "GO_SERVER_URL": "https://ci.example.com/go/",
        "GO_PIPELINE_NAME": "iris-release-production",
        "GO_PIPELINE_COUNTER": "12",
        "GO_STAGE_NAME": "deploy",
        "MLFLOW_MODEL_ALIAS": "production",
    }
    tags = deploy_tags("deployed", stage=None, message=None, environ=environ, at="2026-01-01T00:00:00+00:00")
    assert tags == {
        "deploy.status": "deployed",
        "deploy.at": "2026-01-01T00:00:00+00:00",
        "deploy.message": None,
        "deploy.stage": "deploy",
        "deploy.pipeline": "iris-release-production",
        "deploy.counter": "12",
        "deploy.url": "https://ci.example.com/go/pipelines/value_stream_map/iris-release-production/12",
        "deploy.alias": "production",
    }
    outside = deploy_tags("failed", stage="smoke-test", message="x" * 9000, environ={})
    assert outside["deploy.stage"] == "smoke-test" and outside["deploy.url"] is None
    assert len(outside["deploy.message"] or "") == 5000
    with pytest.raises(PromotionError, match="status must be one of deployed, failed"):
        deploy_tags("done", stage=None, message=None, environ={})


def test_evaluation_gates_read_the_evaluation_run_the_version_names():
    rule = MetricRule("f1", min=0.85, better="higher", max_regression=0.01, source="evaluation")
    rules = Rules(require=(), metrics=(rule,))
    candidate = Candidate(
        "m", "3", "r3", LINEAGE, {"f1": 0.99}, evaluation_run_id="e3", evaluation_metrics={"f1": 0.84}
    )
    holder = Candidate("m", "2", "r2", LINEAGE, {}, evaluation_run_id="e2", evaluation_metrics={"f1": 0.9})
    results = by_gate(evaluate(rules, candidate, holder, "production"))
    assert results["evaluation f1 >= 0.85"].found == "f1 = 0.84 on evaluation run e3"
    relative = results["evaluation f1 not worse than @production by more than 0.01 (higher is better)"]
    assert relative.status == "failed" and "version 2 (current @production) has 0.9" in relative.found
    unevaluated = evaluate(rules, version("4", {"f1": 0.99}), None, "production")[0]
    assert unevaluated.status == "failed"
    assert unevaluated.found == "no metric f1 on version 4 (no evaluation run: no evaluation.run_id tag)"
