"""The service manager of a host without systemd as PID 1 (role systemd_compat) holds up.

- An upgrade of systemd does not replace the systemctl replacement (every path dpkg installs systemctl at
  is diverted, /bin/systemctl on merged /usr), and `make down` and `make up` put back one that was replaced.
- Restart= holds and a unit's processes go together: after a kill -9 of a service's main process the service
  answers again (within RECOVERY_BOUND, a bound for a test that must end, not a target), from a new main
  process, with nothing of the killed process's session left (no orphan holding its port), and systemctl
  reports it active. How fast is the fault suite's to hold (`make chaos`: its recovery limit, under load);
  the time is printed here.

Every test leaves the host with the replacement in place and the services running, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.infra.conftest import TLS_CERT, TRACKING_URI
from tests.support.ansible import REPO

pytestmark = pytest.mark.usefixtures("converged")

REPLACEMENT_MARK = "via systemctl.py"
PRIMARY = Path("/usr/bin/systemctl")
RECOVERY_BOUND = 60.0
APT_ARCHIVES = Path("/var/cache/apt/archives")


def _run(*argv: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)


def _answers(path: Path | str) -> bool:
    """Whether the systemctl at PATH is the replacement, and works."""
    try:
        result = _run(str(path), "--version", timeout=60)
    except OSError:
        return False
    return result.returncode == 0 and REPLACEMENT_MARK in result.stdout


def _dpkg_paths() -> list[Path]:
    """Every path the systemd package installs systemctl at (as dpkg knows them)."""
    listing = _run("dpkg-query", "--listfiles", "systemd").stdout.splitlines()
    return [Path(line) for line in listing if line.endswith("/bin/systemctl")]


def _truename(path: Path) -> Path:
    return Path(_run("dpkg-divert", "--truename", str(path)).stdout.strip())


def _real_systemctl() -> Path:
    """The real systemd binary the diversion keeps aside."""
    real = _truename(PRIMARY)
    assert real != PRIMARY, f"{PRIMARY} is not diverted"
    return real


def _write_as_dpkg(source: Path, dest: Path) -> None:
    """Write SOURCE to DEST the way dpkg unpacks a file: a new file renamed over the old one."""
    staging = dest.with_name(dest.name + ".dpkg-new")
    shutil.copy2(source, staging)
    os.replace(staging, dest)


@pytest.fixture
def replacement_kept() -> Iterator[bytes]:
    """The replacement's bytes; whatever the test does, every path of systemctl answers again afterwards."""
    assert _answers(PRIMARY), "the systemctl replacement is not in place before the test"
    content = PRIMARY.read_bytes()
    yield content
    for path in {PRIMARY, *_dpkg_paths()}:
        if not _answers(path):
            staging = path.with_name(path.name + ".restore")
            staging.write_bytes(content)
            staging.chmod(0o755)
            os.replace(staging, path)
    assert _answers(PRIMARY)


def _simulate_systemd_upgrade() -> str:
    """Reinstall the installed systemd package from apt's cache; without a cached package, do what dpkg does
    with each of its systemctl paths: write the real binary to the path's true name (itself unless diverted).
    """
    version = _run("dpkg-query", "--showformat=${Version}", "--show", "systemd").stdout.strip()
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    deb = APT_ARCHIVES / f"systemd_{version.replace(':', '%3a')}_{arch}.deb"
    if deb.exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        result = _run("dpkg", "--install", "--force-confold", str(deb), timeout=600, env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return f"dpkg --install {deb}"
    real = _real_systemctl()
    for path in _dpkg_paths():
        _write_as_dpkg(real, _truename(path))
    return f"the real binary written to the true name of {[str(p) for p in _dpkg_paths()]}"


def test_every_path_of_systemctl_is_diverted():
    for path in _dpkg_paths():
        assert _truename(path) != path, f"{path} is not diverted: an upgrade of systemd writes over it"


def test_an_upgrade_of_systemd_keeps_the_replacement(replacement_kept):
    how = _simulate_systemd_upgrade()
    for path in {PRIMARY, *_dpkg_paths()}:
        assert _answers(path), f"after {how}, {path} is no longer the systemctl replacement"
    # It still manages the units.
    assert _run(str(PRIMARY), "is-enabled", "mlflow-server").stdout.strip() == "enabled"


def _clobber() -> None:
    """What an upgrade of systemd did before every path was diverted: the real binary over /bin/systemctl."""
    for path in _dpkg_paths():
        _write_as_dpkg(_real_systemctl(), path)
    assert not _answers(PRIMARY), "the clobbered systemctl still answers as the replacement"


@pytest.mark.parametrize("target", ["down", "up"])
def test_make_puts_back_a_replaced_systemctl(replacement_kept, target):
    _clobber()
    # Only the service manager's part: the other tasks of the playbooks stay out of it.
    result = _run("make", "-C", str(REPO), target, "ANSIBLE_ARGS=--tags systemd_compat", timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for path in {PRIMARY, *_dpkg_paths()}:
        assert _answers(path), f"make {target} left {path} without the replacement"
    assert PRIMARY.read_bytes() == replacement_kept
    # The real binary kept aside is the package's (not the replacement).
    assert not _answers(_real_systemctl())


# --- Restart= and control groups ---------------------------------------------------------------------------


def _main_pid(unit: str) -> int:
    for line in _run(str(PRIMARY), "show", "--property=MainPID", unit).stdout.splitlines():
        if line.startswith("MainPID="):
            return int(line.split("=", 1)[1] or 0)
    return 0


def _stat(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].decode().split()  # state, ppid, pgrp, session, ...


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _session(sid: int) -> set[int]:
    """Live processes of session SID (the replacement starts each main process as a session leader)."""
    members = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z" and fields[3] == str(sid):
                members.add(int(entry))
    return members


def _port_holders(port: int) -> set[int]:
    listing = _run("ss", "-Hltnp", f"sport = :{port}").stdout
    return {int(part.split("=", 1)[1].rstrip(")")) for part in listing.split(",") if part.startswith("pid=")}


def _answers_http(url: str, **kwargs) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return requests.get(url, timeout=2, **kwargs).status_code < 500
        except requests.RequestException:
            return False

    return check


def _uvicorn_master(main: int) -> int:
    """The uvicorn master under `mlflow server`: its workers are its children."""
    for pid in _session(main):
        fields = _stat(pid)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if fields and int(fields[1]) == main and b"uvicorn" in cmdline:
            return pid
    raise AssertionError(f"no uvicorn master under the server's main process {main}")


@dataclass(frozen=True)
class Service:
    unit: str
    port: int
    answers: Callable[[], bool]
    victim: Callable[[int], int] = lambda main: main  # the process to kill, given the main PID


SERVICES = [
    Service("mlflow-server", 5000, _answers_http(f"{TRACKING_URI}/health", verify=TLS_CERT), _uvicorn_master),
    Service("seaweedfs", 8333, _answers_http("http://127.0.0.1:8333/healthz")),
    Service("gocd-bridge", 5100, _answers_http("http://127.0.0.1:5100/health")),
]


def _active(unit: str) -> bool:
    status = _run(str(PRIMARY), "status", unit).stdout
    return any(line.split() == ["Active:", "active", "(running)"] for line in status.splitlines())


def _restore(service: Service, old_session: set[int]) -> None:
    """Bring the service back whole after a failed recovery: the old session ended, the unit restarted."""
    for pid in old_session:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    _run(str(PRIMARY), "restart", service.unit, timeout=300)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not service.answers():
        time.sleep(1)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.unit)
def test_kill_9_of_the_main_process_is_recovered(service, capsys):
    if not _active(service.unit):
        pytest.skip(f"{service.unit} does not run")
    # An earlier test may have restarted it (make up/down of the service manager): let it finish starting.
    ready = time.monotonic() + 60
    while time.monotonic() < ready and not service.answers():
        time.sleep(1)
    assert service.answers(), f"{service.unit} does not answer before the kill"
    main = _main_pid(service.unit)
    victim = service.victim(main)
    old_session = _session(main)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    state = ""
    try:
        while time.monotonic() - killed < RECOVERY_BOUND:
            new_main = _main_pid(service.unit)
            leftovers = _session(main)
            holders = _port_holders(service.port)
            state = (
                f"main process {new_main} (was {main}), left of the old session {sorted(leftovers)}, "
                f"port {service.port} held by {sorted(holders)}"
            )
            if (
                new_main not in (0, main)
                and _alive(new_main)
                and not leftovers
                and holders
                and not holders & old_session
                and service.answers()
                and _active(service.unit)
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail(
                f"{service.unit} not recovered {RECOVERY_BOUND:.0f} s after a kill -9 of {victim}: {state}"
            )
        took = time.monotonic() - killed
        with capsys.disabled():
            print(f"\n{service.unit}: kill -9 of {victim} recovered in {took:.1f} s ({state})")
    finally:
        if not (service.answers() and _active(service.unit) and not _session(main)):
            _restore(service, old_session)


COMPAT = "ansible/roles/systemd_compat/files/systemctl_compat.py"
SUPERVISOR_UNIT = Path("/etc/systemd/system/systemd-compat-supervisor.service")
PROBE_UNIT = Path("/etc/systemd/system/mlflow-platform-restart-probe.service")
# The supervisor of the repository, on the host's replacement, asked about one unit's status file as it
# changes under it: a stop under way (the main process gone, ActiveState=inactive) is no crash; the same
# main process dead with the status file naming it alone, as a crash leaves it, is.
DECIDE = r"""
import importlib.util, json, sys
from pathlib import Path
compat_path, upstream, unit, dead = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, upstream)
import systemctl3
spec = importlib.util.spec_from_file_location("systemctl_compat", compat_path)
compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compat)
compat.patch(systemctl3)
supervisor = compat.Supervisor(systemctl3)
status = supervisor.run_dir / f"{unit}.status"
try:
    status.write_text(f"ActiveState=inactive\nMainPID={dead}\n")
    stopping = supervisor._dead(unit)
    status.write_text(f"MainPID={dead}\n")
    crashed = supervisor._dead(unit)
finally:
    status.unlink(missing_ok=True)
print(json.dumps({"stopping": stopping is not None, "crashed": crashed[1] if crashed else None}))
"""


def test_the_supervisor_sees_a_crash_after_it_saw_a_stop_under_way():
    """The replacement keeps the first status it read of a unit; the supervisor must not (it missed every
    later death of mlflow-server and the bridge once it had looked while their restart was half done)."""
    upstream = SUPERVISOR_UNIT.read_text().split("--upstream", 1)[1].split()[0]
    PROBE_UNIT.write_text(
        "[Unit]\nDescription=restart probe (tests)\n[Service]\nType=simple\nExecStart=/bin/sleep 600\n"
        "Restart=on-failure\nRestartSec=200ms\n"
    )
    gone = subprocess.Popen(["/bin/true"])
    gone.wait()
    try:
        result = _run(
            "/usr/bin/python3", "-c", DECIDE, str(REPO / COMPAT), upstream, PROBE_UNIT.name, str(gone.pid)
        )
    finally:
        PROBE_UNIT.unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"stopping": False, "crashed": gone.pid}
