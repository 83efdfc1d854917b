"""Deploy targets: the registry, the local target's records, units, supervisor and process lifecycle.

The lifecycle tests swap the venv and ``mlflow models serve`` for a tiny stdlib scoring server, so
they run in seconds; tests/integration/test_stages.py deploys a real model into a real venv.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlflow_ext.errors import ConfigError, StageFailed
from mlflow_ext.stages.deploy import (
    Deployment,
    DeployRequest,
    DeployTarget,
    available,
    base,
    get_target,
    local,
)
from mlflow_ext.stages.deploy.local import LocalTarget, unit_text
from mlflow_ext.stages.deploy.sagemaker import SageMakerTarget

FAKE_SERVER = textwrap.dedent(
    """
    import json, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    version = sys.argv[2]
    if version == "broken":
        sys.exit(3)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200 if self.path == "/ping" else 404)
            self.end_headers()

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rows = body["dataframe_split"]["data"]
            answer = json.dumps({"predictions": [version] * len(rows)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer)

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def test_registry_has_the_built_in_targets_and_rejects_unknown_ones():
    assert {"local", "sagemaker"} <= set(available())
    assert isinstance(get_target("local", {"root": "/tmp/x", "mode": "process"}), LocalTarget)
    assert isinstance(get_target("sagemaker", {"region_name": "eu-west-1"}), SageMakerTarget)
    with pytest.raises(ConfigError, match=r"unknown deploy target 'k8s' \(available: .*local"):
        get_target("k8s")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) colour"):
        get_target("local", {"colour": "red"})
    with pytest.raises(ConfigError, match="mode must be"):
        get_target("local", {"mode": "docker"})


class Dummy(DeployTarget):
    name = "dummy"

    def deploy(self, request, *, force=False):
        return Deployment(request.name, self.name, request.model, request.version, "running", changed=True)

    def get(self, name):
        return None

    def stop(self, name):
        raise StageFailed("nothing")


def test_entry_point_targets_are_found(monkeypatch):
    class EntryPoint:
        name, value = "dummy", f"{__name__}:Dummy"

    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [EntryPoint()])
    assert available()["dummy"] == f"{__name__}:Dummy"
    target = get_target("dummy")
    assert target.deploy(DeployRequest("d", "m", "1")).changed


def test_entry_point_that_is_not_a_target_is_refused(monkeypatch):
    class EntryPoint:
        name, value = "bad", "os:path"

    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [EntryPoint()])
    with pytest.raises(ConfigError, match="is not a DeployTarget"):
        get_target("bad")


def test_deployment_record_round_trip():
    record = Deployment("n", "local", "m", "2", "running", "http://127.0.0.1:1", "a", "t", {"port": 1}, True)
    import json

    data = json.loads(record.to_json())
    assert "changed" not in data
    assert Deployment.from_dict({**data, "future_field": 1}) == Deployment(**{**data, "changed": False})
    assert record.to_dict()["model_uri"] == "models:/m/2"


def test_unit_is_hardened_and_runs_the_same_command():
    record = Deployment("iris-champion", "local", "iris", "3", "running", details={"directory": "/opt/d/x"})
    argv = ["/opt/d/x/venvs/h/bin/mlflow", "models", "serve", "-m", "/opt/d/x/models/v3", "-p", "5201"]
    text = unit_text("iris-champion", record, argv, {"HOME": "/opt/d/x/state"}, "mlmodel")
    assert f"ExecStart={' '.join(argv)}\n" in text
    for line in (
        "User=mlmodel",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/opt/d/x/state",
        "Environment=HOME=/opt/d/x/state",
        "WantedBy=multi-user.target",
    ):
        assert line in text.splitlines()


def test_mode_auto_is_process_without_systemd_as_pid_1(monkeypatch, tmp_path):
    monkeypatch.setattr(os.path, "isdir", lambda path: False)
    assert LocalTarget({"root": str(tmp_path)}).resolved_mode() == "process"
    assert LocalTarget({"root": str(tmp_path), "mode": "systemd"}).resolved_mode() == "systemd"


def test_root_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(local.ROOT_ENV, str(tmp_path))
    assert LocalTarget().root == tmp_path
    monkeypatch.delenv(local.ROOT_ENV)
    assert LocalTarget().root == Path(local.DEFAULT_ROOT)


def test_requirements_gain_mlflow_when_missing(tmp_path):
    import mlflow

    (tmp_path / "requirements.txt").write_text("scikit-learn==1.9.1\n")
    text = LocalTarget({"root": str(tmp_path)})._requirements(tmp_path)
    assert text.splitlines() == ["scikit-learn==1.9.1", f"mlflow=={mlflow.__version__}"]
    (tmp_path / "requirements.txt").write_text("mlflow[gateway]==3.17.2\n")
    assert LocalTarget({"root": str(tmp_path)})._requirements(tmp_path) == "mlflow[gateway]==3.17.2\n"
    (tmp_path / "requirements.txt").unlink()
    with pytest.raises(StageFailed, match=r"requirements.txt is missing"):
        LocalTarget({"root": str(tmp_path)})._requirements(tmp_path)


def test_python_version_must_match_the_model(tmp_path):
    (tmp_path / "python_env.yaml").write_text("python: 3.9.1\nbuild_dependencies: []\n")
    target = LocalTarget({"root": str(tmp_path)})
    with pytest.raises(StageFailed, match=r"logged with Python 3.9.1, but .* is Python 3.11"):
        target._check_python(tmp_path, "3.11.2")
    target._check_python(tmp_path, "3.9.7")


def test_stop_of_an_unknown_deployment_creates_nothing(tmp_path):
    with pytest.raises(StageFailed, match="no local deployment named ghost"):
        LocalTarget({"root": str(tmp_path)}).stop("ghost")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError):
        LocalTarget({"root": str(tmp_path)}).directory("../up")


def test_supervisor_restarts_its_command_and_stops_with_it(tmp_path):
    pid_file = tmp_path / "x.pid"
    marker = tmp_path / "starts"
    command = f"echo started >> {marker}; sleep 0.3; exit 1"
    supervisor = subprocess.Popen(
        [sys.executable, str(local._SUPERVISOR), "--pid-file", str(pid_file), "--", "/bin/sh", "-c", command],
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while (not marker.exists() or len(marker.read_text().split()) < 2) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(marker.read_text().split()) >= 2, "the command was not restarted"
        assert int(pid_file.read_text()) == supervisor.pid
    finally:
        os.killpg(supervisor.pid, signal.SIGTERM)
        supervisor.wait(30)
    assert not pid_file.exists()
    assert b"exited with 1" in supervisor.stderr.read()


@pytest.fixture
def fake_target(tmp_path, monkeypatch):
    """A LocalTarget in process mode whose 'venv' serves with FAKE_SERVER instead of mlflow."""
    server = tmp_path / "fake_server.py"
    server.write_text(FAKE_SERVER)
    target = LocalTarget({"root": str(tmp_path / "root"), "mode": "process", "timeout": "20"})

    def fetch(request, directory):
        path = directory / "models" / f"v{request.version}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def venv(directory, model_dir, timings):
        path = directory / "venvs" / "fake"
        (path / "bin").mkdir(parents=True, exist_ok=True)
        if not (path / "bin" / "python").exists():
            (path / "bin" / "python").symlink_to(sys.executable)
        return path

    def argv(venv_path, model_dir, port):
        return [str(venv_path / "bin" / "python"), str(server), str(port), model_dir.name.lstrip("v")]

    monkeypatch.setattr(target, "_fetch_model", fetch)
    monkeypatch.setattr(target, "_venv", venv)
    monkeypatch.setattr(target, "_argv", argv)
    deployed: list[str] = []
    yield target, deployed
    for name in deployed:
        if target.get(name) is not None:
            target.remove(name)


def test_process_lifecycle_deploy_redeploy_rollback_stop(fake_target):
    target, deployed = fake_target
    deployed.append("iris-champion")
    first = target.deploy(DeployRequest("iris-champion", "iris", "1", "champion"))
    assert first.changed and first.status == "running" and first.details["mode"] == "process"
    assert target.predict(first, {"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}}) == {
        "predictions": ["1", "1"]
    }
    again = target.deploy(DeployRequest("iris-champion", "iris", "1", "champion"))
    assert not again.changed

    second = target.deploy(DeployRequest("iris-champion", "iris", "2", "champion"))
    assert second.changed and second.details["port"] == first.details["port"]
    assert target.get("iris-champion").version == "2"
    assert target.predict(second, {"dataframe_split": {"columns": ["a"], "data": [[1]]}}) == {
        "predictions": ["2"]
    }

    with pytest.raises(
        StageFailed, match=r"(?s)version broken did not answer .*exited with 3.*; version 2 serves again"
    ):
        target.deploy(DeployRequest("iris-champion", "iris", "broken", "champion"))
    current = target.get("iris-champion")
    assert current.version == "2" and current.status == "running"
    assert local.answers(current.endpoint)

    pid = int(Path(current.details["pid_file"]).read_text())
    stopped = target.stop("iris-champion")
    assert stopped.changed and stopped.status == "stopped"
    assert not local._alive(pid) and not local.port_in_use(current.details["port"])
    assert not target.stop("iris-champion").changed
    assert target.get("iris-champion").status == "stopped"

    removed = target.remove("iris-champion")
    assert removed.status == "removed" and not target.directory("iris-champion").exists()


def test_the_server_keeps_its_bytecode_in_its_state_and_a_pruned_version_loses_it(fake_target):
    """The venv is installed without bytecode: the server compiles what it imports into state/pycache (its
    PYTHONPYCACHEPREFIX, writable under a systemd unit), and the bytecode of a pruned version goes with it."""
    target, deployed = fake_target
    deployed.append("iris-champion")
    first = target.deploy(DeployRequest("iris-champion", "iris", "1", "champion"))
    directory = Path(first.details["directory"])
    pycache = directory / "state" / "pycache"
    assert first.details["environment"]["PYTHONPYCACHEPREFIX"] == str(pycache)
    # The server's own imports (http.server here) were compiled into the prefix, not next to their sources.
    assert any(pycache.rglob("server.*.pyc"))
    version_1 = local._pycache(directory, Path(first.details["model_dir"]))
    assert version_1 == pycache / str(directory / "models" / "v1").lstrip("/")
    version_1.mkdir(parents=True, exist_ok=True)
    (version_1 / "__pycache__").mkdir(exist_ok=True)

    target.deploy(DeployRequest("iris-champion", "iris", "2", "champion"))
    assert version_1.exists()  # the previous version is kept for a rollback, and its bytecode
    third = target.deploy(DeployRequest("iris-champion", "iris", "3", "champion"))
    assert not (directory / "models" / "v1").exists() and not version_1.exists()
    assert any(pycache.rglob("server.*.pyc")) and local.answers(third.endpoint)


def test_a_taken_port_fails_with_its_number(fake_target):
    import socket

    target, _ = fake_target
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(StageFailed, match=f"port {port} is in use"):
            target.deploy(DeployRequest("iris-staging", "iris", "1", "staging", port))


def test_predict_names_http_failures():
    record = Deployment("n", "local", "m", "1", "running", endpoint=f"http://127.0.0.1:{local.free_port()}")
    with pytest.raises(StageFailed, match="did not answer"):
        Dummy().predict(record, {})
    with pytest.raises(StageFailed, match="records no endpoint"):
        Dummy().predict(Deployment("n", "local", "m", "1", "running"), {})
    assert base.ENTRY_POINT_GROUP == "mlflow_ext.deploy_targets"


def test_a_hashed_lock_becomes_plain_version_pins_for_the_model_venv():
    lock = (
        "# generated by pip-compile\n"
        "alembic==1.20.1 \\\n"
        "    --hash=sha256:aaaa \\\n"
        "    --hash=sha256:bbbb\n"
        "    # via mlflow\n"
        'tomli==2.0.1 ; python_version < "3.11" \\\n'
        "    --hash=sha256:cccc\n"
    )
    assert local._pins(lock) == 'alembic==1.20.1\ntomli==2.0.1 ; python_version < "3.11"\n'


def test_the_model_venv_install_builds_sdists_into_cacheable_wheels_without_bytecode(tmp_path):
    venv, requirements, constraints = tmp_path / "venv", tmp_path / "req.txt", tmp_path / "pins.txt"
    argv = local._pip_install(venv, requirements, constraints)
    assert argv[:5] == [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input"]
    # Without --use-pep517 the pip that venv bundles installs a setup.py-only sdist (pyspark) with its
    # legacy `setup.py install`: no wheel, so nothing for pip's cache and every venv builds it again.
    assert "--use-pep517" in argv and "--no-compile" in argv
    assert argv[argv.index("-r") + 1] == str(requirements)
    assert argv[argv.index("-c") + 1] == str(constraints)
    assert "-c" not in local._pip_install(venv, requirements, None)
