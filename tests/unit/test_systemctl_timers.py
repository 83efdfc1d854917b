"""OnCalendar= as the systemd_compat supervisor reads it (roles/systemd_compat/files/systemctl_compat.py).

The supervisor starts the services of enabled timers; that it really does is tests/infra/test_retention.py."""

from __future__ import annotations

import datetime
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).parents[2] / "ansible/roles/systemd_compat/files/systemctl_compat.py"
_spec = importlib.util.spec_from_file_location("systemctl_compat", _PATH)
assert _spec and _spec.loader
compat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compat)

# A Wednesday.
WED = datetime.datetime(2026, 12, 2, 12, 0, 0)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("daily", WED, datetime.datetime(2026, 12, 3, 0, 0)),
        ("*-*-* 03:15:00", WED, datetime.datetime(2026, 12, 3, 3, 15)),
        ("*-*-* 13:00", WED, datetime.datetime(2026, 12, 2, 13, 0)),
        ("Sun *-*-* 01:00:00", WED, datetime.datetime(2026, 12, 6, 1, 0)),
        (
            "Mon..Sat *-*-* 01:00:00",
            datetime.datetime(2026, 12, 5, 2, 0),
            datetime.datetime(2026, 12, 7, 1, 0),
        ),
        ("Sat,Sun 04:00", WED, datetime.datetime(2026, 12, 5, 4, 0)),
        ("weekly", WED, datetime.datetime(2026, 12, 7, 0, 0)),
        ("monthly", WED, datetime.datetime(2027, 1, 1, 0, 0)),
        ("*-02-29 00:00:00", WED, datetime.datetime(2028, 2, 29, 0, 0)),
        ("hourly", WED, datetime.datetime(2026, 12, 2, 13, 0)),
        ("*-*-* *:*:*", WED, datetime.datetime(2026, 12, 2, 12, 0, 1)),
        ("*-*-* 00,12:30:00", WED, datetime.datetime(2026, 12, 2, 12, 30)),
    ],
)
def test_next_elapse_is_the_first_one_strictly_after(expression, after, expected):
    assert compat.CalendarSpec(expression).next_after(after) == expected


def test_an_impossible_date_has_no_elapse():
    assert compat.CalendarSpec("*-02-30 00:00:00").next_after(WED) is None


@pytest.mark.parametrize(
    "expression", ["*-*-* 25:00:00", "Funday 01:00", "*-*-* 00/2:00:00", "daily UTC", "1-2"]
)
def test_an_expression_it_cannot_read_is_an_error_naming_it(expression):
    with pytest.raises(ValueError, match="OnCalendar=" + expression.replace("*", r"\*")):
        compat.CalendarSpec(expression)
