"""Pure SLA arithmetic (dispatch/sla/policy.py): no app, no database, every "now" passed in.

Expected values are written out from shared/DOMAIN.md ("SLA clocks"), not read back from the module.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.sla import policy
from dispatch.sla.policy import Deadline, Policy

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 09:00 in Asia/Shanghai
MIN = 60
HOUR = 3600

# --- default policies -----------------------------------------------------------------------------------

COMPLETION_HOURS = {"broadband_install": 48, "iptv_install": 48, "move": 48, "opportunity": 72, "repair": 24}
FIXED = {"take": 15 * MIN, "contact": 60 * MIN, "arrival": 0, "acceptance": 10 * MIN}


def test_there_is_a_default_policy_for_every_order_type_and_clock() -> None:
    policies = policy.default_policies()
    assert len(policies) == 25
    assert set(policies) == {
        (order_type, clock) for order_type in COMPLETION_HOURS for clock in [*FIXED, "completion"]
    }


@pytest.mark.parametrize("order_type", list(COMPLETION_HOURS))
def test_default_policies_hold_the_domain_targets_and_warn_at_75_percent(order_type: str) -> None:
    policies = policy.default_policies()
    for clock, seconds in FIXED.items():
        assert policies[(order_type, clock)] == Policy(seconds, 75), clock
    assert policies[(order_type, "completion")] == Policy(COMPLETION_HOURS[order_type] * HOUR, 75)


def test_default_policies_are_a_fresh_dict_each_time() -> None:
    first = policy.default_policies()
    first[("repair", "take")] = Policy(1, 1)
    assert policy.default_policies()[("repair", "take")] == Policy(15 * MIN, 75)


# --- deadline -------------------------------------------------------------------------------------------


def test_a_clock_is_due_after_its_target_and_warns_at_warn_percent() -> None:
    assert policy.deadline(T0, Policy(HOUR, 75)) == Deadline(
        T0 + timedelta(minutes=60), T0 + timedelta(minutes=45)
    )
    assert policy.deadline(T0, Policy(10 * MIN, 50)) == Deadline(
        T0 + timedelta(minutes=10), T0 + timedelta(minutes=5)
    )
    assert policy.deadline(T0, Policy(48 * HOUR, 75)) == Deadline(
        T0 + timedelta(hours=48), T0 + timedelta(hours=36)
    )


def test_a_fractional_warning_keeps_its_fraction() -> None:
    assert policy.deadline(T0, Policy(15 * MIN, 75)).warn_at == T0 + timedelta(seconds=675)
    assert policy.deadline(T0, Policy(10, 33)).warn_at == T0 + timedelta(seconds=3.3)


def test_a_clock_warning_at_100_percent_has_no_warning() -> None:
    assert policy.deadline(T0, Policy(HOUR, 100)) == Deadline(T0 + timedelta(hours=1), None)


def test_a_zero_target_is_due_at_once_with_no_warning() -> None:
    assert policy.deadline(T0, Policy(0, 75)) == Deadline(T0, None)


@given(
    target=st.integers(min_value=1, max_value=30 * 24 * HOUR),
    percent=st.integers(min_value=1, max_value=99),
)
def test_a_warning_below_100_percent_always_comes_after_the_start_and_before_the_deadline(
    target: int, percent: int
) -> None:
    result = policy.deadline(T0, Policy(target, percent))
    assert result.due_at == T0 + timedelta(seconds=target)
    assert result.warn_at is not None
    assert T0 < result.warn_at < result.due_at


# --- arrival --------------------------------------------------------------------------------------------

ARRIVAL = Policy(0, 75)


def test_arrival_is_due_at_the_window_start_and_warns_30_minutes_before() -> None:
    window = T0 + timedelta(days=1)
    assert policy.arrival_deadline(T0, window, ARRIVAL) == Deadline(window, window - timedelta(minutes=30))


def test_arrival_grace_moves_the_deadline_and_the_warning() -> None:
    window = T0 + timedelta(days=1)
    grace = Policy(15 * MIN, 75)
    assert policy.arrival_deadline(T0, window, grace) == Deadline(
        window + timedelta(minutes=15), window - timedelta(minutes=15)
    )


def test_the_arrival_warning_lead_is_configurable() -> None:
    window = T0 + timedelta(hours=5)
    result = policy.arrival_deadline(T0, window, ARRIVAL, warn_seconds=HOUR)
    assert result == Deadline(window, window - timedelta(hours=1))


def test_an_arrival_window_sooner_than_30_minutes_warns_at_once_never_before_the_start() -> None:
    window = T0 + timedelta(minutes=20)
    assert policy.arrival_deadline(T0, window, ARRIVAL) == Deadline(window, T0)


def test_an_arrival_window_exactly_30_minutes_away_warns_at_the_start() -> None:
    window = T0 + timedelta(minutes=30)
    assert policy.arrival_deadline(T0, window, ARRIVAL) == Deadline(window, T0)


def test_an_arrival_window_starting_now_or_already_begun_has_no_warning() -> None:
    assert policy.arrival_deadline(T0, T0, ARRIVAL) == Deadline(T0, None)
    past = T0 - timedelta(minutes=10)
    assert policy.arrival_deadline(T0, past, ARRIVAL) == Deadline(past, None)


# --- the repair cut-off ---------------------------------------------------------------------------------

SIXTEEN = time(16, 0)


def local(y: int, m: int, d: int, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("received", "due"),
    [
        pytest.param(local(2026, 11, 25, 9), local(2026, 11, 26, 0), id="morning-same-day"),
        pytest.param(local(2026, 11, 25, 0), local(2026, 11, 26, 0), id="just-after-midnight"),
        pytest.param(local(2026, 11, 25, 15, 59, 59), local(2026, 11, 26, 0), id="one-second-before"),
        pytest.param(local(2026, 11, 25, 16), local(2026, 11, 27, 0), id="at-cutoff-next-day"),
        pytest.param(local(2026, 11, 25, 16, 0, 1), local(2026, 11, 27, 0), id="after-cutoff"),
        pytest.param(local(2026, 11, 25, 23, 59), local(2026, 11, 27, 0), id="late-evening"),
        pytest.param(local(2026, 12, 31, 10), local(2027, 1, 1, 0), id="new-year"),
        pytest.param(local(2026, 2, 28, 17), local(2026, 3, 2, 0), id="end-of-february"),
    ],
)
def test_a_repair_before_the_cutoff_is_due_the_same_day_else_by_the_end_of_the_next(
    received: datetime, due: datetime
) -> None:
    result = policy.repair_same_day_deadline(received.astimezone(UTC), SIXTEEN, SHANGHAI)
    assert result == due
    assert result.tzinfo == UTC  # the caller's timezone comes back


def test_the_cutoff_is_judged_in_business_time_across_a_utc_date_boundary() -> None:
    # 2026-11-25 17:00 UTC is 2026-11-26 01:00 in Shanghai: early morning, so due at the end of the 26th.
    early = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
    assert policy.repair_same_day_deadline(early, SIXTEEN, SHANGHAI) == datetime(
        2026, 11, 26, 16, 0, tzinfo=UTC
    )
    # 2026-11-25 08:30 UTC is 16:30 in Shanghai: after the cut-off, due at the end of the 26th (local).
    late = datetime(2026, 11, 25, 8, 30, tzinfo=UTC)
    assert policy.repair_same_day_deadline(late, SIXTEEN, SHANGHAI) == datetime(
        2026, 11, 26, 16, 0, tzinfo=UTC
    )
    # 2026-11-25 07:59 UTC is 15:59 in Shanghai: before the cut-off, due at the end of the 25th (local).
    before = datetime(2026, 11, 25, 7, 59, tzinfo=UTC)
    assert policy.repair_same_day_deadline(before, SIXTEEN, SHANGHAI) == datetime(
        2026, 11, 25, 16, 0, tzinfo=UTC
    )


def test_the_repair_deadline_comes_back_in_the_callers_timezone() -> None:
    received = local(2026, 11, 25, 9)
    assert policy.repair_same_day_deadline(received, SIXTEEN, SHANGHAI) == local(2026, 11, 26, 0)
    assert policy.repair_same_day_deadline(received, SIXTEEN, SHANGHAI).tzinfo == SHANGHAI


# --- pauses and outcomes --------------------------------------------------------------------------------


def test_shifting_moves_a_deadline_by_the_paused_time_and_keeps_no_deadline_absent() -> None:
    assert policy.shifted(T0, timedelta(minutes=7)) == T0 + timedelta(minutes=7)
    assert policy.shifted(T0, timedelta(0)) == T0
    assert policy.shifted(None, timedelta(hours=1)) is None


@given(
    target=st.integers(min_value=0, max_value=7 * 24 * HOUR),
    percent=st.integers(min_value=1, max_value=100),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10 * HOUR), st.integers(min_value=0, max_value=10 * HOUR)
        ),
        max_size=8,
    ),
)
def test_any_pause_sequence_moves_the_deadline_by_exactly_the_paused_time(
    target: int, percent: int, steps: list[tuple[int, int]]
) -> None:
    """Run for ``r`` seconds, pause for ``p`` seconds, again and again: due = start + target + Σ p."""
    original = policy.deadline(T0, Policy(target, percent))
    due, warn = original.due_at, original.warn_at
    now = T0
    paused_total = timedelta(0)
    for running, paused in steps:
        now += timedelta(seconds=running)
        paused_for = timedelta(seconds=paused)
        now += paused_for  # resumed
        paused_total += paused_for
        shifted_due = policy.shifted(due, paused_for)
        assert shifted_due is not None
        due, warn = shifted_due, policy.shifted(warn, paused_for)
    assert due == T0 + timedelta(seconds=target) + paused_total
    if original.warn_at is None:
        assert warn is None
    else:
        assert warn == original.warn_at + paused_total
        assert warn < due


@pytest.mark.parametrize(
    ("stopped", "outcome"),
    [
        (T0 - timedelta(hours=1), "met"),
        (T0 - timedelta(microseconds=1), "met"),
        (T0, "met"),  # exactly at the deadline counts as on time
        (T0 + timedelta(microseconds=1), "breached"),
        (T0 + timedelta(seconds=1), "breached"),
    ],
)
def test_a_clock_stopped_by_its_deadline_is_met_and_after_it_breached(
    stopped: datetime, outcome: str
) -> None:
    assert policy.met_or_breached(stopped, T0) == outcome


# --- the cut-off setting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("16:00", time(16, 0)),
        (" 16:00 ", time(16, 0)),
        ("9:05", time(9, 5)),
        ("00:00", time(0, 0)),
        ("23:59", time(23, 59)),
    ],
)
def test_a_cutoff_parses_as_hours_and_minutes(raw: str, parsed: time) -> None:
    assert policy.parse_cutoff(raw) == parsed


@pytest.mark.parametrize("raw", ["", "   ", "\t"])
def test_an_empty_cutoff_means_none(raw: str) -> None:
    assert policy.parse_cutoff(raw) is None


@pytest.mark.parametrize(
    "raw", ["16", "sixteen", "16:00:00", "24:00", "16:60", "-1:00", "16:xx", ":", "16-00"]
)
def test_a_garbage_cutoff_raises(raw: str) -> None:
    with pytest.raises(ValueError):
        policy.parse_cutoff(raw)
