"""Business time: storage is UTC, people see DISPATCH_TZ."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import current_app, has_app_context

DEFAULT_TZ = "Asia/Shanghai"


def business_tz() -> ZoneInfo:
    name = current_app.config.get("DISPATCH_TZ", DEFAULT_TZ) if has_app_context() else DEFAULT_TZ
    return ZoneInfo(name)


def to_local(value: datetime) -> datetime:
    return value.astimezone(business_tz())


def local_day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a business day, in UTC."""
    tz = business_tz()
    start = datetime.combine(day, time.min, tzinfo=tz)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def business_day(value: datetime) -> date:
    """The business day (DISPATCH_TZ) a UTC instant falls on: the day KPIs and settlements count it in."""
    return value.astimezone(business_tz()).date()
