"""Quiet hours (dispatch/messaging/policy.py): customer SMS inside the window wait for its end."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from dispatch.messaging.policy import parse_quiet_hours, quiet_until

KM = ZoneInfo("Asia/Shanghai")


def local(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=KM)


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (local(25, 20, 59), None),
        (local(25, 21, 0), local(26, 8, 0)),  # the window crosses midnight
        (local(25, 23, 30), local(26, 8, 0)),
        (local(26, 0, 0), local(26, 8, 0)),
        (local(26, 7, 59), local(26, 8, 0)),
        (local(26, 8, 0), None),
        (local(26, 12, 0), None),
    ],
)
def test_the_default_window_runs_from_nine_at_night_to_eight_in_the_morning(now, until) -> None:
    assert quiet_until(now.astimezone(UTC), "21:00-08:00", KM) == until


def test_a_window_within_one_day_and_no_window() -> None:
    assert quiet_until(local(25, 12, 30), "12:00-14:00", KM) == local(25, 14, 0)
    assert quiet_until(local(25, 14, 0), "12:00-14:00", KM) is None
    assert quiet_until(local(25, 23, 0), "", KM) is None


@pytest.mark.parametrize("spec", ["21:00", "21:00-21:00", "9pm-8am", "25:00-08:00"])
def test_malformed_quiet_hours_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_quiet_hours(spec)
