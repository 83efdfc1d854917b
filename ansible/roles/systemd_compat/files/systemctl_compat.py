"""What docker-systemctl-replacement lacks for long-running units; installed by the systemd_compat role.

Standard library only. Two pieces:

- ``patch(systemctl3)``: the replacement counts as a unit's processes its main process and the descendants
  it finds through parent links. Once the main process dies, its children are reparented and escape every
  stop, and keep holding the unit's ports. The replacement starts each main process in a session of its own
  (setsid), so the session stands in for systemd's control group: a stop or kill also ends what is left of
  the main process's session, and a start first clears the session of a main process that died
  (KillMode=control-group: SIGTERM, SIGKILL after TimeoutStopSec; mixed: SIGKILL; process, none: left alone).
  Units also get a clean environment, as under systemd, instead of their caller's.
- ``Supervisor``: the replacement enforces Restart= only when it runs as PID 1. The supervisor polls the
  replacement's status files; when the main process of a unit with Restart= other than "no" and
  "on-success" died while its status file still names it (nobody stopped the unit), it clears the unit's
  session at once and starts the unit again RestartSec later, at most StartLimitBurst times per
  StartLimitIntervalSec. The exit status of a process that is not the supervisor's child is unknown, so
  every such death counts as a failure. A unit stopped meanwhile is left stopped.

Run as ``python3 systemctl_compat.py --upstream DIR supervise [--interval SECONDS]``, DIR holding the
replacement's systemctl3.py; the systemctl wrapper imports this module and calls ``patch``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("systemctl_compat")

PROC = Path("/proc")
# Units whose death is not restarted: systemd's own meaning of these Restart= values.
NO_RESTART = {"no", "on-success"}


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        data = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].decode("ascii", "replace").split()


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session SID, never this process nor PID 1."""
    if sid <= 1:
        return []
    me = os.getpid()
    members = []
    for entry in os.listdir(PROC):
        if not entry.isdigit() or int(entry) in (me, 1):
            continue
        fields = _stat_fields(int(entry))
        if fields and fields[0] != "Z" and fields[3] == str(sid):
            members.append(int(entry))
    return members


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def clear_session(sid: int, signum: int = signal.SIGTERM, timeout: float = 90.0) -> list[int]:
    """Send SIGNUM to every process of session SID, wait up to TIMEOUT seconds, then SIGKILL what is left.

    Returns the processes found at first."""
    found = session_members(sid)
    if not found:
        return []
    for pid in found:
        _signal(pid, signum)
    deadline = time.monotonic() + (timeout if signum != signal.SIGKILL else 5.0)
    while time.monotonic() < deadline:
        if not session_members(sid):
            return found
        time.sleep(0.1)
    for pid in session_members(sid):
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def _clear_leftovers(ctl: Any, conf: Any, mainpid: int, logg: logging.Logger) -> None:
    """End what is left of a dead main process's session, as KillMode= says."""
    mode = ctl.unitfiles.get_KillMode(conf)
    if mode not in ("control-group", "mixed") or not session_members(mainpid):
        return
    signum = signal.SIGKILL if mode == "mixed" else getattr(signal, ctl.unitfiles.get_KillSignal(conf))
    found = clear_session(mainpid, signum, ctl.unitfiles.get_TimeoutStopSec(conf))
    logg.warning("%s: ended %s left over by its dead main process %s", conf.name(), found, mainpid)


def patch(systemctl3: ModuleType) -> None:
    """Make the replacement treat a unit's session as its control group (see the module's doc)."""
    cls = systemctl3.Systemctl
    if getattr(cls, "_systemctl_compat", False):
        return
    logg = systemctl3.logg
    pidlist_of: Callable[..., list[int]] = cls.pidlist_of
    do_kill_unit_from: Callable[..., bool] = cls.do_kill_unit_from
    do_start_unit_from: Callable[..., bool] = cls.do_start_unit_from

    def session_pidlist_of(self: Any, pid: int | None) -> list[int]:
        pids = pidlist_of(self, pid)
        if pid:
            pids += [p for p in session_members(pid) if p not in pids]
        return pids

    def session_kill_unit_from(self: Any, conf: Any) -> bool:
        # Read before the replacement clears the status file.
        mainpid = self.read_mainpid_from(conf)
        done = do_kill_unit_from(self, conf)
        if mainpid:
            _clear_leftovers(self, conf, mainpid, logg)
        return done

    def session_start_unit_from(self: Any, conf: Any) -> bool:
        if conf.name().endswith(".service"):
            mainpid = self.read_mainpid_from(conf)
            if mainpid and not self.is_active_pid(mainpid):
                _clear_leftovers(self, conf, mainpid, logg)
        return do_start_unit_from(self, conf)

    units = systemctl3.SystemctlUnitFiles
    get_env: Callable[..., dict[str, str]] = units.get_env

    def clean_get_env(self: Any, conf: Any) -> dict[str, str]:
        # The replacement starts a unit's environment from its caller's (an Ansible module, a shell, a test,
        # the supervisor), so whatever the caller had leaks into the service. systemd starts from its own
        # clean one: PATH, plus what the unit sets (the replacement adds the locale, HOME, USER, SHELL).
        saved = dict(os.environ)
        os.environ.clear()
        os.environ["PATH"] = systemctl3.DefaultPath
        try:
            return get_env(self, conf)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    units.get_env = clean_get_env
    cls.pidlist_of = session_pidlist_of
    cls.do_kill_unit_from = session_kill_unit_from
    cls.do_start_unit_from = session_start_unit_from
    cls._systemctl_compat = True


class Supervisor:
    """Restarts units whose main process died (see the module's doc). One instance per host."""

    def __init__(self, systemctl3: ModuleType, own_unit: str = "systemd-compat-supervisor.service") -> None:
        self.systemctl3 = systemctl3
        self.ctl = systemctl3.Systemctl()
        self.own_unit = own_unit
        self.run_dir = Path(systemctl3.get_PID_DIR(True))
        self.lock_dir = Path(systemctl3.expand_path(systemctl3._notify_socket_folder, True))
        self.pending: dict[str, tuple[int, float]] = {}  # unit -> (dead main PID, restart at)
        self.starts: dict[str, list[float]] = {}
        self.given_up: dict[str, int] = {}  # unit -> dead main PID it gave up on

    def _busy(self, unit: str) -> bool:
        """Whether a systemctl command holds the unit's lock (a start, stop or restart is under way)."""
        path = self.lock_dir / f"{unit}.lock"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    def _dead(self, unit: str) -> tuple[Any, int] | None:
        """(conf, main PID) of a unit to restart: its status file names a main process that is gone."""
        conf = self.ctl.unitfiles.load_conf(unit)
        if conf is None or conf.get("Service", "Restart", "no") in NO_RESTART:
            return None
        mainpid = self.ctl.read_mainpid_from(conf)
        if not mainpid or self.ctl.is_active_pid(mainpid) or self.ctl.get_active_from(conf) != "failed":
            return None
        return conf, mainpid

    def _reap(self) -> None:
        """Collect the exit status of units this supervisor started, so they do not stay zombies."""
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass

    def _units(self) -> list[str]:
        return sorted(
            path.name.removesuffix(".status")
            for path in self.run_dir.glob("*.service.status")
            if path.name != f"{self.own_unit}.status"
        )

    def step(self) -> None:
        self._reap()
        now = time.monotonic()
        units = self._units()
        for unit in list(self.pending):
            if unit not in units:
                del self.pending[unit]  # stopped meanwhile
        for unit in units:
            if self._busy(unit):
                continue
            dead = self._dead(unit)
            if dead is None:
                self.pending.pop(unit, None)
                self.given_up.pop(unit, None)
                continue
            conf, mainpid = dead
            if self.given_up.get(unit) == mainpid:
                continue
            if self.pending.get(unit, (None,))[0] != mainpid:
                log.warning("%s: main process %s died; its session is cleared", unit, mainpid)
                _clear_leftovers(self.ctl, conf, mainpid, log)
                delay = self.ctl.unitfiles.get_RestartSec(conf)
                self.pending[unit] = (mainpid, time.monotonic() + delay)
                log.warning(
                    "%s: restart in %.1f s (Restart=%s)", unit, delay, conf.get("Service", "Restart", "no")
                )
                continue
            if now >= self.pending[unit][1]:
                self._restart(unit, conf, mainpid)

    def _restart(self, unit: str, conf: Any, mainpid: int) -> None:
        del self.pending[unit]
        burst = self.ctl.unitfiles.get_StartLimitBurst(conf)
        interval = self.ctl.unitfiles.get_StartLimitIntervalSec(conf)
        now = time.monotonic()
        starts = [t for t in self.starts.get(unit, []) if now - t < interval]
        if burst > 0 and len(starts) >= burst:
            log.error(
                "%s: %d starts within %.0f s (StartLimitBurst): left failed", unit, len(starts), interval
            )
            self.given_up[unit] = mainpid
            return
        self.starts[unit] = [*starts, now]
        with self.systemctl3.waitlock(conf):
            # Under the unit's lock: started or stopped by someone else meanwhile means nothing to do.
            if self.ctl.read_mainpid_from(conf) != mainpid or self.ctl.get_active_from(conf) != "failed":
                return
            started = self.ctl.do_start_unit_from(conf)
        log.warning("%s: restarted (%s), main process %s", unit, started, self.ctl.read_mainpid_from(conf))

    def run(self, interval: float) -> None:
        log.info("supervising units with Restart= under %s every %.1f s", self.run_dir, interval)
        while True:
            try:
                self.step()
            except Exception:
                log.exception("supervisor step failed")
            # Wake up for a restart that is due before the next check.
            due = [at - time.monotonic() for _, at in self.pending.values()]
            time.sleep(max(0.05, min([interval, *due])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="directory of the replacement's systemctl3.py")
    commands = parser.add_subparsers(dest="command", required=True)
    supervise = commands.add_parser("supervise", help="restart units whose main process died")
    supervise.add_argument("--interval", type=float, default=1.0, help="seconds between checks")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.path.insert(0, args.upstream)
    import systemctl3  # the replacement, stdlib only

    systemctl3.logg.setLevel(logging.WARNING)
    patch(systemctl3)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Supervisor(systemctl3).run(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
