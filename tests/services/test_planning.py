"""Day planning on a real database: a small district's Thursday planned, checked, accepted and discarded.

Every plan the service proposes is replayed by the independent checker (dispatch/planning/feasibility.py):
an autouse fixture records each (problem, solution) the service solved and checks it again after the test,
and the tests check the stored plan against the database's own rules (skills, shifts, windows, capacity).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch.actors import Actor
from dispatch.errors import Conflict, NotFound, PermissionDenied, ValidationError
from dispatch.extensions import db
from dispatch.messaging.templates import render_message
from dispatch.models import DayPlan, District, Engineer, Order, OrderEvent, OutboxMessage, SlaClock
from dispatch.planning import Problem, Solution, feasibility
from dispatch.services import dispatching, field, planning
from dispatch.timeutil import to_local
from tests.services.test_workflow import engineer_actor

DISPATCHER = Actor(kind="user", id=901, name="调度甲", role="dispatcher", source="console")
ADMIN = Actor(kind="user", id=902, name="管理员", role="admin", source="console")
MANAGER = Actor(kind="user", id=903, name="经理", role="manager", source="console")
INTAKE = Actor(kind="api_key", id=1, name="hotline", scopes=frozenset({"intake"}), source="intake")
DAY = date(2026, 11, 26)  # a Thursday; the fake clock stands at Wednesday 09:00
LIMIT = 1.0
ALL_SKILLS = ["broadband_install", "iptv_install", "repair", "move", "opportunity"]


def local(hour: int, minute: int = 0, day: date = DAY) -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00+08:00"


@pytest.fixture(autouse=True)
def every_plan_is_feasible(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Problem, Solution]]]:
    """Record what the service solved; afterwards replay each solution with the independent checker."""
    solved: list[tuple[Problem, Solution]] = []
    real = planning._solve

    def recording(problem: Problem, time_limit_seconds: float) -> Solution:
        solution = real(problem, time_limit_seconds)
        solved.append((problem, solution))
        return solution

    monkeypatch.setattr(planning, "_solve", recording)
    yield solved
    for problem, solution in solved:
        assert feasibility.check(problem, solution) == []


@dataclass
class World:
    district: District
    a: Engineer  # every skill
    b: Engineer  # repairs only, capacity 2
    c: Engineer  # on leave that day
    d: Engineer  # every skill, holds the appointed order
    orders: dict[str, Order]


POINTS = [
    (25.0423, 102.7065),
    (25.0500, 102.7100),
    (25.0380, 102.6950),
    (25.0600, 102.7200),
    (25.0300, 102.7000),
    (25.0450, 102.6900),
    (25.0550, 102.7000),
    (25.0350, 102.7150),
    (25.0480, 102.7250),
    (25.0400, 102.6850),
    (25.0650, 102.7050),
]


@pytest.fixture
def world(app: Any, make_engineer: Any, make_order: Any) -> World:
    district = db.session.scalar(sa.select(District).where(District.name == "五华区"))
    assert district is not None
    a = make_engineer(home={"lat": 25.04, "lng": 102.70})
    b = make_engineer(skills=["repair"], daily_capacity=2, home={"lat": 25.05, "lng": 102.71})
    c = make_engineer(
        leave=[{"start": DAY, "end": DAY, "reason": "年假"}], home={"lat": 25.045, "lng": 102.705}
    )
    d = make_engineer(home={"lat": 25.035, "lng": 102.715})
    orders: dict[str, Order] = {}

    def order(name: str, point: tuple[float, float], **kw: Any) -> Order:
        lat, lng = point
        address = {
            "text": f"昆明市五华区测试路{len(orders) + 1}号",
            "district": "五华区",
            "lat": lat,
            "lng": lng,
        }
        made = make_order(address=address, **kw)
        orders[name] = made
        return made

    types = ["repair", "broadband_install", "repair", "iptv_install", "repair", "broadband_install", "repair"]
    for i, order_type in enumerate(types):
        start = 9 + (i % 3) * 3
        order(
            f"new{i}",
            POINTS[i],
            order_type=order_type,
            requested_window={"start": local(start), "end": local(start + 3)},
        )
    order("anytime", POINTS[7], order_type="move", requested_window={"start": local(8), "end": local(20)})
    order("late", POINTS[8], order_type="repair", requested_window={"start": local(22), "end": local(23)})
    order(
        "tomorrow",
        POINTS[9],
        order_type="repair",
        requested_window={
            "start": local(9, day=DAY + timedelta(days=1)),
            "end": local(12, day=DAY + timedelta(days=1)),
        },
    )
    appointed = order("appointed", POINTS[10], order_type="broadband_install")
    dispatching.assign_order(appointed.id, d.id, actor=DISPATCHER)
    field.take_order(appointed.id, actor=engineer_actor(d))
    field.record_contact(
        appointed.id,
        outcome="reached",
        called_at=datetime(2026, 11, 25, 1, 30, tzinfo=UTC),
        appointment={
            "start": datetime.fromisoformat(local(14)),
            "end": datetime.fromisoformat(local(15)),
        },
        actor=engineer_actor(d),
    )
    held = order("held_by_c", POINTS[1], order_type="repair")
    dispatching.assign_order(held.id, c.id, actor=DISPATCHER)
    for made in orders.values():
        db.session.refresh(made)
    return World(district, a, b, c, d, orders)


def _plan(world: World, actor: Actor = DISPATCHER, **kw: Any) -> DayPlan:
    return planning.propose_plan(DAY, [world.district.id], actor=actor, time_limit_seconds=LIMIT, **kw)


def _by_order(plan: DayPlan) -> dict[int, Any]:
    return {v.order_id: v for v in plan.visits}


def test_the_plan_keeps_every_hard_rule(world: World, every_plan_is_feasible: list[Any]) -> None:
    plan = _plan(world)
    assert len(every_plan_is_feasible) == 1
    assert plan.status == "proposed" and plan.day == DAY and plan.district_ids == [world.district.id]
    service = planning.plan_settings().service_minutes
    per_engineer: dict[int, list[Any]] = {}
    for visit in plan.visits:
        per_engineer.setdefault(visit.engineer_id, []).append(visit)
        order = db.session.get(Order, visit.order_id)
        engineer = db.session.get(Engineer, visit.engineer_id)
        assert order is not None and engineer is not None
        assert order.order_type in engineer.skills  # skills
        assert visit.window_start <= visit.eta <= visit.window_end  # windows
        shift = next(s for s in engineer.shifts if s.weekday == DAY.isoweekday())
        eta = to_local(visit.eta)
        end = eta + timedelta(minutes=service[order.order_type])
        assert shift.start_time <= eta.time() and end.time() <= shift.end_time  # shifts
        if order.requested_start is not None and not visit.pinned:
            assert order.requested_start <= visit.eta <= order.requested_end
    for engineer_id, visits in per_engineer.items():
        engineer = db.session.get(Engineer, engineer_id)
        assert engineer is not None
        assert len(visits) <= engineer.daily_capacity  # capacity
        visits.sort(key=lambda v: v.sequence)
        assert [v.sequence for v in visits] == list(range(1, len(visits) + 1))
        for before, after in zip(visits, visits[1:], strict=False):
            order = db.session.get(Order, before.order_id)
            assert order is not None
            assert after.arrival >= before.eta + timedelta(minutes=service[order.order_type])
    assert world.c.id not in per_engineer  # on leave
    assert len(per_engineer.get(world.b.id, [])) <= 2
    b_orders = [db.session.get(Order, v.order_id) for v in per_engineer.get(world.b.id, [])]
    assert all(o is not None and o.order_type == "repair" for o in b_orders)
    assert plan.planned_count == len(plan.visits)
    assert plan.travel_after_m == sum(e["travel_after_m"] for e in plan.engineers)
    assert {e["engineer_id"] for e in plan.engineers} == {world.a.id, world.b.id, world.d.id}


def test_appointed_orders_stay_with_their_engineer_at_their_window(world: World) -> None:
    plan = _plan(world)
    appointed = world.orders["appointed"]
    visit = _by_order(plan)[appointed.id]
    assert visit.engineer_id == world.d.id and visit.pinned
    assert visit.engineer_before_id == world.d.id and visit.order_status == "appointed"
    assert appointed.appointment_start <= visit.eta <= appointed.appointment_end
    # Its travel before is the engineer's trip from home to the one order they already hold.
    d = next(e for e in plan.engineers if e["engineer_id"] == world.d.id)
    assert d["travel_before_m"] > 0 and plan.travel_before_m == d["travel_before_m"]


def test_orders_that_cannot_be_planned_say_why(world: World) -> None:
    plan = _plan(world)
    visits = _by_order(plan)
    reasons = {u["order_id"]: u["reason"] for u in plan.unplanned}
    assert reasons[world.orders["late"].id] == "does_not_fit"  # 22:00-23:00: every shift ends at 20:00
    assert reasons[world.orders["held_by_c"].id] == "engineer_unavailable"  # its engineer is on leave
    assert world.orders["tomorrow"].id not in visits and world.orders["tomorrow"].id not in reasons
    for u in plan.unplanned:
        assert u["message"] == planning.REASONS[u["reason"]]
    planned_or_not = set(visits) | set(reasons)
    assert plan.orders_count == len(planned_or_not)
    fitting = {o.id for k, o in world.orders.items() if k not in ("late", "held_by_c", "tomorrow")}
    assert fitting <= set(visits)  # three engineers, eleven orders across a long day: everything else fits


def test_capacity_counts_what_the_day_already_holds(world: World, make_order: Any) -> None:
    # Two repairs of B's from another day's planning, counted on that day: B has no room left.
    for _ in range(2):
        extra = make_order(
            order_type="repair",
            address={"text": "昆明市盘龙区某路", "district": "盘龙区", "lat": 25.07, "lng": 102.72},
            requested_window={"start": local(9), "end": local(12)},
        )
        dispatching.assign_order(extra.id, world.b.id, actor=DISPATCHER)
    plan = _plan(world)
    b = next(e for e in plan.engineers if e["engineer_id"] == world.b.id)
    assert b["capacity"] == 0
    assert all(v.engineer_id != world.b.id for v in plan.visits)


def test_a_pinned_order_that_cannot_fit_is_dropped_not_the_whole_plan(world: World, make_order: Any) -> None:
    # Three orders appointed to D in the same half hour far apart cannot all be served: the rest still plans.
    for point in ((25.10, 102.60), (24.95, 102.85)):
        o = make_order(
            order_type="repair",
            address={"text": "远处", "district": "五华区", "lat": point[0], "lng": point[1]},
        )
        dispatching.assign_order(o.id, world.d.id, actor=DISPATCHER)
        field.take_order(o.id, actor=engineer_actor(world.d))
        field.record_contact(
            o.id,
            outcome="reached",
            called_at=datetime(2026, 11, 25, 1, 30, tzinfo=UTC),
            appointment={
                "start": datetime.fromisoformat(local(14)),
                "end": datetime.fromisoformat(local(14, 30)),
            },
            actor=engineer_actor(world.d),
        )
    plan = _plan(world)
    dropped = [u for u in plan.unplanned if u["reason"] == "pinned_does_not_fit"]
    assert len(dropped) >= 1
    assert plan.planned_count >= 8


def test_accept_assigns_through_the_workflow_with_clocks_events_and_sms(world: World) -> None:
    plan = _plan(world)
    accepted, result = planning.accept_plan(plan.id, actor=DISPATCHER)
    assert accepted.status == "accepted" and accepted.decided_by == DISPATCHER.name
    assert accepted.result == result
    new_ids = {v.order_id for v in plan.visits if not v.pinned}
    assert {r["order_id"] for r in result["assigned"]} == new_ids
    assert {r["order_id"] for r in result["unchanged"]} == {world.orders["appointed"].id}
    assert result["skipped"] == []
    for visit in plan.visits:
        order = db.session.get(Order, visit.order_id, populate_existing=True)
        assert order is not None
        assert order.engineer_id == visit.engineer_id and order.planned_eta == visit.eta
        if visit.pinned:
            continue
        assert order.status == "dispatched"
        event = db.session.scalars(
            sa.select(OrderEvent).where(OrderEvent.order_id == order.id, OrderEvent.action == "assign")
        ).one()
        assert event.payload["engineer_id"] == visit.engineer_id and event.payload["plan_id"] == plan.id
        assert event.actor_name == DISPATCHER.name
        take = db.session.scalars(
            sa.select(SlaClock).where(SlaClock.order_id == order.id, SlaClock.clock == "take")
        ).one()
        assert take.status == "running" and take.engineer_id == visit.engineer_id
        sms = db.session.scalars(
            sa.select(OutboxMessage).where(
                OutboxMessage.order_id == order.id, OutboxMessage.template == "dispatch_engineer"
            )
        ).one()
        engineer = db.session.get(Engineer, visit.engineer_id)
        assert engineer is not None and sms.recipient == engineer.phone


def test_the_eta_shows_in_the_customers_appointment_sms(world: World) -> None:
    plan = _plan(world)
    planning.accept_plan(plan.id, actor=DISPATCHER)
    visit = next(v for v in plan.visits if not v.pinned)
    order = db.session.get(Order, visit.order_id)
    assert order is not None
    engineer = db.session.get(Engineer, visit.engineer_id)
    field.take_order(order.id, actor=engineer_actor(engineer))  # type: ignore[arg-type]
    window = {"start": visit.eta - timedelta(minutes=30), "end": visit.eta + timedelta(minutes=90)}
    field.record_contact(
        order.id,
        outcome="reached",
        called_at=datetime(2026, 11, 25, 1, 30, tzinfo=UTC),
        appointment=window,
        actor=engineer_actor(engineer),  # type: ignore[arg-type]
    )
    message = db.session.scalars(
        sa.select(OutboxMessage).where(
            OutboxMessage.order_id == order.id, OutboxMessage.template == "appointment_customer"
        )
    ).one()
    eta = to_local(visit.eta).strftime("%H:%M")
    assert f"预计{eta}左右到达" in render_message(message)
    # Rescheduled away from the planned time: the ETA no longer holds, and the text is the plain one.
    later = {"start": visit.eta + timedelta(hours=3), "end": visit.eta + timedelta(hours=4)}
    field.record_contact(
        order.id,
        outcome="reached",
        called_at=datetime(2026, 11, 25, 2, 0, tzinfo=UTC),
        appointment=later,
        reason="customer",
        actor=engineer_actor(engineer),  # type: ignore[arg-type]
    )
    assert "预计" not in render_message(message)


def test_without_a_plan_the_appointment_sms_is_the_default_text(world: World) -> None:
    appointed = world.orders["appointed"]
    message = db.session.scalars(
        sa.select(OutboxMessage).where(
            OutboxMessage.order_id == appointed.id, OutboxMessage.template == "appointment_customer"
        )
    ).one()
    text = render_message(message)
    assert "预计" not in text and "上门服务。确认请回复1" in text


def test_a_stale_order_is_skipped_on_accept(world: World) -> None:
    plan = _plan(world)
    visit = next(v for v in plan.visits if not v.pinned)
    other = world.a.id if visit.engineer_id != world.a.id else world.d.id
    dispatching.assign_order(visit.order_id, other, actor=ADMIN)  # a dispatcher got there first
    cancelled = next(v for v in plan.visits if not v.pinned and v.order_id != visit.order_id)
    from dispatch.services import orders as order_service

    order_service.cancel_order(cancelled.order_id, reason="客户撤单", actor=INTAKE)
    _, result = planning.accept_plan(plan.id, actor=DISPATCHER)
    skipped = {r["order_id"]: r for r in result["skipped"]}
    assert set(skipped) == {visit.order_id, cancelled.order_id}
    assert all(r["reason"] == "changed" for r in skipped.values())
    order = db.session.get(Order, visit.order_id, populate_existing=True)
    assert order is not None and order.engineer_id == other and order.planned_eta is None
    gone = db.session.get(Order, cancelled.order_id, populate_existing=True)
    assert gone is not None and gone.status == "cancelled"


def test_accepting_twice_is_a_conflict_and_changes_nothing(world: World) -> None:
    plan = _plan(world)
    planning.accept_plan(plan.id, actor=DISPATCHER)
    events = db.session.scalar(sa.select(sa.func.count()).select_from(OrderEvent))
    with pytest.raises(Conflict) as raised:
        planning.accept_plan(plan.id, actor=DISPATCHER)
    assert raised.value.extra["status"] == "accepted"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OrderEvent)) == events
    with pytest.raises(Conflict):
        planning.discard_plan(plan.id, actor=DISPATCHER)


def test_an_accept_interrupted_midway_is_finished_by_accepting_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(world)
    real = planning._accept_visit
    calls: list[int] = []

    def dies_after_the_first(plan_id: int, planned: Any, actor: Actor) -> Any:
        if calls:
            raise SystemExit("the process died")  # after the first order's own commit
        calls.append(planned.order_id)
        return real(plan_id, planned, actor)

    monkeypatch.setattr(planning, "_accept_visit", dies_after_the_first)
    with pytest.raises(SystemExit):
        planning.accept_plan(plan.id, actor=DISPATCHER)
    db.session.rollback()
    interrupted = db.session.get(DayPlan, plan.id, populate_existing=True)
    assert interrupted is not None and interrupted.status == "accepted" and interrupted.result is None
    monkeypatch.setattr(planning, "_accept_visit", real)

    _, result = planning.accept_plan(plan.id, actor=DISPATCHER)

    assert calls[0] in {r["order_id"] for r in result["unchanged"]}
    assert result["skipped"] == []
    assigned = {r["order_id"] for r in result["assigned"]} | {calls[0]}
    assert assigned == {v.order_id for v in plan.visits if not v.pinned}
    for order_id in assigned:  # each assigned once, whichever accept did it
        events = sa.select(sa.func.count()).where(
            OrderEvent.order_id == order_id, OrderEvent.action == "assign"
        )
        assert db.session.scalar(events) == 1
    with pytest.raises(Conflict):  # finished: a third accept is refused
        planning.accept_plan(plan.id, actor=DISPATCHER)


def test_discard_leaves_the_orders_alone(world: World) -> None:
    plan = _plan(world)
    discarded = planning.discard_plan(plan.id, actor=ADMIN)
    assert discarded.status == "discarded" and discarded.decided_by == ADMIN.name
    for visit in plan.visits:
        order = db.session.get(Order, visit.order_id)
        assert order is not None and order.planned_eta is None
        assert order.engineer_id == visit.engineer_before_id
    with pytest.raises(Conflict):
        planning.accept_plan(plan.id, actor=DISPATCHER)


def test_a_second_plan_after_accepting_the_first_keeps_everything_pinned(world: World) -> None:
    first = _plan(world)
    planning.accept_plan(first.id, actor=DISPATCHER)
    second = _plan(world)
    firsts = _by_order(first)
    for visit in second.visits:
        assert visit.pinned and visit.engineer_id == firsts[visit.order_id].engineer_id
    assert second.travel_before_m > 0


def test_plans_are_listed_by_day_and_read_by_managers(world: World) -> None:
    plan = _plan(world)
    assert [p.id for p in planning.list_plans(DAY, actor=MANAGER)] == [plan.id]
    assert planning.list_plans(DAY + timedelta(days=1), actor=DISPATCHER) == []
    assert planning.get_plan(plan.id, actor=MANAGER).id == plan.id
    view = planning.describe(plan)
    assert sum(len(r["visits"]) for r in view["routes"]) == plan.planned_count
    with pytest.raises(NotFound):
        planning.get_plan(plan.id + 1000, actor=DISPATCHER)


@pytest.mark.parametrize(
    "actor",
    [
        engineer_actor(1),
        INTAKE,
        MANAGER,
        Actor(kind="user", id=904, name="受理", role="acceptance", source="console"),
    ],
    ids=["engineer", "intake", "manager", "acceptance"],
)
def test_only_dispatchers_and_admins_plan(world: World, actor: Actor) -> None:
    with pytest.raises(PermissionDenied):
        _plan(world, actor=actor)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(DayPlan)) == 0
    plan = _plan(world)
    with pytest.raises(PermissionDenied):
        planning.accept_plan(plan.id, actor=actor)
    with pytest.raises(PermissionDenied):
        planning.discard_plan(plan.id, actor=actor)
    assert planning.get_plan(plan.id, actor=DISPATCHER).status == "proposed"


def test_bad_requests_are_refused(world: World) -> None:
    with pytest.raises(ValidationError, match="Validation"):
        planning.propose_plan(DAY, [], actor=DISPATCHER)
    with pytest.raises(ValidationError) as raised:
        planning.propose_plan(DAY, [999_999], actor=DISPATCHER)
    assert "district_ids" in raised.value.errors
    with pytest.raises(ValidationError) as raised:
        planning.propose_plan(date(2026, 11, 24), [world.district.id], actor=DISPATCHER)
    assert "day" in raised.value.errors
    with pytest.raises(ValidationError) as raised:
        planning.propose_plan(DAY, [world.district.id], actor=DISPATCHER, time_limit_seconds=31)
    assert "time_limit_seconds" in raised.value.errors


def test_today_is_planned_from_now_on(world: World, clock: Any) -> None:
    clock.set(datetime(2026, 11, 26, 5, 0, tzinfo=UTC))  # Thursday 13:00
    plan = _plan(world)
    for visit in plan.visits:
        assert visit.eta >= clock.now()
    # The orders asked for the morning are overdue: planned for the afternoon rather than dropped.
    morning = world.orders["new0"]
    assert morning.id in _by_order(plan)


def test_an_empty_district_gives_an_empty_plan(app: Any, make_engineer: Any) -> None:
    district = db.session.scalar(sa.select(District).where(District.name == "盘龙区"))
    assert district is not None
    make_engineer(districts=["盘龙区"])
    plan = planning.propose_plan(DAY, [district.id], actor=DISPATCHER, time_limit_seconds=LIMIT)
    assert plan.visits == [] and plan.unplanned == [] and plan.travel_after_m == 0
    assert len(plan.engineers) == 1


def test_an_engineers_capacity_caps_the_route(world: World, make_order: Any) -> None:
    from dispatch.services.engineers import update_engineer
    from tests.conftest import SYSTEM

    for engineer in (world.a, world.d):
        update_engineer(engineer.id, {"active": False}, actor=SYSTEM)
    home = (world.b.home_lat, world.b.home_lng)
    repairs = [
        make_order(
            order_type="repair",
            address={"text": "昆明市五华区近处", "district": "五华区", "lat": home[0], "lng": home[1]},
            requested_window={"start": local(8), "end": local(20)},
        )
        for _ in range(4)
    ]
    plan = _plan(world)
    assert {e["engineer_id"] for e in plan.engineers} == {world.b.id}
    assert len(plan.visits) == 2  # B's capacity, though the day has room for all four
    reasons = {u["order_id"]: u["reason"] for u in plan.unplanned}
    assert sum(reasons.get(o.id) == "does_not_fit" for o in repairs) >= 2
    assert reasons[world.orders["new1"].id] == "no_engineer"  # a broadband install: B only repairs
    assert reasons[world.orders["appointed"].id] == "engineer_unavailable"  # D is inactive


def test_a_plan_for_a_day_that_has_passed_cannot_be_accepted(world: World, clock: Any) -> None:
    plan = _plan(world)
    clock.set(datetime(2026, 11, 26, 16, 30, tzinfo=UTC))  # Friday 00:30
    with pytest.raises(Conflict, match="passed"):
        planning.accept_plan(plan.id, actor=DISPATCHER)
    assert planning.get_plan(plan.id, actor=DISPATCHER).status == "proposed"
    assert planning.discard_plan(plan.id, actor=DISPATCHER).status == "discarded"
