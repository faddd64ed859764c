"""Pure SLA arithmetic: default policies, due and warning times, pauses, the repair cut-off.

Everything here takes plain values (``now`` included) and touches no database, so it is unit-tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from dispatch.vocabulary import ORDER_TYPES

HOUR = 3600

# DOMAIN.md "SLA clocks". arrival's target is the grace after the appointment start (0: due at the start).
_COMPLETION = {
    "broadband_install": 48 * HOUR,
    "iptv_install": 48 * HOUR,
    "move": 48 * HOUR,
    "opportunity": 72 * HOUR,
    "repair": 24 * HOUR,
}
_FIXED = {"take": 15 * 60, "contact": HOUR, "arrival": 0, "acceptance": 10 * 60}
DEFAULT_WARN_PERCENT = 75
ARRIVAL_WARN_SECONDS = 30 * 60  # DOMAIN: warn 30 min before the window if not checked in


@dataclass(frozen=True)
class Policy:
    target_seconds: int
    warn_percent: int


def default_policies() -> dict[tuple[str, str], Policy]:
    """(order_type, clock) → DOMAIN.md's defaults."""
    policies = {}
    for order_type in ORDER_TYPES:
        for clock, target in {**_FIXED, "completion": _COMPLETION[order_type]}.items():
            policies[(order_type, clock)] = Policy(target, DEFAULT_WARN_PERCENT)
    return policies


@dataclass(frozen=True)
class Deadline:
    due_at: datetime
    warn_at: datetime | None


def deadline(started_at: datetime, policy: Policy) -> Deadline:
    """A clock that runs ``target_seconds`` from its start, warning at ``warn_percent`` of it."""
    due = started_at + timedelta(seconds=policy.target_seconds)
    warn = started_at + timedelta(seconds=policy.target_seconds * policy.warn_percent / 100)
    return Deadline(due, warn if warn < due else None)


def arrival_deadline(
    started_at: datetime, window_start: datetime, policy: Policy, warn_seconds: int = ARRIVAL_WARN_SECONDS
) -> Deadline:
    """Arrival is due at the appointment start (plus the policy's grace); the warning comes ``warn_seconds``
    before that, never before the clock started."""
    due = window_start + timedelta(seconds=policy.target_seconds)
    warn = max(started_at, due - timedelta(seconds=warn_seconds))
    return Deadline(due, warn if warn < due else None)


def repair_same_day_deadline(received_at: datetime, cutoff: time, tz: ZoneInfo) -> datetime:
    """The repair rule seen in practice: reported before the cut-off (e.g. 16:00) → fixed the same day,
    otherwise by the end of the next day (midnight, business time)."""
    local = received_at.astimezone(tz)
    days = 1 if local.time() < cutoff else 2
    end = datetime.combine(local.date() + timedelta(days=days), time.min, tzinfo=tz)
    return end.astimezone(received_at.tzinfo)


def shifted(value: datetime | None, paused_for: timedelta) -> datetime | None:
    """A deadline moved by the time its clock was paused."""
    return None if value is None else value + paused_for


def met_or_breached(stopped_at: datetime, due_at: datetime) -> str:
    """The outcome of a clock stopped at ``stopped_at``: on time (at the deadline counts) or late."""
    return "met" if stopped_at <= due_at else "breached"


def parse_cutoff(raw: str) -> time | None:
    """``"16:00"`` → 16:00; empty → no cut-off. Raises ValueError on anything else."""
    raw = raw.strip()
    if not raw:
        return None
    hours, minutes = raw.split(":")
    return time(int(hours), int(minutes))
