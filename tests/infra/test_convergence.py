"""A converged host stays converged: a second run and a check-mode run report no change."""

from __future__ import annotations

import pytest


def _runs(converged):
    if converged.second is None:
        pytest.skip("MLFLOW_PLATFORM_SKIP_CONVERGE=1: no converge in this session")
    return converged


def test_second_converge_changes_nothing(converged):
    run = _runs(converged).second
    assert run.returncode == 0 and run.failed == 0, run.summary() + "\n" + run.output[-4000:]
    assert run.changed == 0, f"{run.summary()}; changed: {run.changed_tasks()}"


def test_check_mode_after_converge_changes_nothing(converged):
    run = _runs(converged).check
    assert run.returncode == 0 and run.failed == 0, run.summary() + "\n" + run.output[-4000:]
    assert run.changed == 0, f"{run.summary()}; changed: {run.changed_tasks()}"


def test_every_group_was_converged(converged):
    run = _runs(converged).first
    assert set(run.recap) == {"localhost"}
    assert run.recap["localhost"]["ok"] > 0
