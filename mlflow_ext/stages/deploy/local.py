"""The ``local`` target: a self-contained serving unit on this host.

Each deployment owns a folder ``<root>/<name>/`` (root: option ``root``, else MLFLOW_EXT_DEPLOY_ROOT,
else /opt/mlflow-deployments)::

    deployment.json          what is deployed: model, version, endpoint, port, mode, paths
    models/v<version>/       the version's artifacts, downloaded from the registry
    venvs/<hash>/            a venv with the model's requirements.txt installed (pip, without bytecode);
                             one per distinct interpreter + requirements + constraints, so a new version
                             with the same requirements reuses it
    logs/                    install-<hash>.log, serve.log (process mode)
    state/                   HOME of the server; state/pycache/ its PYTHONPYCACHEPREFIX
    supervisor.py, serve.pid process mode only

The server is ``<venv>/bin/mlflow models serve -m <model dir> -p <port> -h 127.0.0.1 --env-manager
local``, run either by a systemd unit ``mlflow-model-<name>.service`` (mode ``systemd``) or, where no
service manager runs (tests, containers), by a small supervisor in the background with a pid file
(mode ``process``). ``auto`` picks systemd when it runs as PID 1. A redeploy stops the old server, starts
the new one and waits for ``/ping``; if the new one never answers, the old version is started again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from mlflow_ext import progress, settings
from mlflow_ext.errors import ConfigError, StageFailed
from mlflow_ext.stages.common import check_name, mlflow_message
from mlflow_ext.stages.deploy.base import Deployment, DeployRequest, DeployTarget

DEFAULT_ROOT = "/opt/mlflow-deployments"
ROOT_ENV = "MLFLOW_EXT_DEPLOY_ROOT"
MODE_ENV = "MLFLOW_EXT_DEPLOY_MODE"
RECORD = "deployment.json"
UNIT_PREFIX = "mlflow-model-"
_SUPERVISOR = Path(__file__).with_name("supervisor.py")
_COMPLETE = ".complete"


def _pins(lock: str) -> str:
    """The ``name==version`` lines of a lock file, without its hashes.

    A constraints file with hashes switches pip into hash-checking mode for the model's own requirements,
    which carry none; the constraints only pin versions.
    """
    joined = lock.replace("\\\n", " ")
    pins = []
    for line in joined.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement and not requirement.startswith("-"):
            pins.append(" ".join(part for part in requirement.split() if not part.startswith("--hash")))
    return "\n".join(pins) + "\n"


def _pip_install(venv: Path, requirements: Path, constraints: Path | None) -> list[str]:
    """The venv's ``pip install`` of a model's requirements (with the constraints' pins, if any)."""
    argv = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--no-input",
        # Byte-compiling every installed module was a third to a half of the install (pyspark alone: half
        # a minute); the server compiles only what it imports, once, into its PYTHONPYCACHEPREFIX.
        "--no-compile",
        # A requirement published only as an sdist without pyproject.toml (pyspark: 456 MB) is built into a
        # wheel once, which pip's wheel cache keeps for the next venv. Without this, the pip that `venv`
        # bundles (23.0 on Debian 12) runs its legacy `setup.py install`: no wheel, so every venv downloads
        # the sdist again and writes it three times (Spark model: 3.3 GB written instead of 1.4 GB). pip
        # 23.1 and later build a wheel there in any case.
        "--use-pep517",
        "-r",
        str(requirements),
    ]
    if constraints is not None:
        argv += ["-c", str(constraints)]
    return argv


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# pip's lines worth showing while it works: what it fetches, builds and installs.
_PIP_MILESTONES = ("Collecting ", "Building wheel", "Installing collected packages", "Successfully installed")


def _run_logged(argv: list[str], log: BinaryIO, bar: progress.Task) -> int:
    """Run ``argv`` with its output into ``log``; pip's milestones go to the progress line. Its exit code."""
    bar.note(f"{Path(argv[0]).name} {' '.join(argv[1:3])}, output in {log.name}")
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert process.stdout is not None
    try:
        with process.stdout:
            for line in process.stdout:
                log.write(line)
                text = line.decode(errors="replace").strip()
                if text.startswith(_PIP_MILESTONES):
                    if text.startswith("Collecting "):
                        bar.advance()
                    bar.note(text if len(text) <= 72 else text[:71] + "…")
    except BaseException:  # interrupted, or the log cannot be written: no pip left running
        process.kill()
        process.wait()
        raise
    log.flush()
    return process.wait()


def _pycache(directory: Path, path: Path) -> Path:
    """Where the server of the deployment in ``directory`` keeps the bytecode of modules under ``path``."""
    absolute = Path(os.path.abspath(path))  # as Python's cache_from_source makes it
    return directory / "state" / "pycache" / absolute.relative_to(absolute.anchor)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers(endpoint: str, timeout: float = 5) -> bool:
    import requests

    try:
        return requests.get(endpoint.rstrip("/") + "/ping", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of ours counts as gone, and is reaped)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def unit_text(
    name: str, deployment: Deployment, argv: list[str], environment: Mapping[str, str], user: str | None
) -> str:
    """A hardened unit running the same command the process mode runs."""
    directory = deployment.details["directory"]
    lines = [
        "# Written by mlflow-ext deploy --target local; rewritten on every deploy.",
        "[Unit]",
        f"Description=MLflow model {deployment.model} version {deployment.version} ({name})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={' '.join(argv)}",
        f"WorkingDirectory={directory}",
        *[f"Environment={key}={value}" for key, value in sorted(environment.items())],
        "Restart=on-failure",
        "RestartSec=5",
        "TimeoutStopSec=30",
        *([f"User={user}"] if user else []),
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        f"ReadWritePaths={directory}/state",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


class LocalTarget(DeployTarget):
    name = "local"
    options: ClassVar[Mapping[str, str]] = {
        "root": f"folder of the deployments (default ${ROOT_ENV} or {DEFAULT_ROOT})",
        "mode": f"auto, systemd or process (default ${MODE_ENV} or auto: systemd when it is PID 1)",
        "python": "interpreter the venv is made from (default: the one running mlflow-ext, outside any venv)",
        "constraints": "pip constraints file for the install (e.g. the platform's requirements/server.lock)",
        "timeout": "seconds to wait for /ping after starting (default 180)",
        "unit_dir": "where systemd units go (default /etc/systemd/system)",
        "user": "User= of the systemd unit (default: none)",
        "workers": "scoring server workers, MLFLOW_MODELS_WORKERS (default 1)",
    }

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.root = Path(c.get("root") or settings.get(ROOT_ENV))
        self.mode = c.get("mode") or settings.get(MODE_ENV)
        if self.mode not in ("auto", "systemd", "process"):
            raise ConfigError(
                f"deploy target local: mode must be auto, systemd or process, not {self.mode!r}"
            )
        self.python = c.get("python") or getattr(sys, "_base_executable", None) or sys.executable
        self.constraints = c.get("constraints") or None
        if self.constraints and not os.path.isfile(self.constraints):
            raise ConfigError(f"deploy target local: constraints file {self.constraints} does not exist")
        try:
            self.timeout = float(c.get("timeout") or 180)
            self.workers = int(c.get("workers") or 1)
        except ValueError:
            raise ConfigError("deploy target local: timeout and workers must be numbers") from None
        self.unit_dir = Path(c.get("unit_dir") or "/etc/systemd/system")
        self.user = c.get("user") or None
        self._log_offsets: dict[str, int] = {}

    # --- paths and records ---

    def directory(self, name: str) -> Path:
        return self.root / check_name(name)

    def resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "systemd" if os.path.isdir("/run/systemd/system") and shutil.which("systemctl") else "process"

    @contextlib.contextmanager
    def _locked(self, name: str, create: bool = True) -> Iterator[Path]:
        directory = self.directory(name)
        if not create and not (directory / RECORD).exists():
            raise StageFailed(f"no local deployment named {name} under {self.root}")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create {directory}: {exc.strerror}; set --root or {ROOT_ENV}"
            ) from None
        with open(directory / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield directory

    def _read(self, name: str) -> Deployment | None:
        path = self.directory(name) / RECORD
        try:
            import json

            return Deployment.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise StageFailed(f"deployment record {path} is unreadable: {exc}") from None

    def _write(self, deployment: Deployment) -> None:
        path = self.directory(deployment.name) / RECORD
        temporary = path.with_suffix(".tmp")
        temporary.write_text(deployment.to_json())
        os.replace(temporary, path)

    def get(self, name: str) -> Deployment | None:
        deployment = self._read(name)
        if deployment is not None and deployment.status == "running" and not self._running(deployment):
            deployment.status = "stopped"
        return deployment

    # --- building: model, venv ---

    def _fetch_model(self, request: DeployRequest, directory: Path) -> Path:
        import mlflow.artifacts

        target = directory / "models" / f"v{request.version}"
        if (target / _COMPLETE).exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        staging = directory / "models" / f".v{request.version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=request.model_uri, dst_path=str(staging))
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StageFailed(f"cannot download {request.model_uri}: {mlflow_message(exc)}") from None
        if not (staging / "MLmodel").exists():
            found = [path.parent for path in staging.rglob("MLmodel")]
            if len(found) != 1:
                shutil.rmtree(staging, ignore_errors=True)
                raise StageFailed(f"{request.model_uri} has no MLmodel file: not an MLflow model")
            found[0].rename(directory / "models" / f".v{request.version}.model")
            shutil.rmtree(staging)
            staging = directory / "models" / f".v{request.version}.model"
        (staging / _COMPLETE).write_text(_now() + "\n")
        staging.rename(target)
        return target

    def _python_version(self) -> str:
        try:
            result = subprocess.run(
                [self.python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                check=True,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            raise ConfigError(f"deploy target local: python {self.python} does not run: {exc}") from None
        return result.stdout.strip()

    def _check_python(self, model_dir: Path, version: str) -> None:
        import yaml

        try:
            wanted = str(yaml.safe_load((model_dir / "python_env.yaml").read_text()).get("python") or "")
        except (OSError, AttributeError, yaml.YAMLError):
            return
        if wanted and wanted.split(".")[:2] != version.split(".")[:2]:
            raise StageFailed(
                f"the model was logged with Python {wanted}, but {self.python} is Python {version}: "
                "pass --option python=<an interpreter of that version>"
            )

    def _requirements(self, model_dir: Path) -> str:
        import re

        import mlflow

        path = model_dir / "requirements.txt"
        try:
            text = path.read_text()
        except OSError:
            raise StageFailed(f"{path} is missing: the model names no requirements") from None
        names = {
            re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0].lower()
            for line in text.splitlines()
            if line.strip() and not line.startswith(("#", "-"))
        }
        if "mlflow" not in names:  # the scoring server needs it; pyfunc models normally name it
            text = text.rstrip("\n") + f"\nmlflow=={mlflow.__version__}\n"
        return text

    def _venv(self, directory: Path, model_dir: Path, timings: dict[str, float]) -> Path:
        python_version = self._python_version()
        self._check_python(model_dir, python_version)
        requirements = self._requirements(model_dir)
        constraints = Path(self.constraints).read_text() if self.constraints else ""
        digest = hashlib.sha256(
            f"{self.python}\n{python_version}\n{requirements}\n--\n{constraints}".encode()
        ).hexdigest()[:16]
        venv = directory / "venvs" / digest
        if (venv / _COMPLETE).exists():
            timings["venv"] = 0.0
            return venv
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)
        (directory / "logs").mkdir(exist_ok=True)
        log_path = directory / "logs" / f"install-{digest}.log"
        requirements_file = directory / "venvs" / f"{digest}.requirements.txt"
        requirements_file.parent.mkdir(exist_ok=True)
        requirements_file.write_text(requirements)
        steps = [[self.python, "-m", "venv", str(venv)]]
        constraints_file = None
        if self.constraints:
            constraints_file = directory / "venvs" / f"{digest}.constraints.txt"
            constraints_file.write_text(_pins(constraints))
        steps.append(_pip_install(venv, requirements_file, constraints_file))
        label = "deploy: building the model's environment"
        with open(log_path, "wb") as log, progress.task(label, unit="packages collected") as bar:
            for argv in steps:
                log.write(f"$ {' '.join(argv)}\n".encode())
                log.flush()
                returncode = _run_logged(argv, log, bar)
                if returncode != 0:
                    raise StageFailed(
                        f"installing the model's requirements failed ({argv[2]} exited {returncode}), "
                        f"see {log_path}:\n{_tail(log_path, 15)}"
                    )
        if not (venv / "bin" / "mlflow").exists():
            raise StageFailed(
                f"the model's requirements installed no mlflow command into {venv}; see {log_path}"
            )
        (venv / _COMPLETE).write_text(_now() + "\n")
        timings["venv"] = round(time.monotonic() - started, 1)
        return venv

    # --- running ---

    def _environment(self, directory: Path, venv: Path) -> dict[str, str]:
        return {
            "PATH": f"{venv}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(directory / "state"),
            "LANG": "C.UTF-8",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_MODELS_WORKERS": str(self.workers),
            # The venv is installed without bytecode and is read-only to a systemd unit: the modules the
            # server imports are compiled on its first start and kept here, for the starts after it.
            "PYTHONPYCACHEPREFIX": str(directory / "state" / "pycache"),
            # A Spark model's JVM (started by pyfunc): no web UI, and nothing listening beyond the loopback
            # interface, like the server itself. Models without Spark never read these.
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_SUBMIT_ARGS": "--conf spark.ui.enabled=false pyspark-shell",
        }

    @staticmethod
    def _argv(venv: Path, model_dir: Path, port: int) -> list[str]:
        return [
            str(venv / "bin" / "mlflow"),
            "models",
            "serve",
            "-m",
            str(model_dir),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "--env-manager",
            "local",
        ]

    def _systemctl(self, *args: str) -> None:
        result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StageFailed(
                f"systemctl {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}"
            )

    def _start(self, deployment: Deployment) -> None:
        details = deployment.details
        directory = Path(details["directory"])
        (directory / "state").mkdir(exist_ok=True)
        (directory / "logs").mkdir(exist_ok=True)
        argv, environment = details["argv"], details["environment"]
        if details["mode"] == "systemd":
            unit = details["unit"]
            path = self.unit_dir / unit
            path.write_text(unit_text(deployment.name, deployment, argv, environment, self.user))
            details["unit_file"] = str(path)
            self._systemctl("daemon-reload")
            self._systemctl("enable", unit)
            self._systemctl("restart", unit)
            return
        supervisor = directory / "supervisor.py"
        shutil.copyfile(_SUPERVISOR, supervisor)
        pid_file = directory / "serve.pid"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        python = str(Path(argv[0]).parent / "python")
        log_path = directory / "logs" / "serve.log"
        self._log_offsets[deployment.name] = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [python, str(supervisor), "--pid-file", str(pid_file), "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
                env=environment,
                start_new_session=True,
                close_fds=True,
            )
        details["pid"] = process.pid
        details["pid_file"] = str(pid_file)
        # Until the supervisor runs (it writes the pid file first), /proc still shows our command line.
        deadline = time.monotonic() + 30
        while not pid_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _running(self, deployment: Deployment) -> bool:
        details = deployment.details
        if details.get("mode") == "systemd":
            result = subprocess.run(
                ["systemctl", "is-active", "--quiet", details["unit"]], capture_output=True, check=False
            )
            return result.returncode == 0
        pid = self._supervisor_pid(deployment)
        return pid is not None

    def _supervisor_pid(self, deployment: Deployment) -> int | None:
        """The supervisor's pid when it runs and is ours (checked against its command line)."""
        pid = deployment.details.get("pid")
        pid_file = deployment.details.get("pid_file")
        if pid_file:
            with contextlib.suppress(OSError, ValueError):
                pid = int(Path(pid_file).read_text().strip())
        if not isinstance(pid, int) or not _alive(pid):
            return None
        command = _cmdline(pid)
        if not any(part.endswith("supervisor.py") for part in command) or str(pid_file) not in command:
            return None
        return pid

    def _stop_serving(self, deployment: Deployment) -> bool:
        """Stop the server; True when something was running."""
        details = deployment.details
        if details.get("mode") == "systemd":
            was = self._running(deployment)
            self._systemctl("stop", details["unit"])
            return was
        pid = self._supervisor_pid(deployment)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        port = details.get("port")
        deadline = time.monotonic() + 10
        while isinstance(port, int) and port_in_use(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        return True

    def _exited(self, deployment: Deployment) -> bool:
        """True once the supervisor has seen the server exit since this start: it will not answer."""
        log_path = Path(deployment.details["directory"]) / "logs" / "serve.log"
        try:
            with open(log_path, "rb") as handle:
                handle.seek(self._log_offsets.get(deployment.name, 0))
                return b"supervisor: " in handle.read()
        except OSError:
            return False

    def _wait(self, deployment: Deployment) -> None:
        assert deployment.endpoint is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if answers(deployment.endpoint):
                return
            if deployment.details["mode"] == "process" and (
                self._supervisor_pid(deployment) is None or self._exited(deployment)
            ):
                break
            time.sleep(0.5)
        log = Path(deployment.details["directory"]) / "logs" / "serve.log"
        where = (
            f"journalctl -u {deployment.details['unit']}"
            if deployment.details["mode"] == "systemd"
            else f"{log}:\n{_tail(log)}"
        )
        raise StageFailed(
            f"deployment {deployment.name}: version {deployment.version} did not answer "
            f"{deployment.endpoint}/ping within {self.timeout:.0f}s; see {where}"
        )

    # --- the interface ---

    def deploy(self, request: DeployRequest, *, force: bool = False) -> Deployment:
        with self._locked(request.name) as directory:
            previous = self.get(request.name)
            if (
                previous is not None
                and previous.model == request.model
                and previous.version == request.version
                and previous.status == "running"
                and (request.port is None or request.port == previous.details.get("port"))
                and not force
                and previous.endpoint
                and answers(previous.endpoint)
            ):
                previous.changed = False
                return previous
            timings: dict[str, float] = {}
            started = time.monotonic()
            model_dir = self._fetch_model(request, directory)
            timings["download"] = round(time.monotonic() - started, 1)
            venv = self._venv(directory, model_dir, timings)
            port = request.port or (previous.details.get("port") if previous else None) or free_port()
            mode = self.resolved_mode()
            deployment = Deployment(
                name=request.name,
                target=self.name,
                model=request.model,
                version=request.version,
                alias=request.alias,
                status="running",
                endpoint=f"http://127.0.0.1:{port}",
                deployed_at=_now(),
                details={
                    "directory": str(directory),
                    "mode": mode,
                    "port": port,
                    "model_dir": str(model_dir),
                    "venv": str(venv),
                    "argv": self._argv(venv, model_dir, port),
                    "environment": self._environment(directory, venv),
                    "unit": f"{UNIT_PREFIX}{request.name}.service",
                    "timings": timings,
                },
                changed=True,
            )
            was_running = (
                previous is not None and previous.status == "running" and self._stop_serving(previous)
            )
            if port_in_use(port):
                raise StageFailed(f"port {port} is in use by another program: choose another with --port")
            started = time.monotonic()
            self._start(deployment)
            try:
                self._wait(deployment)
            except StageFailed as failure:
                self._stop_serving(deployment)
                if previous is not None and was_running:
                    self._start(previous)
                    try:
                        self._wait(previous)
                    except StageFailed:
                        raise failure from None
                    raise StageFailed(f"{failure}; version {previous.version} serves again") from None
                raise
            timings["start"] = round(time.monotonic() - started, 1)
            self._write(deployment)
            self._prune(directory, deployment, previous)
            return deployment

    def _prune(self, directory: Path, current: Deployment, previous: Deployment | None) -> None:
        """Keep the models and venvs of the current and the previous deployment only."""
        keep = {current.details["model_dir"], current.details["venv"]}
        if previous is not None:
            keep |= {str(previous.details.get("model_dir")), str(previous.details.get("venv"))}
        for folder in ("models", "venvs"):
            for path in (directory / folder).glob("*"):
                if path.is_dir() and str(path) not in keep:
                    shutil.rmtree(path, ignore_errors=True)
                    shutil.rmtree(_pycache(directory, path), ignore_errors=True)
                    with contextlib.suppress(FileNotFoundError):
                        Path(f"{path}.requirements.txt").unlink()

    def stop(self, name: str) -> Deployment:
        with self._locked(name, create=False):
            deployment = self._read(name)
            if deployment is None:
                raise StageFailed(f"no local deployment named {name} under {self.root}")
            deployment.changed = self._stop_serving(deployment) or deployment.status != "stopped"
            deployment.status = "stopped"
            self._write(deployment)
            return deployment

    def remove(self, name: str) -> Deployment:
        deployment = self.stop(name)
        if deployment.details.get("mode") == "systemd":
            unit = deployment.details["unit"]
            with contextlib.suppress(StageFailed):
                self._systemctl("disable", unit)
            with contextlib.suppress(FileNotFoundError):
                (self.unit_dir / unit).unlink()
            with contextlib.suppress(StageFailed):
                self._systemctl("daemon-reload")
        shutil.rmtree(self.directory(name), ignore_errors=True)
        deployment.status = "removed"
        deployment.changed = True
        return deployment

    def describe(self) -> dict[str, Any]:
        return {"root": str(self.root), "mode": self.resolved_mode()}
