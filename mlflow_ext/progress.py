"""Progress of long work, on stderr: one line redrawn in place on a terminal, plain lines in logs.

``task`` is the one way long work reports itself (the venv build of ``deploy``, ``log_data`` over big inputs,
``gocd generate`` over many models, ``make bench``)::

    with progress.task("hashing data", total=size, unit="bytes") as bar:
        for block in blocks:
            bar.advance(len(block))

On a terminal (the stream is a tty and ``TERM`` is not ``dumb``) the task redraws one line with ``\\r``,
at most ten times a second, and ends it with a newline. Anywhere else (CI logs, pipes, files) it writes
whole lines only, never ``\\r`` or escape sequences: one when the task has run for ``delay`` seconds, then
at most one every ``interval`` seconds, and a last one when it ends, if it wrote anything before. Short work
thus prints nothing, and ``delay=0`` announces a step at once (``make bench``'s sections). Work that counts
nothing (a subprocess, a remote listing) still shows it is alive: a background thread looks every ``tick``
seconds whether a line is due.

It always writes to stderr (or the stream given): with ``--output json`` stdout stays one JSON document.
Only the standard library is imported, so the light client and ``mlflow-ext --help`` pay nothing for it.
Updates may come from several threads.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

DELAY_SECONDS = 2.0  # work shorter than this shows nothing
LOG_INTERVAL_SECONDS = 10.0  # at most one line this often in a log
TERMINAL_INTERVAL_SECONDS = 0.1  # at most ten redraws a second on a terminal
TICK_SECONDS = 0.5  # how often a task that counts nothing checks whether a line is due
_BAR_WIDTH = 24


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is an interactive terminal that understands ``\\r``."""
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _seconds(elapsed: float) -> str:
    if elapsed < 60:
        return f"{elapsed:.1f} s"
    minutes, seconds = divmod(int(elapsed), 60)
    return f"{minutes} min {seconds:02d} s"


class Task:
    """One piece of long work: ``advance`` its count, ``note`` what it is doing, ``finish`` it (or leave the
    ``with`` block). ``total`` None: a count without a percentage. ``unit`` "bytes" shows sizes."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "",
        *,
        stream: TextIO | None = None,
        delay: float | None = None,
        interval: float | None = None,
        tick: float | None = None,
        plain: bool = False,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = not plain and is_terminal(self.stream)
        self.delay = DELAY_SECONDS if delay is None else delay
        default_interval = TERMINAL_INTERVAL_SECONDS if self.terminal else LOG_INTERVAL_SECONDS
        self.interval = default_interval if interval is None else interval
        self.count = 0
        self.detail = ""
        self.shown = False  # anything written yet
        self.finished = False
        self._started = time.monotonic()
        self._last = float("-inf")
        self._width = 0  # of the line drawn on the terminal, to blank what a shorter one leaves
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if self.delay <= 0:
            self._show(time.monotonic())
        tick = TICK_SECONDS if tick is None else tick
        if tick > 0:
            threading.Thread(target=self._tick, args=(tick,), name="progress", daemon=True).start()

    # --- what the work calls ---

    def advance(self, amount: int = 1) -> None:
        with self._lock:
            self.count += amount
            self._maybe_show()

    def note(self, detail: str) -> None:
        """What the work is doing now (a package, a file): shown with the next line."""
        with self._lock:
            self.detail = detail.strip()
            self._maybe_show()

    def finish(self, summary: str | None = None, failed: bool = False) -> None:
        """Ends the task: a last line with the time taken, if the task showed anything (or fails)."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            self._stop.set()
            if not self.shown and not failed:
                return
            elapsed = _seconds(time.monotonic() - self._started)
            outcome = f"failed after {elapsed}" if failed else f"done in {elapsed}"
            counted = self._counted(final=True)
            parts = [p for p in (outcome, counted, summary) if p]
            self._write(f"{self.label}: {', '.join(parts)}", final=True)

    def __enter__(self) -> Task:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.finish(failed=kind is not None and self.shown)

    # --- drawing ---

    def _tick(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            with self._lock:
                self._maybe_show()

    def _counted(self, final: bool = False) -> str:
        if not self.count and not self.total:
            return ""
        show = _size if self.unit == "bytes" else (lambda n: f"{n:,}")
        unit = "" if self.unit in ("", "bytes") else f" {self.unit}"
        if self.total and not final:
            percent = min(100, int(100 * self.count / self.total))
            return f"{show(self.count)} of {show(self.total)}{unit} ({percent}%)"
        return f"{show(self.count)}{unit}"

    def _maybe_show(self) -> None:
        now = time.monotonic()
        if self.finished or now - self._started < self.delay or now - self._last < self.interval:
            return
        self._show(now)

    def _show(self, now: float) -> None:
        self._last = now
        elapsed = _seconds(now - self._started)
        parts = [p for p in (self._counted(), elapsed, self.detail) if p]
        if self.terminal and self.total:
            filled = min(_BAR_WIDTH, int(_BAR_WIDTH * self.count / self.total))
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self._write(f"{self.label} [{bar}] {', '.join(parts)}")
        else:
            self._write(
                f"{self.label}: {', '.join(parts)}" if self.shown or self.count else f"{self.label} ..."
            )
        self.shown = True

    def _write(self, line: str, final: bool = False) -> None:
        try:
            if not self.terminal:
                self.stream.write(line + "\n")
            else:
                columns = _columns()
                line = line if len(line) < columns else line[: columns - 2] + "…"
                pad = " " * max(0, self._width - len(line))
                self._width = len(line)
                self.stream.write("\r" + line + pad + ("\n" if final else ""))
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream never fails the work
            pass


def _columns() -> int:
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80
    return max(20, columns) if columns else 80  # a pseudo-terminal may not know its width


# A new ``Task``; use it as a context manager so that it always ends its line (and stops its thread).
# ``plain``: whole lines even on a terminal, for work that prints lines of its own meanwhile.
task = Task
