"""Hard assignment rules as a pure function: which rules would assigning this engineer break?

Auto-dispatch must break none; a dispatcher's manual choice is honoured and each broken rule is reported
as a warning (CONTRACT: assign).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time


@dataclass(frozen=True)
class Shift:
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


@dataclass(frozen=True)
class OrderFacts:
    order_type: str
    district_id: int | None
    window_start: datetime  # local time (DISPATCH_TZ): the appointment, the requested window, or now
    window_end: datetime


def on_shift(shifts: tuple[Shift, ...], start: datetime, end: datetime) -> bool:
    """True when a shift on the window's day contains its start or overlaps it (local times)."""
    day, begin = start.isoweekday(), start.time()
    finish = end.time() if end.date() == start.date() else time.max
    return any(
        s.weekday == day and (s.start <= begin < s.end or (begin < s.end and s.start < finish))
        for s in shifts
    )


def violations(order: OrderFacts, engineer: EngineerFacts) -> list[str]:
    """Codes of the hard rules broken: ``inactive``, ``skill``, ``district``, ``off_shift``, ``capacity``."""
    broken = []
    if not engineer.active:
        broken.append("inactive")
    if order.order_type not in engineer.skills:
        broken.append("skill")
    if order.district_id is None or order.district_id not in engineer.district_ids:
        broken.append("district")
    if not on_shift(engineer.shifts, order.window_start, order.window_end):
        broken.append("off_shift")
    if engineer.load_that_day >= engineer.daily_capacity:
        broken.append("capacity")
    return broken


MESSAGES = {
    "inactive": "工程师已停用",
    "skill": "工程师不具备该工单类型的技能",
    "district": "工程师不负责该区县",
    "off_shift": "预约或期望时段不在工程师班次内",
    "capacity": "工程师当日工单已满",
}
