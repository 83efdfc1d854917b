"""What docker-systemctl-replacement lacks for services and timers; installed by the systemd_compat role.

Standard library only. Three pieces:

- ``patch(systemctl3)``: the replacement counts as a unit's processes its main process and the descendants
  it finds through parent links. Once the main process dies, its children are reparented and escape every
  stop, and keep holding the unit's ports. The replacement starts each main process in a session of its own
  (setsid), so the session stands in for systemd's control group: a stop or kill also ends what is left of
  the main process's session, and a start first clears the session of a main process that died
  (KillMode=control-group: SIGTERM, SIGKILL after TimeoutStopSec; mixed: SIGKILL; process, none: left alone).
  A oneshot service without RemainAfterExit=yes is inactive once its run ended, as under systemd (the
  replacement kept it active and never ran it again). Units also get a clean environment, as under
  systemd, instead of their caller's, and their logs
  (/var/log/journal/<unit>.log, which carry the services' stderr and so the auth audit log) are created
  0640, group adm, as Debian's own logs, instead of world-readable.
- ``Supervisor``: the replacement enforces Restart= only when it runs as PID 1. The supervisor polls the
  replacement's status files; when the main process of a unit with Restart= other than "no" and
  "on-success" died while its status file still names it (nobody stopped the unit), it clears the unit's
  session at once and starts the unit again RestartSec later, at most StartLimitBurst times per
  StartLimitIntervalSec. The exit status of a process that is not the supervisor's child is unknown, so
  every such death counts as a failure. A unit stopped meanwhile is left stopped.
- ``Timers``: the replacement ignores .timer units. The supervisor starts the service of every enabled
  timer (Unit=, else the timer's own name) when its OnCalendar= elapses, in the subset of systemd.time(7)
  that ``CalendarSpec`` parses; with Persistent=yes a run missed while the host or the supervisor was down
  happens at once, as systemd does it (the last trigger is the mtime of
  /var/lib/systemd/timers/stamp-<timer>). Other timer settings (OnBootSec=, RandomizedDelaySec=, ...) are
  ignored, and a timer with no OnCalendar= it can parse is logged and skipped.

Run as ``python3 systemctl_compat.py --upstream DIR supervise [--interval SECONDS]``, DIR holding the
replacement's systemctl3.py; the systemctl wrapper imports this module and calls ``patch``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import grp
import itertools
import logging
import os
import signal
import subprocess
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
# Unit logs are readable by root and this group only (the auth audit log goes to the server's stderr).
LOG_GROUP = "adm"
LOG_MODE = 0o640
# Where systemd keeps the last trigger of a Persistent= timer.
TIMER_STAMPS = Path("/var/lib/systemd/timers")


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
        # The replacement leaves a oneshot that succeeded "active" and skips its next start ("already up
        # once"), so a timer's job would run once only. systemd makes it inactive unless RemainAfterExit=yes.
        ends = conf.get("Service", "Type", "simple").lower() == "oneshot" and not conf.getbool(
            "Service", "RemainAfterExit", "no"
        )
        if ends and self.get_status_from(conf, "ActiveState", "") == "active":
            self.write_status_from(conf, AS="inactive")
        done = do_start_unit_from(self, conf)
        if ends and self.get_status_from(conf, "ActiveState", "") == "active":
            self.write_status_from(conf, AS="inactive")
        return done

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

    journal = systemctl3.SystemctlJournal

    def private_open_log(self: Any, conf: Any) -> Any:
        # The replacement opens unit logs with the caller's umask (0644): anyone could read them.
        path = Path(self.get_log_from(conf))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_MODE)
        with contextlib.suppress(KeyError, PermissionError):  # not root, or no such group: mode only
            os.fchown(fd, -1, grp.getgrnam(LOG_GROUP).gr_gid)
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, LOG_MODE)
        return os.fdopen(fd, "a")

    units.get_env = clean_get_env
    journal.open_log = private_open_log
    cls.pidlist_of = session_pidlist_of
    cls.do_kill_unit_from = session_kill_unit_from
    cls.do_start_unit_from = session_start_unit_from
    cls._systemctl_compat = True


class Supervisor:
    """Restarts units whose main process died (see the module's doc). One instance per host."""

    def __init__(
        self,
        systemctl3: ModuleType,
        systemctl: str = "/usr/bin/systemctl",
        own_unit: str = "systemd-compat-supervisor.service",
    ) -> None:
        self.systemctl3 = systemctl3
        self.ctl = systemctl3.Systemctl()
        self.timers = Timers(systemctl3.Systemctl, systemctl)
        self.timers_checked = 0.0
        self.own_unit = own_unit
        self.run_dir = Path(systemctl3.get_PID_DIR(True))
        self.lock_dir = Path(systemctl3.expand_path(systemctl3._notify_socket_folder, True))
        self.pending: dict[str, tuple[int, float]] = {}  # unit -> (dead main PID, restart at)
        self.starts: dict[str, list[float]] = {}
        self.given_up: dict[str, int] = {}  # unit -> dead main PID it gave up on
        self.unit_files: dict[str, tuple[str, int]] = {}  # unit -> (its file, mtime) as last loaded

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

    def _conf(self, unit: str) -> Any:
        """The unit's conf as a ``systemctl`` command run now would read it. The replacement loads a unit's
        file once per process and keeps the status it first read in the conf (``conf.status``), which
        suits a command that lives a moment, not this loop: a status read while a restart was half done
        would stay the unit's state for good (every later death of the unit unnoticed), and a unit file
        changed since would be restarted as it was. So the status is read again for every check, and the
        unit files again once one of them changed."""
        conf = self.ctl.unitfiles.load_conf(unit)
        if conf is not None:
            conf.status = None
        return conf

    def _reload_if_changed(self, units: list[str]) -> None:
        stamps = {}
        for unit in units:
            path = self.ctl.unitfiles.get_unit_file(unit)
            with contextlib.suppress(OSError, TypeError):
                stamps[unit] = (path, os.stat(path).st_mtime_ns)
        if stamps != self.unit_files:
            if self.unit_files:
                self.ctl = self.systemctl3.Systemctl()
            self.unit_files = stamps

    def _dead(self, unit: str) -> tuple[Any, int] | None:
        """(conf, main PID) of a unit to restart: its status file names a main process that is gone."""
        conf = self._conf(unit)
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
        now = time.monotonic()
        if now - self.timers_checked >= 1.0:  # timers have a resolution of seconds; a check scans unit files
            self.timers_checked = now
            try:
                self.timers.step(datetime.datetime.now())
            except Exception:  # a broken timer must not stop the restarts below
                log.exception("timers step failed")
        self._reap()
        units = self._units()
        self._reload_if_changed(units)
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
            conf.status = None
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


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CALENDAR_SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
}


class CalendarSpec:
    """An OnCalendar= expression: ``[WEEKDAYS] [YEAR-MONTH-DAY] [HOUR:MINUTE[:SECOND]]`` in local time, each
    field ``*``, a number, a range ``a..b`` or a comma list of those (weekdays as Mon..Sun), or one of the
    shorthands minutely, hourly, daily, weekly, monthly, yearly. Raises ValueError on anything else
    (steps ``/``, ``~``, time zones), naming the expression."""

    def __init__(self, text: str) -> None:
        self.text = text
        words = CALENDAR_SHORTHANDS.get(text.strip().lower(), text).split()
        try:
            self.weekdays = set(range(7))
            if words and words[0][0].isalpha():
                self.weekdays = self._weekdays(words.pop(0))
            date, clock = "*-*-*", "00:00:00"
            if words and "-" in words[0]:
                date = words.pop(0)
            if words and ":" in words[0]:
                clock = words.pop(0)
            if words:
                raise ValueError(f"unexpected {' '.join(words)!r}")
            year, month, day = self._split(date, "-", 3)
            hour, minute, second = self._split(clock if clock.count(":") == 2 else clock + ":00", ":", 3)
            self.years = self._field(year, 1970, 2199)
            self.months = self._field(month, 1, 12)
            self.days = self._field(day, 1, 31)
            self.times = sorted(
                itertools.product(
                    self._field(hour, 0, 23), self._field(minute, 0, 59), self._field(second, 0, 59)
                )
            )
        except ValueError as error:
            raise ValueError(
                f"OnCalendar={text}: {error} (systemctl_compat reads a subset of systemd.time(7))"
            ) from None

    @staticmethod
    def _split(text: str, sep: str, count: int) -> list[str]:
        parts = text.split(sep)
        if len(parts) != count:
            raise ValueError(f"{text!r} does not have {count} fields separated by {sep!r}")
        return parts

    @staticmethod
    def _field(text: str, low: int, high: int) -> set[int]:
        if text == "*":
            return set(range(low, high + 1))
        values: set[int] = set()
        for part in text.split(","):
            first, _, last = part.partition("..")
            if not first.isdigit() or (last and not last.isdigit()):
                raise ValueError(f"{text!r} is not *, a number, a range a..b or a list of those")
            start, end = int(first), int(last or first)
            if not low <= start <= end <= high:
                raise ValueError(f"{text!r} is outside {low}..{high}")
            values.update(range(start, end + 1))
        return values

    @staticmethod
    def _weekdays(text: str) -> set[int]:
        days: set[int] = set()
        for part in text.lower().split(","):
            first, _, last = part.partition("..")
            names = [name[:3] for name in (first, last or first)]
            if any(name not in WEEKDAYS for name in names):
                raise ValueError(f"{text!r} is not a weekday, a range Mon..Fri or a list of those")
            start, end = (WEEKDAYS.index(name) for name in names)
            days.update(range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)])
        return days

    def next_after(self, moment: datetime.datetime) -> datetime.datetime | None:
        """The first elapse strictly after MOMENT (naive local time), None if there is none."""
        day = moment.date()
        for _ in range(366 * 8):  # every weekday of every date comes round within a few years
            if (
                day.year in self.years
                and day.month in self.months
                and day.day in self.days
                and day.weekday() in self.weekdays
            ):
                for hour, minute, second in self.times:
                    at = datetime.datetime.combine(day, datetime.time(hour, minute, second))
                    if at > moment:
                        return at
            day += datetime.timedelta(days=1)
        return None


class Timers:
    """Starts the service of each enabled .timer when its OnCalendar= elapses (see the module's doc)."""

    def __init__(self, new_ctl: Callable[[], Any], systemctl: str, stamps: Path = TIMER_STAMPS) -> None:
        self.new_ctl = new_ctl  # a fresh Systemctl per check: the replacement caches its scan of unit files
        self.systemctl = systemctl
        self.stamps = stamps
        self.due: dict[str, datetime.datetime | None] = {}  # timer -> next elapse
        self.specs: dict[str, tuple[str, list[CalendarSpec]]] = {}  # timer -> (its OnCalendar= lines, specs)
        self.running: dict[str, subprocess.Popen[bytes]] = {}  # timer -> its `systemctl start`

    def _enabled(self) -> list[Any]:
        ctl = self.new_ctl()
        confs = []
        for unit in ctl.unitfiles.match_units():
            if unit.endswith(".timer"):
                conf = ctl.unitfiles.load_conf(unit)
                if conf is not None and ctl.enabled_from(conf) == "enabled":
                    confs.append(conf)
        return confs

    def _specs(self, conf: Any) -> list[CalendarSpec]:
        lines = [line for line in conf.getlist("Timer", "OnCalendar", []) if line.strip()]
        key = "\n".join(lines)
        cached = self.specs.get(conf.name())
        if cached is not None and cached[0] == key:
            return cached[1]
        specs = []
        for line in lines:
            try:
                specs.append(CalendarSpec(line))
            except ValueError as error:
                log.error("%s: %s; that line is ignored", conf.name(), error)
        if not specs:
            log.error("%s: no OnCalendar= that can be read; the timer never fires", conf.name())
        self.specs[conf.name()] = (key, specs)
        self.due.pop(conf.name(), None)
        return specs

    def _next(self, specs: list[CalendarSpec], after: datetime.datetime) -> datetime.datetime | None:
        elapses = [at for at in (spec.next_after(after) for spec in specs) if at is not None]
        return min(elapses) if elapses else None

    def step(self, now: datetime.datetime) -> None:
        for name, proc in list(self.running.items()):
            if proc.poll() is not None:
                del self.running[name]
                log.info("%s: its run ended (systemctl start exited %s)", name, proc.returncode)
        enabled = self._enabled()
        names = {conf.name() for conf in enabled}
        for name in [name for name in self.due if name not in names]:
            del self.due[name]  # disabled or removed
        for conf in enabled:
            name = conf.name()
            specs = self._specs(conf)
            if name not in self.due:
                persistent = conf.getbool("Timer", "Persistent", "no")
                stamp = self.stamps / f"stamp-{name}"
                last = (
                    datetime.datetime.fromtimestamp(stamp.stat().st_mtime)
                    if persistent and stamp.exists()
                    else now
                )
                self.due[name] = self._next(specs, last)
            due = self.due[name]
            if due is None or due > now or name in self.running:
                continue
            self._fire(conf, now)
            self.due[name] = self._next(specs, now)

    def _fire(self, conf: Any, now: datetime.datetime) -> None:
        name = conf.name()
        service = conf.get("Timer", "Unit", name.removesuffix(".timer") + ".service")
        self.stamps.mkdir(parents=True, exist_ok=True)
        stamp = self.stamps / f"stamp-{name}"
        stamp.touch()
        os.utime(stamp, (now.timestamp(), now.timestamp()))
        log.info("%s: elapsed, starting %s", name, service)
        self.running[name] = subprocess.Popen(
            [self.systemctl, "start", service], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="directory of the replacement's systemctl3.py")
    commands = parser.add_subparsers(dest="command", required=True)
    supervise = commands.add_parser("supervise", help="restart units whose main process died")
    supervise.add_argument("--interval", type=float, default=1.0, help="seconds between checks")
    supervise.add_argument(
        "--systemctl", default="/usr/bin/systemctl", help="the systemctl that starts timers' units"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.path.insert(0, args.upstream)
    import systemctl3  # the replacement, stdlib only

    systemctl3.logg.setLevel(logging.WARNING)
    patch(systemctl3)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Supervisor(systemctl3, args.systemctl).run(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
