"""SLA clocks driven by the real workflow (dispatch.workflow.apply) and the tick, with the injected clock.

No test sleeps: time moves only through the FakeClock. Expected targets come from shared/DOMAIN.md ("SLA
clocks"), written out here rather than read from dispatch/sla/policy.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from dispatch import workflow
from dispatch.clock import FakeClock
from dispatch.extensions import db
from dispatch.models import Alert, Engineer, Order, OrderEvent, OutboxMessage, SlaClock
from dispatch.sla import clocks
from dispatch.sla.tick import TickResult, tick
from tests.conftest import T0
from tests.services.test_workflow import (
    ACCEPTANCE,
    DISPATCHER,
    ITP,
    LATER_WINDOW,
    WINDOW,
    Flow,
    engineer_actor,
    satisfy_checklist,
)

LEADER_PHONE = "+8613700001111"
DESK_PHONE = "+8613700002222"
ENGINEER_CLOCKS = ("take", "contact", "arrival", "acceptance")


@pytest.fixture
def flow(clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]) -> Flow:
    return Flow(clock, make_order, make_engineer)


@pytest.fixture
def desk_phone(session_app: Flask, no_desk_phone: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """DISPATCH_DESK_PHONE configured for this test only (the app is shared by the session)."""
    monkeypatch.setitem(session_app.config, "DISPATCH_DESK_PHONE", DESK_PHONE)
    return DESK_PHONE


@pytest.fixture(autouse=True)
def no_desk_phone(session_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """No desk phone unless a test asks for one (whatever the environment says)."""
    monkeypatch.setitem(session_app.config, "DISPATCH_DESK_PHONE", None)


# --- helpers --------------------------------------------------------------------------------------------


def rows_of(order: Order, clock: str | None = None) -> list[SlaClock]:
    db.session.flush()
    query = sa.select(SlaClock).where(SlaClock.order_id == order.id)
    if clock is not None:
        query = query.where(SlaClock.clock == clock)
    return list(db.session.scalars(query.order_by(SlaClock.id).execution_options(populate_existing=True)))


def only(order: Order, clock: str) -> SlaClock:
    rows = rows_of(order, clock)
    assert len(rows) == 1, [(r.clock, r.status) for r in rows]
    return rows[0]


def live_of(order: Order) -> dict[str, str]:
    return {r.clock: r.status for r in rows_of(order) if r.status in ("running", "paused")}


def state(row: SlaClock) -> tuple[Any, ...]:
    return (
        row.id,
        row.status,
        row.started_at,
        row.due_at,
        row.warn_at,
        row.warned_at,
        row.paused_seconds,
        row.stopped_at,
        row.breached_at,
        row.outcome,
    )


def alerts_of(order: Order, kind: str | None = None) -> list[Alert]:
    query = sa.select(Alert).where(Alert.order_id == order.id)
    if kind is not None:
        query = query.where(Alert.kind == kind)
    return list(db.session.scalars(query.order_by(Alert.id)))


def sla_events(order: Order, action: str) -> list[OrderEvent]:
    query = sa.select(OrderEvent).where(OrderEvent.order_id == order.id, OrderEvent.action == action)
    return list(db.session.scalars(query.order_by(OrderEvent.id)))


def sms_of(order: Order) -> list[OutboxMessage]:
    """The order's SLA messages (tick-written; transitions write others, see test_sms_triggers.py)."""
    query = sa.select(OutboxMessage).where(
        OutboxMessage.order_id == order.id, OutboxMessage.template.in_(("sla_warning", "sla_breach"))
    )
    return list(db.session.scalars(query.order_by(OutboxMessage.id)))


def total(model: Any, *where: Any) -> int:
    return int(db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)


def run_tick(clock: FakeClock, **kw: Any) -> TickResult:
    result = tick(clock.now(), **kw)
    db.session.expire_all()
    return result


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


# --- intake: the completion clock -----------------------------------------------------------------------


def test_a_clock_row_names_every_column_but_the_id(app: Flask, make_order: Callable[..., Order]) -> None:
    """Hotline intake inserts clock_row's dict as it is (dispatch/services/intake.py): a key that is not a
    column, or a column left out, would be dropped or defaulted there without an error."""
    row = clocks.clock_row(make_order(), "completion", T0)
    table: sa.Table = SlaClock.__table__  # type: ignore[assignment]
    assert set(row) == {column.key for column in table.c if not column.primary_key}


@pytest.mark.parametrize(
    ("order_type", "hours"),
    [("broadband_install", 48), ("iptv_install", 48), ("move", 48), ("repair", 24), ("opportunity", 72)],
)
def test_intake_starts_the_completion_clock(
    make_order: Callable[..., Order], order_type: str, hours: int
) -> None:
    order = make_order(order_type=order_type)
    row = only(order, "completion")
    assert row.status == "running"
    assert row.started_at == T0
    assert row.due_at == T0 + timedelta(hours=hours)
    assert row.warn_at == T0 + timedelta(hours=hours * 0.75)
    assert (row.target_seconds, row.warn_percent, row.paused_seconds) == (hours * 3600, 75, 0)
    assert row.engineer_id is None
    assert (row.warned_at, row.breached_at, row.stopped_at, row.outcome) == (None, None, None, None)
    assert live_of(order) == {"completion": "running"}


def test_a_repair_before_the_cutoff_is_due_at_the_end_of_the_day(
    app: Flask, monkeypatch: pytest.MonkeyPatch, make_order: Callable[..., Order]
) -> None:
    monkeypatch.setitem(app.config, "REPAIR_CUTOFF", "16:00")
    order = make_order(order_type="repair")  # T0 is 09:00 in Shanghai
    row = only(order, "completion")
    due = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)  # midnight in Shanghai
    assert row.due_at == due
    assert row.target_seconds == 15 * 3600
    assert row.warn_at == T0 + timedelta(hours=15 * 0.75)


def test_a_repair_after_the_cutoff_is_due_at_the_end_of_the_next_day(
    app: Flask, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, make_order: Callable[..., Order]
) -> None:
    monkeypatch.setitem(app.config, "REPAIR_CUTOFF", "16:00")
    clock.set(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))  # 16:00 in Shanghai: at the cut-off
    order = make_order(order_type="repair")
    assert only(order, "completion").due_at == datetime(2026, 11, 26, 16, 0, tzinfo=UTC)


def test_the_cutoff_applies_to_repairs_only(
    app: Flask, monkeypatch: pytest.MonkeyPatch, make_order: Callable[..., Order]
) -> None:
    monkeypatch.setitem(app.config, "REPAIR_CUTOFF", "16:00")
    order = make_order(order_type="broadband_install")
    assert only(order, "completion").due_at == T0 + timedelta(hours=48)


# --- the engineer's clocks ------------------------------------------------------------------------------


def test_assign_starts_take_for_the_engineer(flow: Flow) -> None:
    order, engineer = flow.order_in("dispatched")
    at = flow.clock.now()
    take = only(order, "take")
    assert (take.status, take.engineer_id, take.started_at) == ("running", engineer.id, at)
    assert take.due_at == at + minutes(15)
    assert take.warn_at == at + minutes(15 * 0.75)
    assert live_of(order) == {"completion": "running", "take": "running"}
    assert only(order, "completion").engineer_id is None


def test_take_on_time_meets_take_and_starts_contact(flow: Flow) -> None:
    order, engineer = flow.order_in("taken")
    at = flow.clock.now()
    take = only(order, "take")
    assert (take.status, take.stopped_at, take.breached_at, take.outcome) == ("met", at, None, None)
    contact = only(order, "contact")
    assert (contact.status, contact.engineer_id, contact.started_at) == ("running", engineer.id, at)
    assert contact.due_at == at + minutes(60)
    assert contact.warn_at == at + minutes(45)


def test_take_exactly_at_the_deadline_is_met(flow: Flow) -> None:
    order, engineer = flow.order_in("dispatched")
    flow.clock.advance(minutes=14)  # the act below adds the 15th minute
    flow.act(order, "take", engineer_actor(engineer))
    take = only(order, "take")
    assert flow.clock.now() == take.due_at
    assert take.status == "met"


def test_a_late_take_breaches_take_and_still_starts_contact(flow: Flow) -> None:
    order, engineer = flow.order_in("dispatched")
    due = only(order, "take").due_at
    flow.clock.advance(minutes=20)
    flow.act(order, "take", engineer_actor(engineer))
    at = flow.clock.now()
    take = only(order, "take")
    assert (take.status, take.stopped_at, take.breached_at) == ("breached", at, at)
    assert take.breached_at > due
    assert only(order, "contact").status == "running"


def test_a_failed_contact_attempt_changes_no_clock(flow: Flow) -> None:
    order, engineer = flow.order_in("taken")
    before = [state(r) for r in rows_of(order)]
    flow.act(order, "contact_attempt", engineer_actor(engineer), {"note": "无人接听"})
    assert [state(r) for r in rows_of(order)] == before


def test_appoint_meets_contact_and_starts_arrival_due_at_the_window(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    at = flow.clock.now()
    contact = only(order, "contact")
    assert (contact.status, contact.stopped_at) == ("met", at)
    arrival = only(order, "arrival")
    assert (arrival.status, arrival.engineer_id, arrival.started_at) == ("running", engineer.id, at)
    assert arrival.due_at == WINDOW["start"]
    assert arrival.warn_at == WINDOW["start"] - minutes(30)
    assert live_of(order) == {"completion": "running", "arrival": "running"}


def test_a_late_appointment_breaches_contact(flow: Flow) -> None:
    order, engineer = flow.order_in("taken")
    flow.clock.advance(hours=2)
    flow.act(order, "appoint", engineer_actor(engineer), {"appointment": WINDOW})
    contact = only(order, "contact")
    assert (contact.status, contact.breached_at) == ("breached", flow.clock.now())


def test_an_appointment_sooner_than_30_minutes_warns_at_once(flow: Flow) -> None:
    order, engineer = flow.order_in("taken")
    soon = {"start": flow.clock.now() + minutes(21), "end": flow.clock.now() + minutes(120)}
    flow.act(order, "appoint", engineer_actor(engineer), {"appointment": soon})
    arrival = only(order, "arrival")
    assert (arrival.due_at, arrival.warn_at) == (soon["start"], flow.clock.now())


def test_a_customer_reschedule_moves_the_same_arrival_clock(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    before = only(order, "arrival")
    started, row_id = before.started_at, before.id
    flow.act(
        order, "reschedule", engineer_actor(engineer), {"appointment": LATER_WINDOW, "reason": "customer"}
    )
    arrival = only(order, "arrival")  # no new row
    assert arrival.id == row_id
    assert (arrival.status, arrival.started_at, arrival.outcome) == ("running", started, None)
    assert arrival.due_at == LATER_WINDOW["start"]
    assert arrival.warn_at == LATER_WINDOW["start"] - minutes(30)


def test_a_customer_reschedule_after_the_warning_rearms_it_when_the_new_warning_is_ahead(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    flow.clock.set(WINDOW["start"] - minutes(20))
    assert run_tick(flow.clock).warnings == 1
    assert only(order, "arrival").warned_at == flow.clock.now()

    flow.act(
        order, "reschedule", engineer_actor(engineer), {"appointment": LATER_WINDOW, "reason": "customer"}
    )
    assert only(order, "arrival").warned_at is None

    # The new window gets its own warning, 30 minutes before it.
    flow.clock.set(LATER_WINDOW["start"] - minutes(31))
    assert run_tick(flow.clock).warnings == 0  # (the completion clock breaches meanwhile)
    flow.clock.set(LATER_WINDOW["start"] - minutes(29))
    assert run_tick(flow.clock) == TickResult(warnings=1, breaches=0)
    arrival = only(order, "arrival")
    assert arrival.warned_at == flow.clock.now()
    assert arrival.status == "running"
    assert len(sla_events(order, "sla_warning")) == 2
    # One alert per clock and kind: the earlier warning is reopened, not duplicated; one SMS per deadline.
    [alert] = alerts_of(order, "warning")
    assert (alert.clock_id, alert.created_at, alert.acknowledged_at) == (arrival.id, flow.clock.now(), None)
    warnings = [m for m in sms_of(order) if m.template == "sla_warning"]
    assert [(m.recipient, m.payload["due_at"]) for m in warnings] == [
        (engineer.phone, WINDOW["start"].isoformat()),
        (engineer.phone, LATER_WINDOW["start"].isoformat()),
    ]


def test_a_customer_reschedule_keeps_the_warning_when_the_new_warning_is_already_past(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    flow.clock.set(WINDOW["start"] - minutes(20))
    run_tick(flow.clock)
    warned = only(order, "arrival").warned_at
    assert warned is not None
    soon = {"start": WINDOW["start"] + minutes(5), "end": WINDOW["end"]}  # new warning 25 min ago
    flow.act(order, "reschedule", engineer_actor(engineer), {"appointment": soon, "reason": "customer"})
    arrival = only(order, "arrival")
    assert (arrival.due_at, arrival.warned_at) == (soon["start"], warned)
    assert not run_tick(flow.clock)


def test_a_provider_reschedule_breaches_the_old_arrival_and_starts_a_new_one(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    old_id = only(order, "arrival").id
    flow.act(
        order, "reschedule", engineer_actor(engineer), {"appointment": LATER_WINDOW, "reason": "provider"}
    )
    at = flow.clock.now()
    old, new = rows_of(order, "arrival")
    assert old.id == old_id
    assert (old.status, old.outcome, old.stopped_at, old.breached_at) == (
        "breached",
        "provider_reschedule",
        at,
        at,
    )
    assert (new.status, new.started_at, new.engineer_id) == ("running", at, engineer.id)
    assert new.due_at == LATER_WINDOW["start"]
    assert new.warn_at == LATER_WINDOW["start"] - minutes(30)


def test_check_in_before_the_window_meets_arrival(flow: Flow) -> None:
    order, _ = flow.order_in("on_site")
    arrival = only(order, "arrival")
    assert (arrival.status, arrival.stopped_at, arrival.breached_at) == ("met", flow.clock.now(), None)
    assert live_of(order) == {"completion": "running"}


def test_a_late_check_in_breaches_arrival(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    flow.clock.set(WINDOW["start"] + minutes(9))
    flow.act(order, "check_in", engineer_actor(engineer))
    arrival = only(order, "arrival")
    at = flow.clock.now()
    assert at == WINDOW["start"] + minutes(10)
    assert (arrival.status, arrival.stopped_at, arrival.breached_at) == ("breached", at, at)


def test_a_check_in_after_the_tick_recorded_the_breach_keeps_it_and_records_the_stop(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    flow.clock.set(WINDOW["start"])
    assert run_tick(flow.clock).breaches == 1
    flow.act(order, "check_in", engineer_actor(engineer))
    arrival = only(order, "arrival")
    assert (arrival.status, arrival.breached_at) == ("breached", WINDOW["start"])
    assert arrival.stopped_at == flow.clock.now()
    assert len(alerts_of(order, "breach")) == 1


# --- the acceptance desk --------------------------------------------------------------------------------


def test_submit_starts_the_desks_ten_minute_acceptance_clock(flow: Flow) -> None:
    order, engineer = flow.order_in("pending_acceptance", pay_mode=ITP)
    at = flow.clock.now()
    acceptance = only(order, "acceptance")
    assert (acceptance.status, acceptance.started_at, acceptance.engineer_id) == ("running", at, engineer.id)
    assert acceptance.due_at == at + minutes(10)
    assert acceptance.warn_at == at + minutes(7.5)


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_approve_or_reject_within_ten_minutes_meets_acceptance(flow: Flow, action: str) -> None:
    order, _ = flow.order_in("pending_acceptance", pay_mode=ITP)
    flow.clock.advance(minutes=8)
    flow.act(order, action, ACCEPTANCE)
    acceptance = only(order, "acceptance")
    assert (acceptance.status, acceptance.stopped_at) == ("met", flow.clock.now())


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_approve_or_reject_after_ten_minutes_breaches_acceptance(flow: Flow, action: str) -> None:
    order, _ = flow.order_in("pending_acceptance", pay_mode=ITP)
    flow.clock.advance(minutes=10)
    flow.act(order, action, ACCEPTANCE)
    acceptance = only(order, "acceptance")
    assert (acceptance.status, acceptance.breached_at) == ("breached", flow.clock.now())


def test_a_rejected_order_submitted_again_gets_a_new_acceptance_clock(flow: Flow) -> None:
    order, engineer = flow.order_in("pending_acceptance", pay_mode=ITP)
    flow.act(order, "reject", ACCEPTANCE)
    flow.act(order, "submit", engineer_actor(engineer))
    first, second = rows_of(order, "acceptance")
    assert (first.status, second.status) == ("met", "running")
    assert second.due_at == flow.clock.now() + minutes(10)


# --- completion, return, reassignment, cancellation -----------------------------------------------------


@pytest.mark.parametrize("pay_mode", ["prepaid", ITP])
def test_complete_meets_completion(flow: Flow, pay_mode: str) -> None:
    order, _ = flow.order_in("completed", pay_mode=pay_mode)
    completion = only(order, "completion")
    assert (completion.status, completion.stopped_at, completion.outcome) == ("met", flow.clock.now(), None)
    assert live_of(order) == {}


def test_a_late_completion_breaches_completion(flow: Flow) -> None:
    order, engineer = flow.order_in("in_progress")
    satisfy_checklist(order)
    flow.clock.set(T0 + timedelta(hours=48, minutes=1))
    flow.act(order, "complete", engineer_actor(engineer))
    completion = only(order, "completion")
    assert (completion.status, completion.breached_at) == ("breached", flow.clock.now())


def test_complete_cancels_the_other_live_clocks(flow: Flow) -> None:
    order, engineer = flow.order_in("in_progress")
    satisfy_checklist(order)
    stray = clocks.start(order, "contact", flow.clock.now())  # a clock still running at completion
    flow.act(order, "complete", engineer_actor(engineer))
    db.session.refresh(stray)
    assert (stray.status, stray.outcome, stray.stopped_at) == ("cancelled", "completed", flow.clock.now())
    assert only(order, "completion").status == "met"
    assert live_of(order) == {}


@pytest.mark.parametrize(
    ("status", "pay_mode", "cancelled"),
    [
        ("dispatched", "prepaid", "take"),
        ("taken", "prepaid", "contact"),
        ("appointed", "prepaid", "arrival"),
        ("pending_acceptance", ITP, "acceptance"),
    ],
)
def test_return_cancels_the_engineers_clocks_but_not_completion(
    flow: Flow, status: str, pay_mode: str, cancelled: str
) -> None:
    order, engineer = flow.order_in(status, pay_mode=pay_mode)
    assert live_of(order) == {"completion": "running", cancelled: "running"}
    flow.act(order, "return", engineer_actor(engineer), {"reason_code": "wrong_address"})
    row = rows_of(order, cancelled)[-1]
    assert (row.status, row.outcome, row.stopped_at) == ("cancelled", "returned", flow.clock.now())
    assert live_of(order) == {"completion": "running"}
    # Assigned again: a new take clock for the new engineer.
    other = flow.make_engineer()
    flow.act(order, "assign", DISPATCHER, {"engineer_id": other.id})
    assert live_of(order) == {"completion": "running", "take": "running"}
    assert rows_of(order, "take")[-1].engineer_id == other.id


@pytest.mark.parametrize(
    ("status", "cancelled"), [("dispatched", "take"), ("taken", "contact"), ("appointed", "arrival")]
)
def test_reassign_cancels_the_previous_engineers_clocks_and_starts_a_new_take(
    flow: Flow, status: str, cancelled: str
) -> None:
    order, first = flow.order_in(status)
    second = flow.make_engineer()
    old_id = rows_of(order, cancelled)[-1].id
    flow.act(order, "reassign", DISPATCHER, {"engineer_id": second.id})
    at = flow.clock.now()
    old = db.session.get(SlaClock, old_id)
    assert old is not None
    assert (old.status, old.outcome, old.engineer_id, old.stopped_at) == (
        "cancelled",
        "reassigned",
        first.id,
        at,
    )
    take = rows_of(order, "take")[-1]
    assert (take.status, take.engineer_id, take.started_at, take.due_at) == (
        "running",
        second.id,
        at,
        at + minutes(15),
    )
    assert live_of(order) == {"completion": "running", "take": "running"}
    assert only(order, "completion").status == "running"


@pytest.mark.parametrize("status", ["new", "dispatched", "appointed", "suspended"])
def test_cancel_cancels_every_live_clock(flow: Flow, status: str) -> None:
    order, _ = flow.order_in(status)
    live_before = [r.id for r in rows_of(order) if r.status in ("running", "paused")]
    assert live_before
    flow.act(order, "cancel", DISPATCHER, {"reason": "客户撤单"})
    for row_id in live_before:
        row = db.session.get(SlaClock, row_id)
        assert row is not None
        assert (row.status, row.outcome, row.stopped_at) == ("cancelled", "order_cancelled", flow.clock.now())
    assert live_of(order) == {}


# --- suspension -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason_code", ["customer_unavailable", "customer_postponed"])
def test_a_customer_caused_suspension_pauses_every_clock_and_resume_adds_the_paused_time(
    flow: Flow, reason_code: str
) -> None:
    order, _ = flow.order_in("taken")
    before = {r.clock: (r.due_at, r.warn_at) for r in rows_of(order)}
    flow.act(order, "suspend", DISPATCHER, {"reason_code": reason_code})
    suspended_at = flow.clock.now()
    assert live_of(order) == {"completion": "paused", "contact": "paused"}
    assert all(r.paused_at == suspended_at for r in rows_of(order) if r.status == "paused")

    flow.clock.advance(hours=3)
    flow.act(order, "resume", DISPATCHER)
    paused = flow.clock.now() - suspended_at
    assert paused == timedelta(hours=3, minutes=1)
    for row in rows_of(order):
        if row.clock == "take":
            continue
        due, warn = before[row.clock]
        assert row.status == "running"
        assert row.paused_at is None
        assert row.paused_seconds == paused.total_seconds()
        assert (row.due_at, row.warn_at) == (due + paused, warn + paused)


def test_pauses_add_up(flow: Flow) -> None:
    order, _ = flow.order_in("dispatched")
    due = only(order, "completion").due_at
    for hours in (1, 2):
        flow.act(order, "suspend", DISPATCHER, {"reason_code": "customer_unavailable"})
        flow.clock.advance(hours=hours)
        flow.act(order, "resume", DISPATCHER)
    completion = only(order, "completion")
    paused = timedelta(hours=3, minutes=2)
    assert completion.paused_seconds == paused.total_seconds()
    assert completion.due_at == due + paused


@pytest.mark.parametrize("reason_code", ["no_resource", "third_party", "force_majeure"])
def test_a_provider_side_suspension_pauses_nothing(flow: Flow, reason_code: str) -> None:
    order, _ = flow.order_in("taken")
    before = [state(r) for r in rows_of(order)]
    flow.act(order, "suspend", DISPATCHER, {"reason_code": reason_code})
    assert [state(r) for r in rows_of(order)] == before
    flow.clock.advance(hours=1)
    flow.act(order, "resume", DISPATCHER)
    assert [state(r) for r in rows_of(order)] == before


def test_a_provider_side_suspension_approved_as_an_exclusion_pauses(flow: Flow) -> None:
    order, _ = flow.order_in("taken")
    flow.act(order, "suspend", DISPATCHER, {"reason_code": "third_party", "exclude_from_sla": True})
    assert live_of(order) == {"completion": "paused", "contact": "paused"}


def test_a_paused_clock_is_never_claimed_by_the_tick(flow: Flow) -> None:
    order, _ = flow.order_in("taken")
    flow.act(order, "suspend", DISPATCHER, {"reason_code": "customer_postponed"})
    flow.clock.advance(days=5)  # far past every original deadline
    assert not run_tick(flow.clock)
    assert live_of(order) == {"completion": "paused", "contact": "paused"}
    assert alerts_of(order) == []


def test_a_clock_stopped_while_paused_counts_the_pause(flow: Flow) -> None:
    order, _ = flow.order_in("dispatched")
    flow.act(order, "suspend", DISPATCHER, {"reason_code": "customer_unavailable"})
    flow.clock.advance(days=3)
    flow.act(order, "cancel", DISPATCHER, {"reason": "客户撤单"})
    assert {r.status for r in rows_of(order)} == {"cancelled"}


# --- one live clock per kind ----------------------------------------------------------------------------


def test_at_most_one_live_clock_per_order_and_kind(flow: Flow) -> None:
    order, _ = flow.order_in("taken")
    now = flow.clock.now()

    def duplicate(status: str) -> SlaClock:
        return SlaClock(
            order_id=order.id,
            clock="contact",
            status=status,
            target_seconds=3600,
            warn_percent=75,
            started_at=now,
            due_at=now + minutes(60),
            paused_seconds=0,
        )

    for status in ("running", "paused"):
        with pytest.raises(sa.exc.IntegrityError), db.session.begin_nested():
            db.session.add(duplicate(status))
            db.session.flush()
    # Finished clocks of the same kind are history, not a second deadline.
    for status in ("met", "breached", "cancelled"):
        db.session.add(duplicate(status))
    db.session.flush()
    assert live_of(order) == {"completion": "running", "contact": "running"}


# --- the tick: warnings ---------------------------------------------------------------------------------


def test_a_warning_comes_at_warn_percent_once_with_alert_event_and_sms_to_the_engineer(flow: Flow) -> None:
    order, engineer = flow.order_in("dispatched")
    take = only(order, "take")
    warn_at = take.warn_at
    assert warn_at is not None

    flow.clock.set(warn_at - timedelta(seconds=1))
    assert run_tick(flow.clock) == TickResult(0, 0)
    assert alerts_of(order) == []

    flow.clock.set(warn_at + timedelta(seconds=1))
    assert run_tick(flow.clock) == TickResult(warnings=1, breaches=0)
    take = only(order, "take")
    assert (take.status, take.warned_at) == ("running", flow.clock.now())

    [alert] = alerts_of(order)
    assert (alert.kind, alert.clock, alert.clock_id, alert.created_at) == (
        "warning",
        "take",
        take.id,
        flow.clock.now(),
    )
    [event] = sla_events(order, "sla_warning")
    assert (event.from_status, event.to_status, event.actor_type, event.source) == (
        "dispatched",
        "dispatched",
        "system",
        "scheduler",
    )
    assert event.payload["clock"] == "take"
    assert event.payload["clock_id"] == take.id
    assert event.payload["late_s"] is None
    [sms] = sms_of(order)
    assert (sms.kind, sms.recipient, sms.template, sms.status) == (
        "sms",
        engineer.phone,
        "sla_warning",
        "pending",
    )
    assert sms.payload["recipient_role"] == "engineer"
    assert sms.payload["engineer_id"] == engineer.id
    assert order.status == "dispatched"


def test_a_warning_exactly_at_warn_at_is_due(flow: Flow) -> None:
    order, _ = flow.order_in("dispatched")
    warn_at = only(order, "take").warn_at
    assert warn_at is not None
    flow.clock.set(warn_at)
    assert run_tick(flow.clock).warnings == 1


def test_the_completion_warning_of_an_unassigned_order_goes_to_the_desk(
    desk_phone: str, make_order: Callable[..., Order], clock: FakeClock
) -> None:
    order = make_order()
    clock.advance(hours=36)
    assert run_tick(clock) == TickResult(warnings=1, breaches=0)
    [sms] = sms_of(order)
    assert (sms.recipient, sms.template) == (desk_phone, "sla_warning")


def test_an_unassigned_warning_without_a_desk_phone_sends_no_sms(
    make_order: Callable[..., Order], clock: FakeClock
) -> None:
    order = make_order()
    clock.advance(hours=36)
    assert run_tick(clock).warnings == 1
    assert len(alerts_of(order, "warning")) == 1
    assert sms_of(order) == []


# --- the tick: breaches ---------------------------------------------------------------------------------


def test_a_breach_at_the_deadline_is_recorded_once_with_alert_event_and_sms_to_leader_and_desk(
    flow: Flow, desk_phone: str
) -> None:
    order, engineer = flow.order_in("dispatched")
    assert engineer.team is not None
    engineer.team.leader_phone = LEADER_PHONE
    db.session.flush()
    take = only(order, "take")
    due = take.due_at

    flow.clock.set(due - timedelta(seconds=1))
    run_tick(flow.clock)  # the warning
    assert only(order, "take").status == "running"
    assert alerts_of(order, "breach") == []

    flow.clock.set(due)
    assert run_tick(flow.clock) == TickResult(warnings=0, breaches=1)
    take = only(order, "take")
    assert (take.status, take.breached_at, take.stopped_at) == ("breached", due, None)

    [alert] = alerts_of(order, "breach")
    assert (alert.clock, alert.clock_id, alert.created_at) == ("take", take.id, due)
    [event] = sla_events(order, "sla_breach")
    assert event.payload["clock"] == "take"
    assert event.payload["late_s"] == 0
    breach_sms = [m for m in sms_of(order) if m.template == "sla_breach"]
    assert sorted((m.payload["recipient_role"], m.recipient) for m in breach_sms) == [
        ("dispatcher", desk_phone),
        ("team_leader", LEADER_PHONE),
    ]
    assert live_of(order) == {"completion": "running"}


def test_a_late_tick_records_how_late_the_breach_was_found(flow: Flow) -> None:
    order, engineer = flow.order_in("dispatched")
    assert engineer.team is not None
    engineer.team.leader_phone = LEADER_PHONE
    db.session.flush()
    due = only(order, "take").due_at
    flow.clock.set(due + timedelta(seconds=90))
    run_tick(flow.clock)
    [event] = sla_events(order, "sla_breach")
    assert event.payload["late_s"] == 90
    assert only(order, "take").breached_at == flow.clock.now()
    # No desk phone configured: the team leader only.
    assert [(m.recipient, m.template) for m in sms_of(order)] == [(LEADER_PHONE, "sla_breach")]


def test_a_breach_without_a_team_leader_phone_still_alerts(flow: Flow) -> None:
    order, engineer = flow.order_in("dispatched")
    assert engineer.team is not None
    engineer.team.leader_phone = None
    db.session.flush()
    flow.clock.advance(hours=1)
    assert run_tick(flow.clock).breaches == 1
    assert len(alerts_of(order, "breach")) == 1
    assert sms_of(order) == []


def test_a_clock_found_past_due_gets_a_breach_but_no_warning(flow: Flow, desk_phone: str) -> None:
    order, _ = flow.order_in("dispatched")
    flow.clock.advance(hours=1)
    assert run_tick(flow.clock) == TickResult(warnings=0, breaches=1)
    take = only(order, "take")
    assert (take.status, take.warned_at) == ("breached", None)
    assert [a.kind for a in alerts_of(order)] == ["breach"]
    assert sla_events(order, "sla_warning") == []
    assert all(m.template == "sla_breach" for m in sms_of(order))


def test_running_the_tick_twice_records_nothing_twice(flow: Flow, desk_phone: str) -> None:
    order, engineer = flow.order_in("taken")
    assert engineer.team is not None
    engineer.team.leader_phone = LEADER_PHONE
    db.session.flush()
    contact = only(order, "contact")
    assert contact.warn_at is not None
    for moment in (contact.warn_at, contact.due_at, contact.due_at + timedelta(hours=1)):
        flow.clock.set(moment)
        first = run_tick(flow.clock)
        counts = (
            len(alerts_of(order)),
            len(sla_events(order, "sla_warning")),
            len(sla_events(order, "sla_breach")),
        )
        sms = len(sms_of(order))
        assert first or moment > contact.due_at
        assert not run_tick(flow.clock)
        assert (
            len(alerts_of(order)),
            len(sla_events(order, "sla_warning")),
            len(sla_events(order, "sla_breach")),
        ) == counts
        assert len(sms_of(order)) == sms
    assert [(a.kind, a.clock) for a in alerts_of(order)] == [("warning", "contact"), ("breach", "contact")]
    assert len(sms_of(order)) == 3  # engineer warning; team leader and desk on the breach


def test_a_met_clock_is_never_breached_later(flow: Flow) -> None:
    order, _ = flow.order_in("appointed")  # take and contact met, arrival running
    flow.clock.advance(days=1)
    run_tick(flow.clock)
    assert only(order, "take").status == "met"
    assert only(order, "contact").status == "met"
    assert only(order, "take").breached_at is None
    assert {a.clock for a in alerts_of(order)} <= {"arrival", "completion"}


def test_a_cancelled_clock_is_never_claimed(flow: Flow) -> None:
    order, _ = flow.order_in("dispatched")
    flow.act(order, "cancel", DISPATCHER, {"reason": "重复工单"})
    flow.clock.advance(days=5)
    assert not run_tick(flow.clock)
    assert alerts_of(order) == []


def test_breaches_are_never_recorded_before_the_deadline(flow: Flow) -> None:
    orders = [flow.order_in(status)[0] for status in ("dispatched", "taken", "appointed")]
    start = flow.clock.now()
    for step in range(0, 60 * 50, 7):  # a tick every 7 minutes for 50 hours
        flow.clock.set(start + minutes(step))
        run_tick(flow.clock)
    breached = [r for order in orders for r in rows_of(order) if r.status == "breached"]
    assert {r.clock for r in breached} == {"take", "contact", "arrival", "completion"}
    for row in breached:
        assert row.breached_at is not None
        assert row.breached_at >= row.due_at, (row.clock, row.breached_at, row.due_at)
        assert row.breached_at - row.due_at < minutes(7)
        assert row.warned_at is None or row.warn_at <= row.warned_at < row.due_at


@pytest.mark.parametrize("batch", [1, 2, 500])
def test_the_tick_works_through_every_due_clock_in_batches(flow: Flow, batch: int) -> None:
    orders = [flow.order_in("taken")[0] for _ in range(5)]
    contacts = [only(order, "contact") for order in orders]
    first_due = min(c.due_at for c in contacts)
    last_warning = max(c.warn_at for c in contacts if c.warn_at)
    assert last_warning < first_due
    flow.clock.set(last_warning)
    assert run_tick(flow.clock, batch=batch) == TickResult(warnings=5, breaches=0)
    flow.clock.set(max(c.due_at for c in contacts))
    assert run_tick(flow.clock, batch=batch) == TickResult(warnings=0, breaches=5)
    for order in orders:
        assert [(a.kind, a.clock) for a in alerts_of(order)] == [
            ("warning", "contact"),
            ("breach", "contact"),
        ]
    assert not run_tick(flow.clock, batch=batch)


# --- concurrency (PostgreSQL, real commits) -------------------------------------------------------------

DUE_CLOCKS = 300


def seed_due_clocks(make_order: Callable[..., Order], now: datetime) -> list[int]:
    """75 orders with 4 engineer clocks each, all running and past due (plus each order's completion)."""
    ids = []
    for _ in range(DUE_CLOCKS // len(ENGINEER_CLOCKS)):
        order = make_order()
        for n, name in enumerate(ENGINEER_CLOCKS):
            row = SlaClock(
                order_id=order.id,
                clock=name,
                status="running",
                target_seconds=600,
                warn_percent=75,
                started_at=now - minutes(30 + n),
                due_at=now - minutes(20 + n),
                warn_at=now - minutes(22 + n),
                paused_seconds=0,
            )
            db.session.add(row)
            db.session.flush()
            ids.append(row.id)
    db.session.commit()
    return ids


@pytest.mark.postgres
@pytest.mark.parametrize("batch", [500, 7])
def test_two_concurrent_ticks_record_each_breach_exactly_once(
    pg_app: Flask, make_order: Callable[..., Order], monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setitem(pg_app.config, "DISPATCH_DESK_PHONE", DESK_PHONE)
    now = T0 + timedelta(hours=1)
    ids = seed_due_clocks(make_order, now)
    assert len(ids) == DUE_CLOCKS
    db.session.remove()

    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def worker(i: int) -> None:
        try:
            with pg_app.app_context():
                barrier.wait(timeout=30)
                results[i] = tick(now, batch=batch)
                db.session.remove()
        except BaseException as exc:  # surfaced below
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a tick hung"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert sum(r.breaches for r in results) == DUE_CLOCKS
    assert sum(r.warnings for r in results) == 0

    db.session.rollback()
    breached = db.session.scalars(sa.select(SlaClock).where(SlaClock.id.in_(ids))).all()
    assert {r.status for r in breached} == {"breached"}
    assert all(r.breached_at == now and r.warned_at is None for r in breached)
    per_clock = db.session.execute(
        sa.select(Alert.clock_id, sa.func.count()).where(Alert.kind == "breach").group_by(Alert.clock_id)
    ).all()
    assert dict(per_clock) == dict.fromkeys(ids, 1)
    events = db.session.scalars(sa.select(OrderEvent.payload).where(OrderEvent.action == "sla_breach")).all()
    assert sorted(e["clock_id"] for e in events) == sorted(ids)
    assert total(OutboxMessage, OutboxMessage.template == "sla_breach") == DUE_CLOCKS  # one desk SMS each
    assert total(Alert, Alert.kind == "warning") == 0
    # Nothing is left for a third tick.
    assert not tick(now)


@pytest.mark.postgres
@pytest.mark.parametrize("reason_code", ["customer_unavailable", "cancel"])
def test_a_transition_racing_the_tick_never_revives_a_breached_clock(
    pg_app: Flask,
    make_order: Callable[..., Order],
    make_engineer: Callable[..., Engineer],
    desk_phone: str,
    reason_code: str,
) -> None:
    """The transition reads the order's live clocks, the tick breaches one of them and commits, then the
    transition commits: the clock must not come back to life (paused or cancelled) over its breach."""
    flow = Flow(pg_app.extensions["clock"], make_order, make_engineer)
    order, _ = flow.order_in("taken")
    db.session.commit()
    order_id, contact_id = order.id, only(order, "contact").id
    now = only(order, "contact").due_at + minutes(1)
    flow.clock.set(now)

    order = db.session.get(Order, order_id)
    assert order is not None
    if reason_code == "cancel":
        workflow.apply(order, "cancel", DISPATCHER, now=now, params={"reason": "客户撤单"})
    else:
        workflow.apply(order, "suspend", DISPATCHER, now=now, params={"reason_code": reason_code})
    with pg_app.app_context():  # another session: the scheduler, while the transition is uncommitted
        raced = tick(now)
        db.session.remove()
    db.session.commit()

    contact = db.session.get(SlaClock, contact_id, populate_existing=True)
    assert contact is not None
    alerts = total(Alert, Alert.clock_id == contact_id, Alert.kind == "breach")
    if contact.status == "breached":  # the tick won: the transition saw the clock no longer live
        assert (raced.breaches, alerts) == (1, 1)
    else:  # the transition won: the tick left the clock alone
        assert contact.status == ("cancelled" if reason_code == "cancel" else "paused")
        assert (raced.breaches, alerts) == (0, 0)
    # Whatever comes next, the breach is recorded at most once and the tick keeps working.
    if reason_code != "cancel":
        flow.clock.advance(hours=1)
        workflow.apply(order, "resume", DISPATCHER, now=flow.clock.now())
        db.session.commit()
    flow.clock.advance(days=3)
    tick(flow.clock.now())
    assert total(Alert, Alert.clock_id == contact_id, Alert.kind == "breach") <= 1
