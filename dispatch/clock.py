"""The injectable clock: every "now" in the system comes from here.

Production uses :class:`SystemClock`; tests install a :class:`FakeClock` on the app
(``app.extensions["clock"]``) and move time explicitly, so no test sleeps for an SLA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from flask import current_app, has_app_context


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class FakeClock:
    """A clock that only moves when told to."""

    current: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 1, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> datetime:
        self.current += timedelta(**kwargs)
        return self.current

    def set(self, when: datetime) -> datetime:
        self.current = when.astimezone(UTC)
        return self.current


_system = SystemClock()


def get_clock() -> Clock:
    """The app's clock, or the system clock outside an app context."""
    if has_app_context():
        clock: Clock = current_app.extensions.get("clock", _system)
        return clock
    return _system


def utcnow() -> datetime:
    """Now, as an aware UTC datetime, from the app's clock."""
    return get_clock().now()
