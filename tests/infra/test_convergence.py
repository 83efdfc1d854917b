"""A converged host stays converged: a second run and a check-mode run report no change, whatever `make
test` or `make bench` left in the checkout (the session's second converge and check run follow
checkout_used()); a real change of the project's sources is still installed and restarts the server."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.infra.conftest import _vars_file, checkout_used
from tests.support.ansible import REPO, run_playbook


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


def _mlflow_server_converge(label: str, directory: Path, converged, *extra: str):
    variables = _vars_file(directory, converged.bridge.extra_vars())
    run = run_playbook(label, "mlflow_server.yml", "-e", f"@{variables}", *extra)
    assert run.returncode == 0 and run.failed == 0, run.summary() + "\n" + run.output[-4000:]
    return run


def test_what_tests_leave_in_the_checkout_changes_nothing(converged, tmp_path):
    if converged.second is not None:
        pytest.skip("the session's second converge already followed checkout_used()")
    _mlflow_server_converge("server-converge", tmp_path, converged)
    with checkout_used():
        run = _mlflow_server_converge("server-after-tests", tmp_path, converged)
    assert run.changed == 0, f"{run.summary()}; changed: {run.changed_tasks()}"


def test_a_source_change_is_installed_and_restarts_the_server(converged):
    # A directory of its own: pytest prunes old temporary directories, also those of a concurrent session.
    with tempfile.TemporaryDirectory(prefix="mlflow-platform-source-change-") as tmp:
        work = Path(tmp)
        project = work / "project"
        shutil.copytree(REPO / "requirements", project / "requirements")
        for entry in ["pyproject.toml", "README.md"]:
            shutil.copyfile(REPO / entry, project / entry)
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / "mlflow_ext", project / "mlflow_ext", ignore=ignore)
        marker = project / "mlflow_ext" / "_converge_marker.py"
        marker.write_text('"""A source change made by the infra test."""\n', encoding="utf-8")
        status = Path("/run/mlflow-server.service.status")
        installed = Path("/opt/mlflow/venv/lib/python3.11/site-packages/mlflow_ext/_converge_marker.py")
        status_before = status.read_text()
        try:
            changed = _mlflow_server_converge(
                "server-source-change", work, converged, "-e", f"mlflow_server_project_dir={project}"
            )
            tasks = changed.changed_tasks()
            print(f"\n{changed.summary()}; changed: {tasks}")
            assert any("Build a wheel" in task for task in tasks), tasks
            assert any("Restart" in task for task in tasks), tasks
            assert status.read_text() != status_before, "the server was not restarted"
            assert installed.exists(), "the changed sources were not installed"
        finally:
            back = _mlflow_server_converge("server-source-back", work, converged)
        assert not installed.exists(), back.summary()
