"""The dispatchers' and acceptance desk's order services (dispatch/services/orders.py) on a real database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.assignment import rules
from dispatch.clock import FakeClock
from dispatch.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationError
from dispatch.extensions import db
from dispatch.models import Engineer, Order, OrderEvent
from dispatch.services import dispatching, orders
from dispatch.services.orders import OrderFilters
from tests.conftest import INTAKE_ACTOR, T0
from tests.services.test_workflow import (
    ACCEPTANCE,
    ADMIN,
    BILLING,
    DISPATCHER,
    ITP,
    MANAGER,
    UNLINKED_ENGINEER,
    Flow,
    attach,
    engineer_actor,
    events_of,
)


@pytest.fixture
def flow(clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]) -> Flow:
    return Flow(clock, make_order, make_engineer)


def unchanged(order: Order) -> Callable[[], tuple[Any, ...]]:
    """A probe comparing the order's stored state and event count with what it is now."""
    order_id = order.id

    def probe() -> tuple[Any, ...]:
        db.session.expire_all()
        fresh = db.session.get(Order, order_id)
        assert fresh is not None
        count = db.session.scalar(sa.select(sa.func.count()).where(OrderEvent.order_id == order_id))
        return fresh.status, fresh.engineer_id, fresh.version, fresh.suspended_until, count

    return probe


# --- cancel ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", [DISPATCHER, ADMIN, INTAKE_ACTOR], ids=["dispatcher", "admin", "intake"])
def test_cancel_order_withdraws_an_open_order_with_its_reason(flow: Flow, actor: Actor) -> None:
    order, _ = flow.order_in("taken")
    cancelled = orders.cancel_order(order.id, reason="客户来电撤单", actor=actor)
    assert cancelled.status == "cancelled"
    assert cancelled.cancel_reason == "客户来电撤单"
    event = events_of(cancelled)[-1]
    assert (event.action, event.from_status, event.to_status) == ("cancel", "taken", "cancelled")
    assert (event.actor_type, event.actor_name) == (actor.kind, actor.name)
    # The hotline cancels on the customer's word (a withdrawal, out of the completion rate); a desk: other.
    code = "customer_withdrew" if actor is INTAKE_ACTOR else "other"
    assert cancelled.cancel_reason_code == code
    assert event.payload == {"reason": "客户来电撤单", "reason_code": code}


def test_cancelling_a_cancelled_order_is_a_conflict_carrying_its_status(flow: Flow) -> None:
    order, _ = flow.order_in("new")
    orders.cancel_order(order.id, reason="重复", actor=DISPATCHER)
    probe = unchanged(order)
    before = probe()
    with pytest.raises(InvalidTransition) as info:
        orders.cancel_order(order.id, reason="again", actor=DISPATCHER)
    assert info.value.to_dict()["status"] == "cancelled"
    assert probe() == before


@pytest.mark.parametrize("who", ["engineer", "acceptance", "manager", "billing"])
def test_only_dispatchers_and_the_intake_system_cancel(flow: Flow, who: str) -> None:
    order, engineer = flow.order_in("taken")
    actor = {"acceptance": ACCEPTANCE, "manager": MANAGER, "billing": BILLING}.get(who) or engineer_actor(
        engineer
    )
    probe = unchanged(order)
    before = probe()
    with pytest.raises(PermissionDenied):
        orders.cancel_order(order.id, reason="no", actor=actor)
    assert probe() == before


def test_cancelling_an_unknown_order_is_not_found(app: Any) -> None:
    with pytest.raises(NotFound):
        orders.cancel_order(987654, reason="?", actor=DISPATCHER)


# --- suspend and resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("until", [T0 - timedelta(minutes=1), T0], ids=["past", "now"])
def test_suspending_until_a_time_not_in_the_future_is_invalid(flow: Flow, until: datetime) -> None:
    order, _ = flow.order_in("taken")
    until = until + (flow.clock.now() - T0)  # the flow moved the clock on
    probe = unchanged(order)
    before = probe()
    with pytest.raises(ValidationError) as info:
        orders.suspend_order(
            order.id, reason_code="customer_postponed", note=None, until=until, actor=DISPATCHER
        )
    assert info.value.http_status == 422
    assert "until" in info.value.to_dict()["errors"]
    assert probe() == before


def test_suspend_order_records_reason_note_and_until(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    until = flow.clock.now() + timedelta(days=2)
    suspended = orders.suspend_order(
        order.id,
        reason_code="customer_unavailable",
        note="客户出差",
        until=until,
        actor=engineer_actor(engineer),
    )
    assert suspended.status == "suspended"
    assert (suspended.status_before_suspend, suspended.suspend_reason, suspended.suspended_until) == (
        "appointed",
        "customer_unavailable",
        until,
    )
    payload = events_of(suspended)[-1].payload
    assert payload == {"reason_code": "customer_unavailable", "note": "客户出差", "until": until.isoformat()}


def test_suspend_order_refuses_an_unknown_reason_code(flow: Flow) -> None:
    order, _ = flow.order_in("new")
    with pytest.raises(ValidationError):
        orders.suspend_order(order.id, reason_code="lunch", note=None, until=None, actor=DISPATCHER)
    assert order.status == "new"


def test_a_manager_may_read_but_not_suspend(flow: Flow) -> None:
    order, _ = flow.order_in("new")
    assert orders.get_order(order.id, actor=MANAGER).id == order.id
    with pytest.raises(PermissionDenied):
        orders.suspend_order(order.id, reason_code="third_party", note=None, until=None, actor=MANAGER)


def test_resume_order_returns_to_the_status_before_and_clears_the_suspension(flow: Flow) -> None:
    order, _ = flow.order_in("appointed")
    orders.suspend_order(order.id, reason_code="no_resource", note=None, until=None, actor=DISPATCHER)
    resumed = orders.resume_order(order.id, note="资源已到位", actor=DISPATCHER)
    assert resumed.status == "appointed"
    assert (resumed.status_before_suspend, resumed.suspend_reason, resumed.suspended_until) == (
        None,
        None,
        None,
    )
    event = events_of(resumed)[-1]
    assert (event.action, event.from_status, event.to_status, event.payload) == (
        "resume",
        "suspended",
        "appointed",
        {"note": "资源已到位"},
    )


def test_resuming_an_order_that_is_not_suspended_is_a_conflict(flow: Flow) -> None:
    order, _ = flow.order_in("taken")
    with pytest.raises(InvalidTransition) as info:
        orders.resume_order(order.id, note=None, actor=DISPATCHER)
    assert info.value.to_dict()["status"] == "taken"


def test_an_engineer_cannot_resume_their_own_suspended_order(flow: Flow) -> None:
    order, engineer = flow.order_in("suspended")
    with pytest.raises(PermissionDenied):
        orders.resume_order(order.id, note=None, actor=engineer_actor(engineer))
    assert order.status == "suspended"


# --- the scheduler's resume job -------------------------------------------------------------------------


def test_resume_due_suspensions_resumes_only_orders_whose_time_has_come(flow: Flow, clock: FakeClock) -> None:
    start = clock.now()
    soon, _ = flow.order_in("taken")
    later, _ = flow.order_in("appointed")
    indefinite, _ = flow.order_in("new")
    resumed_by_hand, _ = flow.order_in("dispatched")
    suspend = orders.suspend_order
    suspend(
        soon.id,
        reason_code="customer_postponed",
        note=None,
        until=start + timedelta(hours=1),
        actor=DISPATCHER,
    )
    suspend(
        later.id,
        reason_code="customer_postponed",
        note=None,
        until=start + timedelta(hours=3),
        actor=DISPATCHER,
    )
    suspend(indefinite.id, reason_code="third_party", note=None, until=None, actor=DISPATCHER)
    suspend(
        resumed_by_hand.id,
        reason_code="third_party",
        note=None,
        until=start + timedelta(hours=1),
        actor=DISPATCHER,
    )
    orders.resume_order(resumed_by_hand.id, note=None, actor=DISPATCHER)
    hand_events = len(events_of(resumed_by_hand))

    assert orders.resume_due_suspensions(now=clock.now()) == 0  # nothing is due yet

    clock.set(start + timedelta(hours=1))  # exactly at `until`: due
    assert orders.resume_due_suspensions(now=clock.now()) == 1
    assert (soon.status, later.status, indefinite.status) == ("taken", "suspended", "suspended")
    event = events_of(soon)[-1]
    assert (event.action, event.from_status, event.to_status) == ("resume", "suspended", "taken")
    assert (event.actor_type, event.source, event.occurred_at) == ("system", "scheduler", clock.now())
    assert soon.suspended_until is None

    # Running again (a second scheduler, a restart) changes nothing.
    assert orders.resume_due_suspensions(now=clock.now()) == 0
    assert [e.action for e in events_of(soon)].count("resume") == 1

    clock.advance(hours=2, minutes=30)
    assert orders.resume_due_suspensions(now=clock.now()) == 1
    assert orders.resume_due_suspensions(now=clock.now()) == 0
    assert (later.status, indefinite.status) == ("appointed", "suspended")
    assert resumed_by_hand.status == "dispatched"
    assert len(events_of(resumed_by_hand)) == hand_events


def test_resume_due_suspensions_respects_its_limit(flow: Flow, clock: FakeClock) -> None:
    ids = []
    for _ in range(3):
        order, _ = flow.order_in("new")
        orders.suspend_order(
            order.id,
            reason_code="customer_postponed",
            note=None,
            until=clock.now() + timedelta(hours=1),
            actor=DISPATCHER,
        )
        ids.append(order.id)
    clock.advance(hours=2)
    assert orders.resume_due_suspensions(now=clock.now(), limit=2) == 2
    assert orders.resume_due_suspensions(now=clock.now(), limit=2) == 1
    statuses = db.session.scalars(sa.select(Order.status).where(Order.id.in_(ids))).all()
    assert sorted(statuses) == ["new", "new", "new"]


# --- acceptance -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("decision", "status"), [("approve", "in_progress"), ("reject", "on_site")])
@pytest.mark.parametrize("actor", [ACCEPTANCE, DISPATCHER], ids=["acceptance", "dispatcher"])
def test_decide_acceptance_moves_a_submitted_order(
    flow: Flow, decision: str, status: str, actor: Actor
) -> None:
    order, _ = flow.order_in("pending_acceptance", pay_mode=ITP)
    decided = orders.decide_acceptance(order.id, decision=decision, note="核对无误", actor=actor)
    assert decided.status == status
    event = events_of(decided)[-1]
    assert (event.action, event.from_status, event.to_status, event.payload) == (
        decision,
        "pending_acceptance",
        status,
        {"note": "核对无误"},
    )


@pytest.mark.parametrize("decision", ["maybe", "APPROVE", "", "cancel"])
def test_decide_acceptance_refuses_anything_but_approve_or_reject(flow: Flow, decision: str) -> None:
    order, _ = flow.order_in("pending_acceptance", pay_mode=ITP)
    probe = unchanged(order)
    before = probe()
    with pytest.raises(ValidationError) as info:
        orders.decide_acceptance(order.id, decision=decision, note=None, actor=ACCEPTANCE)
    assert info.value.http_status == 422
    assert "decision" in info.value.to_dict()["errors"]
    assert probe() == before


def test_deciding_an_order_that_was_not_submitted_is_a_conflict(flow: Flow) -> None:
    order, _ = flow.order_in("on_site", pay_mode=ITP)
    with pytest.raises(InvalidTransition) as info:
        orders.decide_acceptance(order.id, decision="approve", note=None, actor=ACCEPTANCE)
    assert info.value.to_dict()["status"] == "on_site"


@pytest.mark.parametrize("who", ["engineer", "manager"])
def test_engineers_and_managers_do_not_decide_acceptance(flow: Flow, who: str) -> None:
    order, engineer = flow.order_in("pending_acceptance", pay_mode=ITP)
    actor = MANAGER if who == "manager" else engineer_actor(engineer)
    with pytest.raises(PermissionDenied):
        orders.decide_acceptance(order.id, decision="approve", note=None, actor=actor)
    assert order.status == "pending_acceptance"


# --- assignment -----------------------------------------------------------------------------------------

# The intake payload asks for 2026-11-26 09:00–12:00 in Kunming (a Thursday, ISO weekday 4), district 五华区.
THURSDAY = 4


@pytest.mark.parametrize(
    ("engineer_data", "codes"),
    [
        pytest.param({}, [], id="fits"),
        pytest.param({"skills": ["repair"]}, ["skill"], id="skill"),
        pytest.param({"districts": ["盘龙区"]}, ["district"], id="district"),
        pytest.param(
            {"shifts": [{"weekday": THURSDAY, "start": time(13, 0), "end": time(18, 0)}]},
            ["off_shift"],
            id="late-shift",
        ),
        pytest.param(
            {"shifts": [{"weekday": THURSDAY + 1, "start": time(8, 0), "end": time(20, 0)}]},
            ["off_shift"],
            id="other-day",
        ),
        pytest.param({"daily_capacity": 0}, ["capacity"], id="capacity"),
        pytest.param(
            {
                "skills": ["opportunity"],
                "districts": ["西山区"],
                "shifts": [{"weekday": 1, "start": time(8, 0), "end": time(12, 0)}],
                "daily_capacity": 0,
            },
            ["skill", "district", "off_shift", "capacity"],
            id="everything",
        ),
    ],
)
def test_a_manual_assignment_is_honoured_and_reports_each_broken_rule_as_a_warning(
    flow: Flow, engineer_data: dict[str, Any], codes: list[str]
) -> None:
    engineer = flow.make_engineer(**engineer_data)
    order = flow.make_order()
    assigned, warnings = dispatching.assign_order(order.id, engineer.id, actor=DISPATCHER)
    assert assigned.status == "dispatched"
    assert assigned.engineer_id == engineer.id
    assert warnings == [{"code": code, "message": rules.MESSAGES[code]} for code in codes]
    event = events_of(assigned)[-1]
    assert (event.action, event.from_status, event.to_status) == ("assign", "new", "dispatched")
    decision = {
        key: event.payload[key]
        for key in ("engineer_id", "engineer_code", "previous_engineer_id", "mode", "warnings")
    }
    assert decision == {
        "engineer_id": engineer.id,
        "engineer_code": engineer.code,
        "previous_engineer_id": None,
        "mode": "manual",
        "warnings": codes,
    }
    # The decision also records the ranked candidates the dispatcher chose against.
    assert isinstance(event.payload["candidates"], list)


def test_capacity_counts_the_engineers_other_orders_on_the_same_local_day(flow: Flow) -> None:
    engineer = flow.make_engineer(daily_capacity=1)
    # 07:30 on the 27th in Kunming is 23:30 on the 26th in UTC: the same UTC day as the orders below,
    # but another business day.
    early_next_day = flow.make_order(
        requested_window={"start": "2026-11-27T07:30:00+08:00", "end": "2026-11-27T09:00:00+08:00"}
    )
    morning = flow.make_order()  # 2026-11-26 09:00–12:00 local
    afternoon = flow.make_order(
        requested_window={"start": "2026-11-26T14:00:00+08:00", "end": "2026-11-26T16:00:00+08:00"}
    )

    assert dispatching.assign_order(early_next_day.id, engineer.id, actor=DISPATCHER)[1] == []
    assert dispatching.assign_order(morning.id, engineer.id, actor=DISPATCHER)[1] == []
    _, warnings = dispatching.assign_order(afternoon.id, engineer.id, actor=DISPATCHER)
    assert [w["code"] for w in warnings] == ["capacity"]


def test_closed_orders_do_not_take_up_capacity(flow: Flow) -> None:
    engineer = flow.make_engineer(daily_capacity=1)
    first, second = flow.make_order(), flow.make_order()
    dispatching.assign_order(first.id, engineer.id, actor=DISPATCHER)
    orders.cancel_order(first.id, reason="撤单", actor=DISPATCHER)
    _, warnings = dispatching.assign_order(second.id, engineer.id, actor=DISPATCHER)
    assert warnings == []


def test_assigning_an_inactive_engineer_is_a_conflict_and_changes_nothing(flow: Flow) -> None:
    engineer = flow.make_engineer(active=False)
    order = flow.make_order()
    probe = unchanged(order)
    before = probe()
    with pytest.raises(Conflict) as info:
        dispatching.assign_order(order.id, engineer.id, actor=DISPATCHER)
    assert not isinstance(info.value, InvalidTransition)
    assert info.value.http_status == 409
    assert info.value.to_dict()["engineer_id"] == engineer.id
    assert probe() == before


def test_assigning_an_unknown_engineer_is_invalid(flow: Flow) -> None:
    order = flow.make_order()
    with pytest.raises(ValidationError) as info:
        dispatching.assign_order(order.id, 987654, actor=DISPATCHER)
    assert "engineer_id" in info.value.to_dict()["errors"]
    assert order.status == "new"


@pytest.mark.parametrize("status", ["dispatched", "taken", "appointed"])
def test_assigning_an_assigned_order_reassigns_it_and_records_the_previous_engineer(
    flow: Flow, status: str
) -> None:
    order, first = flow.order_in(status)
    second = flow.make_engineer()
    reassigned, _ = dispatching.assign_order(order.id, second.id, actor=DISPATCHER)
    assert (reassigned.status, reassigned.engineer_id) == ("dispatched", second.id)
    event = events_of(reassigned)[-1]
    assert (event.action, event.from_status, event.to_status) == ("reassign", status, "dispatched")
    assert event.payload["previous_engineer_id"] == first.id
    assert event.payload["engineer_id"] == second.id
    # The first engineer no longer sees the order; the second does.
    with pytest.raises(NotFound):
        orders.get_order(order.id, actor=engineer_actor(first))
    assert orders.get_order(order.id, actor=engineer_actor(second, user_id=951)).id == order.id


def test_a_returned_order_is_assigned_again_not_reassigned(flow: Flow) -> None:
    order, first = flow.order_in("returned")
    _, warnings = dispatching.assign_order(order.id, first.id, actor=DISPATCHER)
    event = events_of(order)[-1]
    assert (event.action, event.from_status, event.payload["previous_engineer_id"]) == (
        "assign",
        "returned",
        None,
    )
    assert order.engineer_id == first.id
    # The engineer who returned it is excluded from auto-dispatch; a dispatcher's choice is only flagged.
    assert warnings == [{"code": "excluded", "message": rules.MESSAGES["excluded"]}]


@pytest.mark.parametrize("status", ["on_site", "completed", "cancelled"])
def test_an_order_on_site_or_closed_cannot_be_reassigned(flow: Flow, status: str) -> None:
    order, first = flow.order_in(status)
    second = flow.make_engineer()
    with pytest.raises(InvalidTransition) as info:
        dispatching.assign_order(order.id, second.id, actor=DISPATCHER)
    assert info.value.to_dict()["status"] == status
    assert order.engineer_id == first.id


@pytest.mark.parametrize("who", ["acceptance", "manager"])
def test_only_dispatchers_assign(flow: Flow, who: str) -> None:
    engineer = flow.make_engineer()
    order = flow.make_order()
    with pytest.raises(PermissionDenied):
        dispatching.assign_order(order.id, engineer.id, actor=ACCEPTANCE if who == "acceptance" else MANAGER)
    assert order.status == "new"


def test_a_write_over_a_concurrent_change_is_a_conflict(flow: Flow) -> None:
    order, _ = flow.order_in("taken")
    # Another transaction bumps the row's version behind this session's back.
    db.session.execute(
        sa.update(Order).where(Order.id == order.id).values(version=Order.version + 1),
        execution_options={"synchronize_session": False},
    )
    with pytest.raises(Conflict, match="changed by someone else"):
        orders.cancel_order(order.id, reason="stale", actor=DISPATCHER)


# --- queries --------------------------------------------------------------------------------------------


@pytest.fixture
def board(flow: Flow, clock: FakeClock) -> dict[str, Any]:
    """Five orders received a minute apart: types, districts, statuses and engineers to filter on."""
    made: dict[str, Any] = {}
    made["install"] = flow.make_order()
    clock.advance(minutes=1)
    made["repair"] = flow.make_order(order_type="repair")
    clock.advance(minutes=1)
    made["panlong"] = flow.make_order(
        address={"text": "昆明市盘龙区北京路1号", "district": "盘龙区", "lat": 25.07, "lng": 102.75}
    )
    clock.advance(minutes=1)
    made["taken"], made["engineer"] = flow.order_in("taken", order_type="iptv_install")
    clock.advance(minutes=1)
    made["cancelled"], _ = flow.order_in("cancelled")
    return made


def ids(items: list[Order]) -> list[int]:
    return [o.id for o in items]


def test_list_orders_is_newest_first_and_paginated(board: dict[str, Any]) -> None:
    newest_first = [board[k].id for k in ("cancelled", "taken", "panlong", "repair", "install")]
    every, total = orders.list_orders(OrderFilters(), page=1, page_size=50, actor=DISPATCHER)
    assert (ids(every), total) == (newest_first, 5)
    pages = [orders.list_orders(OrderFilters(), page=p, page_size=2, actor=DISPATCHER) for p in (1, 2, 3, 4)]
    assert [ids(items) for items, _ in pages] == [newest_first[:2], newest_first[2:4], newest_first[4:], []]
    assert {total for _, total in pages} == {5}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param(lambda b: OrderFilters(status=("new",)), ["panlong", "repair", "install"], id="status"),
        pytest.param(
            lambda b: OrderFilters(status=("taken", "cancelled")), ["cancelled", "taken"], id="statuses"
        ),
        pytest.param(lambda b: OrderFilters(order_type="repair"), ["repair"], id="order_type"),
        pytest.param(lambda b: OrderFilters(district="盘龙区"), ["panlong"], id="district"),
        pytest.param(lambda b: OrderFilters(engineer_id=b["engineer"].id), ["taken"], id="engineer"),
        pytest.param(
            lambda b: OrderFilters(external_id=b["repair"].external_id), ["repair"], id="external_id"
        ),
        pytest.param(
            lambda b: OrderFilters(status=("new",), district="五华区"),
            ["repair", "install"],
            id="status+district",
        ),
        pytest.param(lambda b: OrderFilters(order_type="move"), [], id="nothing"),
    ],
)
def test_list_orders_filters(
    board: dict[str, Any], filters: Callable[..., OrderFilters], expected: list[str]
) -> None:
    items, total = orders.list_orders(filters(board), page=1, page_size=50, actor=ACCEPTANCE)
    assert ids(items) == [board[k].id for k in expected]
    assert total == len(expected)


def test_an_engineer_lists_only_their_own_orders(board: dict[str, Any]) -> None:
    mine = engineer_actor(board["engineer"])
    items, total = orders.list_orders(OrderFilters(), page=1, page_size=50, actor=mine)
    assert (ids(items), total) == ([board["taken"].id], 1)
    # Filtering by a colleague does not widen what an engineer sees.
    colleague = OrderFilters(engineer_id=board["cancelled"].engineer_id)
    assert orders.list_orders(colleague, page=1, page_size=50, actor=ACCEPTANCE)[1] == 1
    assert orders.list_orders(colleague, page=1, page_size=50, actor=mine) == ([], 0)


@pytest.mark.parametrize("actor", [INTAKE_ACTOR, BILLING], ids=["intake", "billing"])
def test_systems_without_read_access_cannot_list_or_read_orders(board: dict[str, Any], actor: Actor) -> None:
    with pytest.raises(PermissionDenied):
        orders.list_orders(OrderFilters(), page=1, page_size=50, actor=actor)
    with pytest.raises(PermissionDenied):
        orders.get_order(board["install"].id, actor=actor)


def test_an_engineer_login_without_an_engineer_lists_and_reads_nothing(board: dict[str, Any]) -> None:
    assert orders.list_orders(OrderFilters(), page=1, page_size=50, actor=UNLINKED_ENGINEER) == ([], 0)
    with pytest.raises(NotFound):
        orders.get_order(board["install"].id, actor=UNLINKED_ENGINEER)  # unassigned: engineer_id IS NULL


def test_get_order_shows_an_engineer_only_their_own_orders(flow: Flow) -> None:
    order, engineer = flow.order_in("taken")
    colleague = flow.make_engineer()
    assert orders.get_order(order.id, actor=engineer_actor(engineer)).id == order.id
    with pytest.raises(NotFound) as info:
        orders.get_order(order.id, actor=engineer_actor(colleague, user_id=951))
    assert info.value.http_status == 404
    # The colleague's 404 looks exactly like an unknown order's.
    with pytest.raises(NotFound) as unknown:
        orders.get_order(987654, actor=DISPATCHER)
    assert type(info.value) is type(unknown.value)


def test_an_engineer_cannot_act_on_a_colleagues_order_through_the_services(flow: Flow) -> None:
    order, _ = flow.order_in("taken")
    colleague = engineer_actor(flow.make_engineer(), user_id=951)
    with pytest.raises(NotFound):
        orders.suspend_order(order.id, reason_code="third_party", note=None, until=None, actor=colleague)
    assert order.status == "taken"


def test_order_events_are_in_the_order_they_happened(flow: Flow) -> None:
    order, _ = flow.order_in("appointed")
    assert [e.action for e in orders.order_events(order)] == ["intake", "assign", "take", "appoint"]


def test_attachment_kinds_lists_what_was_uploaded(flow: Flow) -> None:
    order, _ = flow.order_in("on_site")
    assert orders.attachment_kinds(order) == frozenset()
    attach(order, "id_card", "after")
    assert orders.attachment_kinds(order) == frozenset({"id_card", "after"})


def test_workflow_rules_come_from_the_configuration(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "OPTICAL_POWER_MIN_DBM", -25)
    monkeypatch.setitem(app.config, "OPTICAL_POWER_MAX_DBM", "-9.5")
    assert orders.workflow_rules() == workflow.Rules(optical_power_min_dbm=-25.0, optical_power_max_dbm=-9.5)


def test_timestamps_are_stored_and_read_back_as_utc(flow: Flow) -> None:
    order, _ = flow.order_in("appointed")
    db.session.expire_all()
    fresh = db.session.get(Order, order.id)
    assert fresh is not None
    assert fresh.appointment_start == datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
    assert fresh.appointment_start.utcoffset() == timedelta(0)
