"""A tiny supervisor for the local target's ``process`` mode: what systemd does for the unit.

    python supervisor.py --pid-file FILE -- ARGV...

Writes its own pid to FILE, runs ARGV, restarts it when it exits (after 1, 2, 4 ... 30 s, like
``Restart=always`` with a growing ``RestartSec``), and on SIGTERM or SIGINT stops it (SIGTERM, SIGKILL
after 20 s) and removes FILE. The command stays in the supervisor's process group, so a signal to the
group (what the local target sends) reaches the server and its workers too. Standard library only: it
runs with whatever Python started it, without importing mlflow_ext.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time

_STOP_WAIT = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise")
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(args.pid_file + ".tmp", "w", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(args.pid_file + ".tmp", args.pid_file)
    delay = 1.0
    try:
        while not stopping:
            started = time.monotonic()
            child = subprocess.Popen(command)  # same process group: a group signal reaches both
            while child.poll() is None and not stopping:
                time.sleep(0.2)
            if stopping:
                break
            print(f"supervisor: {command[0]} exited with {child.returncode}", file=sys.stderr, flush=True)
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            deadline = time.monotonic() + delay
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(_STOP_WAIT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
