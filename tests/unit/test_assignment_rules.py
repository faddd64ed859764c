"""The hard assignment rules (dispatch/assignment/rules.py): pure functions over local times, no app."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.assignment.rules import MESSAGES, EngineerFacts, OrderFacts, Shift, on_shift, violations
from dispatch.assignment.scoring import HARD_FILTERS
from dispatch.vocabulary import ORDER_TYPES

WED = date(2026, 11, 25)  # ISO weekday 3
THU = date(2026, 11, 26)
DAY_SHIFT = Shift(3, time(8, 0), time(20, 0))


def at(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm))


def fitting_engineer(**changes: object) -> EngineerFacts:
    facts = EngineerFacts(
        active=True,
        skills=frozenset({"broadband_install", "repair"}),
        district_ids=frozenset({1, 2}),
        shifts=(DAY_SHIFT,),
        daily_capacity=6,
        load_that_day=2,
    )
    return replace(facts, **changes)  # type: ignore[arg-type]


def order(**changes: object) -> OrderFacts:
    facts = OrderFacts(
        order_type="broadband_install", district_id=1, window_start=at(WED, 9), window_end=at(WED, 12)
    )
    return replace(facts, **changes)  # type: ignore[arg-type]


# --- on_shift -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        pytest.param(at(WED, 9), at(WED, 12), True, id="inside"),
        pytest.param(at(WED, 8), at(WED, 9), True, id="starts-when-the-shift-starts"),
        pytest.param(at(WED, 6), at(WED, 8), False, id="ends-when-the-shift-starts"),
        pytest.param(at(WED, 6), at(WED, 8, 1), True, id="overlaps-the-shift-start-by-a-minute"),
        pytest.param(at(WED, 19), at(WED, 21), True, id="overlaps-the-shift-end"),
        pytest.param(at(WED, 19, 59), at(WED, 21), True, id="starts-a-minute-before-the-shift-ends"),
        pytest.param(at(WED, 20), at(WED, 22), False, id="starts-when-the-shift-ends"),
        pytest.param(at(WED, 6), at(WED, 22), True, id="covers-the-whole-shift"),
        pytest.param(at(WED, 5), at(WED, 7), False, id="before-the-shift"),
        pytest.param(at(WED, 8), at(WED, 8), True, id="instant-at-the-shift-start"),
        pytest.param(at(WED, 20), at(WED, 20), False, id="instant-at-the-shift-end"),
        pytest.param(at(WED, 12), at(WED, 12), True, id="instant-inside"),
        pytest.param(at(THU, 9), at(THU, 12), False, id="another-weekday"),
        pytest.param(at(WED, 22), at(THU, 2), False, id="crosses-midnight-after-the-shift"),
        pytest.param(at(WED, 19), at(THU, 1), True, id="crosses-midnight-from-inside-the-shift"),
        pytest.param(at(WED, 6), at(THU, 0), True, id="ends-at-midnight-covering-the-shift"),
    ],
)
def test_on_shift_against_a_wednesday_day_shift(start: datetime, end: datetime, expected: bool) -> None:
    assert on_shift((DAY_SHIFT,), start, end) is expected


def test_a_window_crossing_midnight_is_judged_by_the_shifts_of_the_day_it_starts() -> None:
    late = Shift(3, time(21, 0), time(23, 59))
    night_after = Shift(4, time(0, 0), time(6, 0))
    assert on_shift((late,), at(WED, 23, 30), at(THU, 1)) is True
    assert on_shift((night_after,), at(WED, 23, 30), at(THU, 1)) is False
    # Ending exactly at midnight the next day still means "until the end of the start day".
    assert on_shift((Shift(3, time(23, 0), time(23, 30)),), at(WED, 22), at(THU, 0)) is True


def test_no_shifts_means_never_on_shift() -> None:
    assert on_shift((), at(WED, 9), at(WED, 12)) is False


def test_any_one_of_several_shifts_is_enough() -> None:
    split = (
        Shift(3, time(8, 0), time(12, 0)),
        Shift(3, time(14, 0), time(18, 0)),
        Shift(5, time(0), time(23)),
    )
    assert on_shift(split, at(WED, 15), at(WED, 16)) is True
    assert on_shift(split, at(WED, 12), at(WED, 14)) is False  # the lunch gap
    assert on_shift(split, at(WED, 11), at(WED, 15)) is True


def test_sunday_is_iso_weekday_seven() -> None:
    sunday = date(2026, 11, 29)
    assert on_shift((Shift(7, time(8), time(20)),), at(sunday, 9), at(sunday, 10)) is True
    assert on_shift((Shift(0, time(8), time(20)),), at(sunday, 9), at(sunday, 10)) is False


# --- violations -----------------------------------------------------------------------------------------


def test_a_fitting_engineer_breaks_no_rule() -> None:
    assert violations(order(), fitting_engineer()) == []


@pytest.mark.parametrize(
    ("the_order", "engineer", "code"),
    [
        pytest.param(order(), fitting_engineer(active=False), "inactive", id="inactive"),
        pytest.param(order(order_type="iptv_install"), fitting_engineer(), "skill", id="skill"),
        pytest.param(order(), fitting_engineer(skills=frozenset()), "skill", id="no-skills"),
        pytest.param(order(district_id=3), fitting_engineer(), "district", id="district"),
        pytest.param(order(district_id=None), fitting_engineer(), "district", id="address-without-district"),
        pytest.param(
            order(window_start=at(WED, 21), window_end=at(WED, 22)), fitting_engineer(), "off_shift", id="off"
        ),
        pytest.param(order(), fitting_engineer(shifts=()), "off_shift", id="no-shifts"),
        pytest.param(order(), fitting_engineer(load_that_day=6), "capacity", id="full"),
        pytest.param(order(), fitting_engineer(load_that_day=9), "capacity", id="over-full"),
        pytest.param(
            order(), fitting_engineer(daily_capacity=0, load_that_day=0), "capacity", id="zero-capacity"
        ),
    ],
)
def test_each_broken_rule_has_its_code(the_order: OrderFacts, engineer: EngineerFacts, code: str) -> None:
    assert violations(the_order, engineer) == [code]
    assert MESSAGES[code]


def test_one_below_capacity_is_still_within_it() -> None:
    assert violations(order(), fitting_engineer(daily_capacity=3, load_that_day=2)) == []


def test_every_broken_rule_is_reported_in_a_fixed_order() -> None:
    day = order().window_start.date()
    nothing_fits = EngineerFacts(
        active=False,
        skills=frozenset(),
        district_ids=frozenset(),
        shifts=(),
        daily_capacity=1,
        load_that_day=1,
        leaves=((day, day),),
        excluded=True,
    )
    everything = ["inactive", "skill", "district", "off_shift", "on_leave", "capacity", "excluded"]
    assert violations(order(), nothing_fits) == everything
    assert set(MESSAGES) == set(everything)
    assert list(HARD_FILTERS) == everything  # the scorer's columns are the same rules in the same order


# --- properties -----------------------------------------------------------------------------------------


def minute_of(t: time) -> int:
    return t.hour * 60 + t.minute


def reference_on_shift(shifts: tuple[Shift, ...], start: datetime, end: datetime) -> bool:
    """Minute arithmetic: does [start, end), cut at the end of its first day, meet a shift that weekday?"""
    begin = minute_of(start.time())
    finish = minute_of(end.time()) if end.date() == start.date() else 24 * 60
    for s in shifts:
        if s.weekday != start.isoweekday():
            continue
        low, high = minute_of(s.start), minute_of(s.end)
        if (low <= begin < high) if begin == finish else max(low, begin) < min(high, finish):
            return True
    return False


minute_times = st.builds(time, st.integers(0, 23), st.integers(0, 59))
windows_start = st.builds(
    datetime.combine, st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 31)), minute_times
)


@st.composite
def shifts_strategy(draw: st.DrawFn) -> Shift:
    a, b = sorted(draw(st.lists(minute_times, min_size=2, max_size=2, unique=True)))
    return Shift(draw(st.integers(1, 7)), a, b)


@given(
    shifts=st.lists(shifts_strategy(), max_size=4).map(tuple),
    start=windows_start,
    minutes=st.integers(0, 36 * 60),
)
def test_on_shift_agrees_with_minute_arithmetic(
    shifts: tuple[Shift, ...], start: datetime, minutes: int
) -> None:
    end = start + timedelta(minutes=minutes)
    assert on_shift(shifts, start, end) is reference_on_shift(shifts, start, end)


@st.composite
def fitting_case(draw: st.DrawFn) -> tuple[OrderFacts, EngineerFacts]:
    """An order and an engineer meeting every hard rule for it (plus unrelated skills, districts, shifts)."""
    start = draw(windows_start)
    end = start + timedelta(minutes=draw(st.integers(0, 8 * 60)))
    begin = start.time()
    after_begin = (
        time.max
        if begin >= time(23, 59)
        else (datetime.combine(start.date(), begin) + timedelta(minutes=1)).time()
    )
    covering = Shift(
        start.isoweekday(),
        draw(st.builds(time, st.integers(0, begin.hour))),
        draw(st.sampled_from([after_begin, time.max])),
    )
    order_type = draw(st.sampled_from(ORDER_TYPES))
    district = draw(st.integers(1, 20))
    capacity = draw(st.integers(1, 12))
    facts = OrderFacts(order_type=order_type, district_id=district, window_start=start, window_end=end)
    engineer = EngineerFacts(
        active=True,
        skills=frozenset(draw(st.lists(st.sampled_from(ORDER_TYPES)))) | {order_type},
        district_ids=frozenset(draw(st.lists(st.integers(1, 20)))) | {district},
        shifts=(covering, *draw(st.lists(shifts_strategy(), max_size=3))),
        daily_capacity=capacity,
        load_that_day=draw(st.integers(0, capacity - 1)),
        leaves=tuple(draw(st.lists(leave_away_from(start.date()), max_size=2))),
    )
    return facts, engineer


@st.composite
def leave_away_from(draw: st.DrawFn, day: date) -> tuple[date, date]:
    """A leave range that does not touch ``day``."""
    length = draw(st.integers(0, 10))
    if draw(st.booleans()):
        last = day - timedelta(days=draw(st.integers(1, 30)))
        return last - timedelta(days=length), last
    first = day + timedelta(days=draw(st.integers(1, 30)))
    return first, first + timedelta(days=length)


def without(engineer: EngineerFacts, facts: OrderFacts, rule: str) -> EngineerFacts:
    """The engineer with exactly one condition of ``rule`` taken away."""
    if rule == "inactive":
        return replace(engineer, active=False)
    if rule == "skill":
        return replace(engineer, skills=engineer.skills - {facts.order_type})
    if rule == "district":
        return replace(engineer, district_ids=engineer.district_ids - {facts.district_id})
    if rule == "off_shift":
        day = facts.window_start.isoweekday()
        return replace(engineer, shifts=tuple(s for s in engineer.shifts if s.weekday != day))
    if rule == "on_leave":
        day = facts.window_start.date()
        return replace(engineer, leaves=(*engineer.leaves, (day - timedelta(days=1), day)))
    if rule == "excluded":
        return replace(engineer, excluded=True)
    assert rule == "capacity"
    return replace(engineer, load_that_day=engineer.daily_capacity)


@given(case=fitting_case())
def test_an_engineer_meeting_every_condition_breaks_no_rule(case: tuple[OrderFacts, EngineerFacts]) -> None:
    facts, engineer = case
    assert violations(facts, engineer) == []


@given(case=fitting_case(), rule=st.sampled_from(sorted(MESSAGES)))
def test_taking_away_one_condition_breaks_exactly_that_rule(
    case: tuple[OrderFacts, EngineerFacts], rule: str
) -> None:
    facts, engineer = case
    assert violations(facts, without(engineer, facts, rule)) == [rule]


@given(case=fitting_case())
def test_an_order_without_a_known_district_breaks_only_the_district_rule(
    case: tuple[OrderFacts, EngineerFacts],
) -> None:
    facts, engineer = case
    assert violations(replace(facts, district_id=None), engineer) == ["district"]
