"""The quota tests never straddle two UTC windows (tollgate_tooling.windows):
the window ends are computed right, a test close to a day's end waits for
the next day, and every module whose quotas count per day or month uses
the fixture that makes it wait."""

from __future__ import annotations

import importlib
import re
from datetime import datetime, timezone
from pathlib import Path

from tollgate_tooling import REPO_ROOT
from tollgate_tooling.windows import DAY_MARGIN_S, clear_of_window_end, window_end


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_window_ends_are_the_next_utc_boundary():
    assert window_end("hour", at("2026-12-07T02:59:59")) == datetime(2026, 12, 7, 3, tzinfo=timezone.utc)
    assert window_end("day", at("2026-12-31T23:59:59")) == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert window_end("month", at("2026-12-31T12:00:00")) == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert window_end("month", at("2028-02-29T00:00:00")) == datetime(2028, 3, 1, tzinfo=timezone.utc)


def test_a_test_near_a_day_end_waits_for_the_next_day():
    slept = []
    waited = clear_of_window_end("day", DAY_MARGIN_S, sleep=slept.append,
                                 now=lambda: at("2026-12-07T23:58:00"))
    assert slept == [121.0] and waited == 121.0
    assert clear_of_window_end("day", DAY_MARGIN_S, sleep=slept.append,
                               now=lambda: at("2026-12-07T12:00:00")) == 0.0
    assert slept == [121.0]


def test_every_module_with_day_or_month_quotas_waits_clear_of_the_day_end():
    tests = Path(REPO_ROOT / "tests")
    quota = re.compile(r"=[\w.$]+/(day|month)\b")
    modules = sorted(p.stem for p in tests.glob("test_*.py") if quota.search(p.read_text()))
    assert "test_quotas" in modules and "test_token_quotas" in modules, modules
    missing = [m for m in modules
               if not hasattr(importlib.import_module(m), "clear_of_the_utc_day_end")]
    assert not missing, f"quota tests that may straddle a UTC day: {missing}"
