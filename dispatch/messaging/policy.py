"""When a message may go out: quiet hours for customers (deferred, never dropped)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from dispatch.models import OutboxMessage

CUSTOMER = "customer"


def parse_quiet_hours(spec: str) -> tuple[time, time] | None:
    """``"21:00-08:00"`` → (21:00, 08:00); empty → None (no quiet hours). ValueError if malformed."""
    spec = spec.strip()
    if not spec:
        return None
    start, sep, end = spec.partition("-")
    if not sep:
        raise ValueError(f"QUIET_HOURS must look like 21:00-08:00, got {spec!r}")
    first, last = time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
    if first == last:
        raise ValueError("QUIET_HOURS must not start and end at the same time")
    return first, last


def quiet_until(now: datetime, spec: str, tz: ZoneInfo) -> datetime | None:
    """The end of the quiet window (aware, UTC-comparable) if ``now`` falls inside it, else None.

    The window may cross midnight (21:00-08:00): at 23:00 it ends at 08:00 the next day, at 06:00 the
    same day.
    """
    window = parse_quiet_hours(spec)
    if window is None:
        return None
    first, last = window
    local = now.astimezone(tz)
    clock = local.time()
    if first < last:
        inside = first <= clock < last
        end_day = local.date()
    else:
        inside = clock >= first or clock < last
        end_day = local.date() + timedelta(days=1) if clock >= first else local.date()
    if not inside:
        return None
    return datetime.combine(end_day, last, tzinfo=tz)


def is_customer(message: OutboxMessage) -> bool:
    """Customer messages respect opt-out and quiet hours; staff messages (engineer, leader, desk) do not."""
    return bool((message.payload or {}).get("recipient_role") == CUSTOMER)
