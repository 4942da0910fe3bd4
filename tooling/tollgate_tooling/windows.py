"""The UTC windows quotas count in (hour, day, month), for tests that must
not straddle two of them: a quota test that runs across a UTC midnight (or
a month's end) sees its counters start again half-way and fails, or passes
for the wrong reason.

A test module whose quotas count per day or month imports the autouse
fixture ``clear_of_the_utc_day_end``: each of its tests starts at least
``DAY_MARGIN_S`` before the day ends, waiting for the next day otherwise
(a month ends with a day). A test of an hour window calls
``clear_of_window_end("hour", margin)`` itself.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

#: How long before a UTC midnight a quota test may still start: longer than
#: any one quota test runs on the reference machine.
DAY_MARGIN_S = 300.0


def window_end(window: str, at: float) -> datetime:
    """The end of the UTC ``window`` (hour, day, month) holding ``at``."""
    t = datetime.fromtimestamp(at, timezone.utc)
    if window == "hour":
        return t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if window == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    if window != "month":
        raise ValueError(f"no UTC window {window!r}: hour, day or month")
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return datetime(year, month, 1, tzinfo=timezone.utc)


def seconds_left(window: str, at: float) -> float:
    """How long the UTC ``window`` holding ``at`` still runs."""
    return window_end(window, at).timestamp() - at


def clear_of_window_end(window: str, margin_s: float, sleep=time.sleep, now=time.time) -> float:
    """When the UTC ``window`` holding now ends within ``margin_s``, waits
    until the next one has begun (a test waits rather than skips); returns
    how long it waited."""
    left = seconds_left(window, now())
    if left >= margin_s:
        return 0.0
    print(f"the UTC {window} ends in {left:.0f} s: waiting for the next one")
    sleep(left + 1)
    return left + 1


@pytest.fixture(autouse=True)
def clear_of_the_utc_day_end() -> None:
    """Each test of a module that imports this starts clear of a UTC day's
    (and so a month's) end."""
    clear_of_window_end("day", DAY_MARGIN_S)
