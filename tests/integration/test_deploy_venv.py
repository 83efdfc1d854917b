"""The local deploy target's environment build with the real pip: what users rely on when it refuses.

A model's requirements that the platform's constraints (a hashed lock) do not allow are refused by pip's
resolver before anything is installed; the failure names pip's exit code, shows pip's own error and points
at the install log, which holds every command run. The successful build and its server are proven end to end
by test_stages.py and test_gocd_agent_play.py.

A requirement published only as an sdist without pyproject.toml (pyspark) is built into a wheel that pip's
cache keeps, so the next venv with it installs that wheel instead of downloading and building the sdist again.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from mlflow_ext.errors import StageFailed
from mlflow_ext.stages.deploy import local
from mlflow_ext.stages.deploy.local import LocalTarget

SETUP_PY = (
    "from setuptools import setup\nsetup(name='legacysdist', version='1.0', py_modules=['legacysdist'])\n"
)


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
    assert install[2:6] == ["-m", "pip", "install", "--no-input"]
    assert "--no-compile" in install and "--use-pep517" in install
    constraints = Path(install[install.index("-c") + 1])
    assert constraints.read_text() == "mlflow==3.16.1\n"  # the lock's pins, hashes dropped
    # Nothing was left that a later deploy could take for a finished environment.
    assert not any((directory / "venvs").glob("*/.complete")) and "venv" not in timings


def _sdist(folder: Path) -> Path:
    """legacysdist-1.0.tar.gz: a setup.py project with no pyproject.toml, like pyspark's sdist."""
    path = folder / "legacysdist-1.0.tar.gz"
    files = {
        "setup.py": SETUP_PY,
        "PKG-INFO": "Metadata-Version: 2.1\nName: legacysdist\nVersion: 1.0\n",
        "legacysdist.py": "ANSWER = 42\n",
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"legacysdist-1.0/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_an_sdist_requirement_is_built_once_into_pips_wheel_cache_and_the_next_venv_installs_that(
    tmp_path: Path,
):
    links = tmp_path / "links"
    links.mkdir()
    _sdist(links)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("legacysdist==1.0\n")
    cache = tmp_path / "pip-cache"
    env = os.environ | {"PIP_CACHE_DIR": str(cache), "PIP_FIND_LINKS": str(links)}
    python = LocalTarget({"root": str(tmp_path / "root")}).python
    outputs = []
    for name in ("first", "second"):
        venv = tmp_path / name
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        result = subprocess.run(
            local._pip_install(venv, requirements, None),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout)
        # Installed from a wheel (dist-info), not by setup.py install (egg-info).
        assert list(venv.glob("lib/python*/site-packages/legacysdist-1.0.dist-info"))
    assert [path.name for path in cache.glob("wheels/**/*.whl")] == ["legacysdist-1.0-py3-none-any.whl"]
    assert "Building wheel for legacysdist" in outputs[0]
    assert "Using cached legacysdist-1.0-py3-none-any.whl" in outputs[1]
    assert "Building wheel" not in outputs[1]
