"""How `mlflow-ext inspect` shows a version's history when parts of it are odd: a rollback, an evaluation
run that cannot be read, many reproductions, a long deployment message, nothing recorded at all."""

from __future__ import annotations

import json

from mlflow_ext.lineage import (
    MISSING,
    DeploymentInfo,
    EvaluationInfo,
    Lineage,
    ModelInfo,
    PromotionInfo,
    ReproductionInfo,
    RunInfo,
    render_json,
    render_table,
)


def _lineage(**kwargs) -> Lineage:
    model = ModelInfo("churn", "3", ["champion"], "READY", "models:/m-1", None, "alice", None)
    return Lineage(uri="models:/churn@champion", model=model, run=None, **kwargs)


def _value(text: str, label: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(label + " "))
    found = [lines[start][len(label) :].strip()]
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        found.append(line.strip())
    return found


def test_nothing_recorded_shows_dashes() -> None:
    text = render_table(_lineage(promotion=PromotionInfo(), deployment=DeploymentInfo()))
    assert _value(text, "registered")[0].startswith(f"{MISSING} by alice;")
    assert _value(text, "promoted at") == [f"{MISSING} (from version {MISSING})"]
    for label in ("evaluation", "release", "deployed"):
        assert _value(text, label) == [MISSING], label
    assert "reproduced" not in text  # no run: nothing to reproduce


def test_rollback_and_unreadable_evaluation() -> None:
    promotion = PromotionInfo("bob", "2026-01-02T03:04:05+00:00", "4", "bad release", "champion", "rollback")
    evaluation = EvaluationInfo(
        "abc", status="passed", baseline_version="4", summary="accuracy=0.9", error="Run 'abc' not found"
    )
    text = render_table(_lineage(promotion=promotion, evaluation=evaluation, deployment=DeploymentInfo()))
    assert _value(text, "promoted at") == [
        "2026-01-02T03:04:05+00:00 (from version 4 to @champion, a rollback)"
    ]
    assert _value(text, "evaluation") == [
        f"run abc (passed) against version 4, {MISSING}",
        "accuracy=0.9; run unreadable: Run 'abc' not found",
    ]


def test_deployment_message_is_cut_and_reproductions_are_counted() -> None:
    deployment = DeploymentInfo(status="failed", at="t", pipeline="rel", counter="3", message="x" * 200)
    lineage = _lineage(promotion=PromotionInfo(), deployment=deployment)
    text = render_table(lineage)
    deployed = _value(text, "deployed")
    assert deployed[0] == "failed at t by rel #3" and deployed[1] == "x" * 83 + "…"
    lineage.run = RunInfo("run1", "fit", "7", "churn", "FINISHED", "eve", None, None, "train.py")
    lineage.reproductions = [
        ReproductionInfo(f"r{i}", "identical", "FINISHED", None, "eve") for i in range(5)
    ]
    assert _value(render_table(lineage), "reproduced") == [
        f"r0 identical (FINISHED, {MISSING} by eve)",
        f"r1 identical (FINISHED, {MISSING} by eve)",
        f"r2 identical (FINISHED, {MISSING} by eve)",
        "(+2 more: --output json)",
    ]
    assert json.loads(render_json(lineage))["deployment"]["message"] == "x" * 200
