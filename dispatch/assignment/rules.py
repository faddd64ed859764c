"""Hard assignment rules as a pure function: which rules would assigning this engineer break?

Auto-dispatch must break none; a dispatcher's manual choice is honoured and each broken rule is reported
as a warning (CONTRACT: assign).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import NamedTuple, Protocol


class Shift(NamedTuple):  # a tuple: thousands are built per candidate list
    weekday: int  # ISO, 1 = Monday
    start: time
    end: time


@dataclass(frozen=True)
class EngineerFacts:
    active: bool
    skills: frozenset[str]
    district_ids: frozenset[int]
    shifts: tuple[Shift, ...]
    daily_capacity: int
    load_that_day: int
    leaves: tuple[tuple[date, date], ...] = ()  # inclusive local dates
    excluded: bool = False  # returned this order, or let its take clock breach (auto-dispatch skips them)


class Engineer(Protocol):
    """What the rules read of an engineer: :class:`EngineerFacts`, or the dispatching service's own rows."""

    @property
    def active(self) -> bool: ...
    @property
    def skills(self) -> Collection[str]: ...
    @property
    def district_ids(self) -> Collection[int]: ...
    @property
    def shifts(self) -> Sequence[Shift]: ...
    @property
    def daily_capacity(self) -> int: ...
    @property
    def load_that_day(self) -> int: ...
    @property
    def leaves(self) -> Sequence[tuple[date, date]]: ...
    @property
    def excluded(self) -> bool: ...


@dataclass(frozen=True)
class OrderFacts:
    order_type: str
    district_id: int | None
    window_start: datetime  # local time (DISPATCH_TZ): the appointment, the requested window, or now
    window_end: datetime


def on_shift(shifts: Sequence[Shift], start: datetime, end: datetime) -> bool:
    """True when a shift on the window's day contains its start or overlaps it (local times)."""
    day, begin = start.isoweekday(), start.time()
    finish = end.time() if end.date() == start.date() else time.max
    return any(
        s.weekday == day and (s.start <= begin < s.end or (begin < s.end and s.start < finish))
        for s in shifts
    )


def on_leave(leaves: Sequence[tuple[date, date]], start: datetime) -> bool:
    """True when the window's (local) day falls in one of the leave ranges."""
    day = start.date()
    return any(first <= day <= last for first, last in leaves)


def violations(order: OrderFacts, engineer: Engineer) -> list[str]:
    """Codes of the hard rules broken, in the order of :data:`dispatch.assignment.scoring.HARD_FILTERS`:
    ``inactive``, ``skill``, ``district``, ``off_shift``, ``on_leave``, ``capacity``, ``excluded``."""
    broken = []
    if not engineer.active:
        broken.append("inactive")
    if order.order_type not in engineer.skills:
        broken.append("skill")
    if order.district_id is None or order.district_id not in engineer.district_ids:
        broken.append("district")
    if not on_shift(engineer.shifts, order.window_start, order.window_end):
        broken.append("off_shift")
    if on_leave(engineer.leaves, order.window_start):
        broken.append("on_leave")
    if engineer.load_that_day >= engineer.daily_capacity:
        broken.append("capacity")
    if engineer.excluded:
        broken.append("excluded")
    return broken


MESSAGES = {
    "inactive": "工程师已停用",
    "skill": "工程师不具备该工单类型的技能",
    "district": "工程师不负责该区县",
    "off_shift": "预约或期望时段不在工程师班次内",
    "on_leave": "工程师当日休假",
    "capacity": "工程师当日工单已满",
    "excluded": "工程师曾退回此单或超时未接单",
}
