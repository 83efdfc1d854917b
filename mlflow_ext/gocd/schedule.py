"""Timers on build pipelines: GoCD's cron dialect (Quartz), windows spread by model name, the busiest hour.

GoCD's ``timer.spec`` is a Quartz ``CronTrigger`` expression, not a crontab line: 6 or 7 fields separated by
spaces, **seconds first** -- seconds, minutes, hours, day-of-month, month, day-of-week, optional year -- and
exactly one of day-of-month and day-of-week is ``?`` (Quartz does not implement both). Fields take ``*``,
values, ranges ``a-b``, steps ``a/n``, ``*/n``, ``a-b/n`` and lists ``a,b``; months also ``JAN``-``DEC``,
days of the week ``1``-``7`` (``1`` is Sunday) or ``SUN``-``SAT``; day-of-month also ``L``, ``L-n``, ``nW``,
``LW``; day-of-week also ``L``, ``nL`` and ``n#k``. ``check`` answers what GoCD would refuse, so that a bad
spec fails in the catalog or in ``gocd validate`` rather than when GoCD reads the config repository.

A window (``SUN 00:00-06:00``, ``SAT,SUN 22:00-24:00``, ``daily 01:00-05:00``) lets thousands of models
retrain without all starting at once: each model gets one start in it, from a hash of its name, so the
spread is stable from one generation to the next and does not move when other models are added.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from mlflow_ext.errors import PipelineError

# Name, lowest, highest value of each field, in order.
_FIELDS = (
    ("seconds", 0, 59),
    ("minutes", 0, 59),
    ("hours", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 1, 7),
    ("year", 1970, 2099),
)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
EXAMPLE = "0 30 2 ? * SUN"
_ITEM = re.compile(r"^(?P<range>\*|[A-Z0-9]+(?:-[A-Z0-9]+)?)(?:/(?P<step>\d+))?$")


def _value(text: str, field: int) -> int:
    name, low, high = _FIELDS[field]
    names = MONTHS if field == 4 else DAYS if field == 5 else ()
    if text in names:
        return names.index(text) + 1
    if not text.isdigit():
        known = f" (or {names[0]}-{names[-1]})" if names else ""
        raise PipelineError(f"{name} field: {text!r} is not a number from {low} to {high}{known}")
    value = int(text)
    if not low <= value <= high:
        raise PipelineError(f"{name} field: {value} is outside {low}-{high}")
    return value


def _expand(text: str, field: int) -> set[int]:
    """The values one field allows (special characters count as every day they may fall on)."""
    name, low, high = _FIELDS[field]
    if text == "?":
        if field not in (3, 5):
            raise PipelineError(f"{name} field: '?' is only allowed in day-of-month or day-of-week")
        return set(range(low, high + 1))
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise PipelineError(f"{name} field: empty item in {text!r}")
        if field == 3 and (re.fullmatch(r"L(-\d+)?|LW", item) or re.fullmatch(r"\d+W", item)):
            if item.endswith("W") and item != "LW":
                _value(item[:-1], field)
            elif item.startswith("L-") and int(item[2:]) > 30:
                raise PipelineError(f"{name} field: offset from the last day must be at most 30")
            values.update(range(1, 32))
            continue
        if field == 5 and (item == "L" or re.fullmatch(r"[A-Z0-9]+L|[A-Z0-9]+#\d+", item)):
            if item == "L":
                values.add(7)
                continue
            day, _, nth = item.rstrip("L").partition("#")
            if nth and not 1 <= int(nth) <= 5:
                raise PipelineError(f"{name} field: the n in 'day#n' must be 1 to 5, not {nth}")
            values.add(_value(day, field))
            continue
        match = _ITEM.fullmatch(item)
        if match is None:
            raise PipelineError(f"{name} field: {item!r} is not a value, range, step or list")
        part, step = match["range"], match["step"]
        if part == "*":
            first, last = low, high
        elif "-" in part:
            start, end = part.split("-")
            first, last = _value(start, field), _value(end, field)
        else:
            first = _value(part, field)
            last = high if step else first
        if step is not None:
            every = int(step)
            if not 1 <= every <= high:
                raise PipelineError(f"{name} field: step /{every} must be from 1 to {high}")
        else:
            every = 1
        if last < first:  # Quartz wraps a backwards range around: FRI-MON, 22-2
            values.update(range(first, high + 1, every))
            values.update(range(low, last + 1, every))
        else:
            values.update(range(first, last + 1, every))
    return values


@dataclass(frozen=True)
class Spec:
    text: str
    hours: frozenset[int]
    days_of_week: frozenset[int]  # 1 (Sunday) .. 7; every day when the spec chooses by day-of-month


def parse(spec: str) -> Spec:
    """Check ``spec`` as GoCD's Quartz parser would; PipelineError says which field and why."""
    if not isinstance(spec, str) or not spec.strip():
        raise PipelineError(f"must be a Quartz cron expression, e.g. {EXAMPLE!r}")
    parts = spec.upper().split()
    if len(parts) == 5:
        raise PipelineError(
            "it has 5 fields (a crontab line): GoCD takes Quartz cron, 6 or 7 fields with seconds first "
            f"(e.g. {EXAMPLE!r} for Sundays at 02:30)"
        )
    if not 6 <= len(parts) <= 7:
        raise PipelineError(
            f"it has {len(parts)} field{'s' if len(parts) > 1 else ''}: GoCD takes Quartz cron, "
            "6 or 7 fields (seconds minutes hours day-of-month month day-of-week [year])"
        )
    expanded = [_expand(text, index) for index, text in enumerate(parts)]
    dom, dow = parts[3], parts[5]
    if (dom == "?") == (dow == "?"):
        raise PipelineError(
            "exactly one of day-of-month and day-of-week must be '?' "
            f"(Quartz does not implement both), e.g. {EXAMPLE!r}"
        )
    days = frozenset(range(1, 8)) if dow == "?" else frozenset(expanded[5])
    return Spec(text=spec, hours=frozenset(expanded[2]), days_of_week=days)


def check(spec: str) -> str | None:
    """None when GoCD accepts ``spec``, else why not."""
    try:
        parse(spec)
    except PipelineError as exc:
        return str(exc)
    return None


# -- windows ------------------------------------------------------------------------------------------

_WINDOW = re.compile(r"^(?:(?P<days>\S+)\s+)?(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})$")


@dataclass(frozen=True)
class Window:
    text: str
    days: tuple[str, ...]  # the days a model may get (one each), or () for daily
    start: int  # minutes after midnight
    end: int  # exclusive

    def slots(self) -> int:
        return max(1, len(self.days)) * (self.end - self.start)

    def spec_for(self, name: str) -> str:
        """The Quartz spec of ``name``'s start: one slot of the window, from a hash of the name."""
        digest = hashlib.sha256(name.encode("utf-8")).digest()
        slot = int.from_bytes(digest[:8], "big") % self.slots()
        minutes = self.end - self.start
        day = self.days[slot // minutes] if self.days else "*"
        at = self.start + slot % minutes
        return f"0 {at % 60} {at // 60} ? * {day}"


def _minutes(text: str) -> int:
    hours, minutes = (int(p) for p in text.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise PipelineError(f"{text!r} is not a time of day (HH:MM, 00:00 to 24:00)")
    return hours * 60 + minutes


def parse_window(text: str) -> Window:
    """``[DAYS ]HH:MM-HH:MM``: DAYS ``daily`` (the default), a day or a list/range of days (``SUN``,
    ``SAT,SUN``, ``MON-FRI``: each model gets one of them, so it runs weekly)."""
    if not isinstance(text, str):
        raise PipelineError("window must be a string like 'SUN 00:00-06:00'")
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise PipelineError(f"window {text!r} is not '[DAYS] HH:MM-HH:MM', e.g. 'SUN 00:00-06:00'")
    start, end = _minutes(match["start"]), _minutes(match["end"])
    if end <= start:
        raise PipelineError(
            f"window {text!r} ends before it starts: a window stays within one day "
            "(use two days and 24:00, e.g. 'SAT 22:00-24:00')"
        )
    days_text = (match["days"] or "daily").upper()
    days: tuple[str, ...] = ()
    if days_text not in ("DAILY", "*"):
        try:
            numbers = _expand(days_text, 5)
        except PipelineError as exc:
            raise PipelineError(f"window {text!r}: {exc} (days are SUN-SAT or daily)") from exc
        if any(c in days_text for c in "L#/?"):
            raise PipelineError(f"window {text!r}: days are SUN-SAT, lists and ranges, or daily")
        days = tuple(DAYS[n - 1] for n in sorted(numbers))
    return Window(text=text, days=days, start=start, end=end)


# -- load ---------------------------------------------------------------------------------------------


def busiest_hour(specs: Iterable[str]) -> tuple[str, int] | None:
    """The (day, hour) in which most timers start, as ``('SUN 02:00', count)``; None without timers.

    A timer counts once in every hour it may start in (a spec choosing by day-of-month counts on every day
    of the week, an upper bound).
    """
    load: Counter[tuple[int, int]] = Counter()
    for text in specs:
        spec = parse(text)
        for day in spec.days_of_week:
            for hour in spec.hours:
                load[(day, hour)] += 1
    if not load:
        return None
    (day, hour), count = min(load.items(), key=lambda item: (-item[1], item[0]))
    return f"{DAYS[day - 1]} {hour:02d}:00", count
