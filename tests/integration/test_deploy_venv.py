"""The local deploy target's environment build with the real pip: what users rely on when it refuses.

A model's requirements that the platform's constraints (a hashed lock) do not allow are refused by pip's
resolver before anything is installed; the failure names pip's exit code, shows pip's own error and points
at the install log, which holds every command run. The successful build and its server are proven end to end
by test_stages.py and test_gocd_agent_play.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_ext.errors import StageFailed
from mlflow_ext.stages.deploy.local import LocalTarget


def test_a_requirement_the_hashed_constraints_do_not_allow_is_refused_with_pips_error(tmp_path: Path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "requirements.txt").write_text("mlflow==3.17.2\n")
    lock = tmp_path / "server.lock"
    lock.write_text(
        "mlflow==3.16.1 \\\n"
        "    --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000\n"
        "    # via -r requirements/server.in\n"
    )
    target = LocalTarget({"root": str(tmp_path / "root"), "constraints": str(lock)})
    directory = target.directory("iris-champion")
    directory.mkdir(parents=True)
    timings: dict[str, float] = {}

    with pytest.raises(StageFailed) as failed:
        target._venv(directory, model_dir, timings)

    message = str(failed.value)
    assert "installing the model's requirements failed (pip exited 1)" in message
    assert "ERROR: " in message and "mlflow==3.17.2" in message
    log = next((directory / "logs").glob("install-*.log"))
    assert f"see {log}" in message
    commands = [line for line in log.read_text().splitlines() if line.startswith("$ ")]
    digest = log.stem.removeprefix("install-")
    assert commands[0].endswith(f" -m venv {directory / 'venvs' / digest}")
    install = commands[1].split()
    assert install[2:6] == ["-m", "pip", "install", "--no-input"] and "--no-compile" in install
    constraints = Path(install[install.index("-c") + 1])
    assert constraints.read_text() == "mlflow==3.16.1\n"  # the lock's pins, hashes dropped
    # Nothing was left that a later deploy could take for a finished environment.
    assert not any((directory / "venvs").glob("*/.complete")) and "venv" not in timings
