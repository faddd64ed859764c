"""Dispatching (dispatch/services/dispatching.py): candidates, auto-dispatch, re-dispatch, live positions.

The intake payload asks for 2026-11-26 09:00–12:00 in Kunming (Thursday), district 五华区, at
(25.0423, 102.7065); the fake clock starts at 2026-11-25 09:00 local.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from dispatch.clock import FakeClock
from dispatch.errors import Conflict, NotFound, PermissionDenied, ValidationError
from dispatch.extensions import db
from dispatch.models import AssignmentExclusion, Engineer, Order, OrderEvent
from dispatch.services import dispatching
from dispatch.sla import tick
from tests.services.test_workflow import DISPATCHER, MANAGER, engineer_actor, events_of

NEAR = {"lat": 25.0433, "lng": 102.7065}  # ~0.1 km from the order
MID = {"lat": 25.0600, "lng": 102.7065}  # ~2 km
FAR = {"lat": 25.1400, "lng": 102.7065}  # ~11 km
THURSDAY = date(2026, 11, 26)


def ids(candidates: list[dispatching.Candidate]) -> list[int]:
    return [c.engineer_id for c in candidates]


def last_assignment(order: Order) -> OrderEvent:
    return [e for e in events_of(order) if e.action in ("assign", "reassign")][-1]


@pytest.fixture
def three(app: Flask, make_engineer: Callable[..., Engineer]) -> dict[str, Engineer]:
    return {
        "near": make_engineer(home=NEAR),
        "mid": make_engineer(home=MID),
        "far": make_engineer(home=FAR),
    }


# --- candidates ------------------------------------------------------------------------------------------


def test_candidates_are_ranked_nearest_first_with_every_factor_explained(
    make_order: Callable[..., Order], three: dict[str, Engineer]
) -> None:
    order = make_order()
    ranked = dispatching.candidates(order.id, actor=DISPATCHER)
    assert ids(ranked) == [three["near"].id, three["mid"].id, three["far"].id]
    best = ranked[0]
    assert best.distance_km == pytest.approx(0.111, abs=0.005)  # geodesic
    assert best.position == "home"
    assert set(best.reasons) == {"distance", "load", "sla_urgency", "team_balance"}
    for factor in best.reasons.values():
        assert {"value", "weight"} <= set(factor)
    assert best.reasons["distance"]["km"] == best.distance_km
    assert ranked[0].score > ranked[1].score > ranked[2].score


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"active": False}, "inactive"),
        ({"skills": ["repair"]}, "skill"),
        ({"districts": ["盘龙区"]}, "district"),
        ({"shifts": [{"weekday": 4, "start": "13:00", "end": "20:00"}]}, "off_shift"),
        ({"leave": [{"start": THURSDAY, "end": THURSDAY + timedelta(days=2), "reason": "年假"}]}, "on_leave"),
        ({"daily_capacity": 0}, "capacity"),
    ],
)
def test_an_engineer_breaking_a_hard_rule_is_not_a_candidate_but_is_explained_on_request(
    app: Flask,
    make_order: Callable[..., Order],
    make_engineer: Callable[..., Engineer],
    changes: dict[str, Any],
    code: str,
) -> None:
    from api.engineers.schemas import EngineerPatchSchema
    from dispatch.services.engineers import update_engineer
    from tests.conftest import SYSTEM

    ok = make_engineer(home=MID)
    bad = make_engineer(home=NEAR)
    update_engineer(bad.id, EngineerPatchSchema().load(_jsonable(changes)), actor=SYSTEM)
    order = make_order()
    assert ids(dispatching.candidates(order.id, actor=DISPATCHER)) == [ok.id]
    explained = dispatching.candidates(order.id, actor=DISPATCHER, include_rejected=True)
    assert ids(explained) == [ok.id, bad.id]
    rejected = explained[1]
    assert (rejected.score, rejected.violations) == (None, [code])


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: [{**v, "start": str(v["start"]), "end": str(v["end"])} for v in vs] if k == "leave" else vs
        for k, vs in data.items()
    }


def test_a_fresh_live_position_beats_the_home_position_and_a_stale_one_does_not(
    make_order: Callable[..., Order], three: dict[str, Engineer], clock: FakeClock
) -> None:
    far = three["far"]
    dispatching.record_position(
        far.id, lat=25.0424, lng=102.7066, accuracy_m=12.0, at=clock.now(), actor=engineer_actor(far)
    )
    order = make_order()
    ranked = dispatching.candidates(order.id, actor=DISPATCHER)
    assert ranked[0].engineer_id == far.id
    assert (ranked[0].position, ranked[0].reasons["distance"]["position"]) == ("live", "live")
    clock.advance(hours=3)  # POSITION_MAX_AGE_SECONDS is 2 h
    assert dispatching.candidates(order.id, actor=DISPATCHER)[0].engineer_id == three["near"].id


def test_an_engineer_already_racing_deadlines_ranks_below_an_idle_colleague(
    app: Flask, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer], clock: FakeClock
) -> None:
    busy = make_engineer(home=NEAR)
    idle = make_engineer(home=NEAR)
    for _ in range(3):
        taken = make_order()
        dispatching.assign_order(taken.id, busy.id, actor=DISPATCHER)  # take clocks due in 15 min
    order = make_order()
    ranked = dispatching.candidates(order.id, actor=DISPATCHER)
    assert ids(ranked) == [idle.id, busy.id]
    assert ranked[1].reasons["sla_urgency"] == pytest.approx(
        {"value": 0.0, "weight": 0.2, "urgent_orders": 3}
    )


def test_weights_are_configuration(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    make_order: Callable[..., Order],
    make_engineer: Callable[..., Engineer],
) -> None:
    near_but_loaded = make_engineer(home=NEAR, daily_capacity=2)
    far_and_free = make_engineer(home=FAR, daily_capacity=2)
    dispatching.assign_order(make_order().id, near_but_loaded.id, actor=DISPATCHER)
    order = make_order()
    monkeypatch.setitem(app.config, "ASSIGNMENT_WEIGHTS", "distance=0.9,load=0.1")
    assert ids(dispatching.candidates(order.id, actor=DISPATCHER))[0] == near_but_loaded.id
    monkeypatch.setitem(app.config, "ASSIGNMENT_WEIGHTS", "distance=0.1,load=0.9")
    ranked = dispatching.candidates(order.id, actor=DISPATCHER)
    assert ranked[0].engineer_id == far_and_free.id
    assert ranked[0].reasons["load"]["weight"] == 0.9


def test_candidates_are_for_the_dispatch_desk_only(make_order: Callable[..., Order], three: Any) -> None:
    order = make_order()
    with pytest.raises(PermissionDenied):
        dispatching.candidates(order.id, actor=MANAGER)
    with pytest.raises(NotFound):
        dispatching.candidates(987654, actor=DISPATCHER)
    with pytest.raises(ValidationError):
        dispatching.candidates(order.id, actor=DISPATCHER, limit=0)


# --- assignment decisions ---------------------------------------------------------------------------------


def test_auto_assignment_takes_the_best_candidate_and_records_the_decision(
    make_order: Callable[..., Order], three: dict[str, Engineer]
) -> None:
    order = make_order()
    assigned, warnings = dispatching.assign_order(order.id, auto=True, actor=DISPATCHER)
    assert (assigned.status, assigned.engineer_id, warnings) == ("dispatched", three["near"].id, [])
    event = last_assignment(assigned)
    assert (event.actor_type, event.actor_name) == (DISPATCHER.kind, DISPATCHER.name)
    payload = event.payload
    assert (payload["mode"], payload["rank"], payload["warnings"]) == ("auto", 1, [])
    assert [c["engineer_id"] for c in payload["candidates"]] == [e.id for e in three.values()]
    assert payload["candidates"][0]["score"] == payload["score"] > payload["candidates"][1]["score"]
    assert set(payload["weights"]) == {"distance", "load", "sla_urgency", "team_balance"}


def test_a_manual_choice_records_where_it_stood_among_the_candidates(
    make_order: Callable[..., Order], three: dict[str, Engineer]
) -> None:
    order = make_order()
    assigned, _ = dispatching.assign_order(order.id, three["far"].id, actor=DISPATCHER)
    payload = last_assignment(assigned).payload
    assert (payload["mode"], payload["rank"], payload["engineer_id"]) == ("manual", 3, three["far"].id)


def test_auto_assignment_with_nobody_qualified_is_a_conflict_and_changes_nothing(
    app: Flask, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]
) -> None:
    make_engineer(districts=["盘龙区"])
    order = make_order()
    before = len(events_of(order))
    with pytest.raises(Conflict):
        dispatching.assign_order(order.id, auto=True, actor=DISPATCHER)
    db.session.rollback()
    assert (db.session.get(Order, order.id).status, len(events_of(order))) == ("new", before)


def test_auto_assignment_never_exceeds_an_engineers_capacity(
    app: Flask, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]
) -> None:
    one_slot = make_engineer(home=NEAR, daily_capacity=1)
    first, second = make_order(), make_order()
    assert dispatching.assign_order(first.id, auto=True, actor=DISPATCHER)[0].engineer_id == one_slot.id
    with pytest.raises(Conflict):
        dispatching.assign_order(second.id, auto=True, actor=DISPATCHER)


# --- re-dispatch -----------------------------------------------------------------------------------------


@pytest.fixture
def redispatch(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "AUTO_REDISPATCH", ("return", "take_breach"))


def test_a_returned_order_goes_to_someone_else_and_never_back_to_who_returned_it(
    redispatch: None, make_order: Callable[..., Order], three: dict[str, Engineer], clock: FakeClock
) -> None:
    from dispatch.services.orders import transition

    near = three["near"]
    order = make_order()
    dispatching.assign_order(order.id, auto=True, actor=DISPATCHER)
    transition(order.id, "return", actor=engineer_actor(near), params={"reason_code": "no_resource"})
    assert db.session.scalars(sa.select(AssignmentExclusion)).one().engineer_id == near.id
    result = dispatching.sweep(clock.now())
    assert (result.assigned, result.unassigned) == (1, 0)
    order = db.session.get(Order, order.id)
    assert (order.status, order.engineer_id) == ("dispatched", three["mid"].id)
    assert dispatching.sweep(clock.now()) == dispatching.SweepResult()  # nothing left to do


def test_a_dispatcher_may_still_force_the_excluded_engineer_with_a_warning(
    make_order: Callable[..., Order], three: dict[str, Engineer]
) -> None:
    from dispatch.services.orders import transition

    near = three["near"]
    order = make_order()
    dispatching.assign_order(order.id, near.id, actor=DISPATCHER)
    transition(order.id, "return", actor=engineer_actor(near), params={"reason_code": "other"})
    assert near.id not in ids(dispatching.candidates(order.id, actor=DISPATCHER))
    assigned, warnings = dispatching.assign_order(order.id, near.id, actor=DISPATCHER)
    assert assigned.engineer_id == near.id
    assert [w["code"] for w in warnings] == ["excluded"]


def test_a_breached_take_clock_re_dispatches_to_another_engineer(
    redispatch: None, make_order: Callable[..., Order], three: dict[str, Engineer], clock: FakeClock
) -> None:
    order = make_order()
    dispatching.assign_order(order.id, auto=True, actor=DISPATCHER)
    assert dispatching.sweep(clock.now()) == dispatching.SweepResult()  # not breached yet
    clock.advance(minutes=16)
    tick.tick(clock.now())
    assert dispatching.sweep(clock.now()).assigned == 1
    order = db.session.get(Order, order.id)
    assert (order.status, order.engineer_id) == ("dispatched", three["mid"].id)
    event = last_assignment(order)
    assert (event.action, event.actor_type, event.payload["redispatch"]) == (
        "reassign",
        "system",
        "take_breach",
    )
    assert event.payload["previous_engineer_id"] == three["near"].id
    exclusion = db.session.scalars(sa.select(AssignmentExclusion)).one()
    assert (exclusion.engineer_id, exclusion.reason) == (three["near"].id, "take_breach")
    # The new engineer's take clock runs afresh: the next sweep leaves the order alone.
    assert dispatching.sweep(clock.now()) == dispatching.SweepResult()


def test_without_redispatch_configured_the_sweep_does_nothing(
    make_order: Callable[..., Order], three: dict[str, Engineer], clock: FakeClock
) -> None:
    order = make_order()
    dispatching.assign_order(order.id, auto=True, actor=DISPATCHER)
    clock.advance(minutes=16)
    tick.tick(clock.now())
    assert dispatching.sweep(clock.now()) == dispatching.SweepResult()
    assert db.session.get(Order, order.id).engineer_id == three["near"].id


# --- automatic assignment on intake -----------------------------------------------------------------------


def test_with_auto_dispatch_on_intake_assigns_the_best_engineer_at_once(
    app: Flask, monkeypatch: pytest.MonkeyPatch, make_order: Callable[..., Order], three: dict[str, Engineer]
) -> None:
    monkeypatch.setitem(app.config, "AUTO_DISPATCH", True)
    order = make_order()
    assert (order.status, order.engineer_id) == ("dispatched", three["near"].id)
    assert last_assignment(order).actor_name == "auto-dispatch"


def test_an_order_nobody_can_take_stays_new_and_is_tried_again_later(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    make_order: Callable[..., Order],
    make_engineer: Callable[..., Engineer],
    clock: FakeClock,
) -> None:
    monkeypatch.setitem(app.config, "AUTO_DISPATCH", True)
    order = make_order()
    assert order.status == "new"
    assert db.session.get(Order, order.id).auto_dispatch_after == clock.now() + timedelta(seconds=60)
    engineer = make_engineer()
    assert dispatching.sweep(clock.now()) == dispatching.SweepResult()  # waits its retry time
    clock.advance(seconds=61)
    assert dispatching.sweep(clock.now()).assigned == 1
    assert db.session.get(Order, order.id).engineer_id == engineer.id


# --- live positions --------------------------------------------------------------------------------------


def test_a_late_heartbeat_does_not_move_the_engineer_back(
    app: Flask, make_engineer: Callable[..., Engineer], clock: FakeClock
) -> None:
    engineer = make_engineer()
    me = engineer_actor(engineer)
    now = clock.now()
    dispatching.record_position(engineer.id, lat=25.05, lng=102.71, accuracy_m=8.0, at=now, actor=me)
    dispatching.record_position(
        engineer.id, lat=25.00, lng=102.60, accuracy_m=8.0, at=now - timedelta(minutes=5), actor=me
    )
    engineer = db.session.get(Engineer, engineer.id)
    assert (engineer.position_lat, engineer.position_lng, engineer.position_at) == (25.05, 102.71, now)


def test_only_the_engineers_own_device_reports_their_position(
    app: Flask, make_engineer: Callable[..., Engineer], clock: FakeClock
) -> None:
    engineer, colleague = make_engineer(), make_engineer()
    with pytest.raises(PermissionDenied):
        dispatching.record_position(
            engineer.id, lat=25.0, lng=102.7, accuracy_m=None, at=clock.now(), actor=engineer_actor(colleague)
        )
    with pytest.raises(PermissionDenied):
        dispatching.record_position(
            engineer.id, lat=25.0, lng=102.7, accuracy_m=None, at=clock.now(), actor=DISPATCHER
        )


# --- concurrency (PostgreSQL) -----------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 3])
def test_orders_racing_for_an_engineers_last_slots_never_exceed_the_capacity(
    pg_app: Flask, make_engineer: Callable[..., Engineer], make_order: Callable[..., Order], capacity: int
) -> None:
    engineer = make_engineer(home=NEAR, daily_capacity=capacity)
    order_ids = [make_order().id for _ in range(12)]
    db.session.commit()
    barrier = threading.Barrier(len(order_ids))
    outcomes: list[str] = []
    lock = threading.Lock()

    def assign(order_id: int) -> None:
        with pg_app.app_context():
            barrier.wait()
            try:
                dispatching.assign_order(order_id, auto=True, actor=DISPATCHER)
                outcome = "assigned"
            except Conflict:
                outcome = "conflict"
            finally:
                db.session.remove()
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=assign, args=(i,)) for i in order_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == sorted(["assigned"] * capacity + ["conflict"] * (len(order_ids) - capacity))
    on_engineer = db.session.scalar(
        sa.select(sa.func.count()).select_from(Order).where(Order.engineer_id == engineer.id)
    )
    assert on_engineer == capacity


def test_an_order_without_a_window_goes_to_whoever_still_works_today(
    app: Flask, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer], clock: FakeClock
) -> None:
    from datetime import UTC, datetime, time

    clock.set(datetime(2026, 11, 25, 20, 30, tzinfo=UTC))  # 04:30 on Thursday the 26th in Kunming
    today = make_engineer(shifts=[{"weekday": 4, "start": time(8), "end": time(17)}])
    make_engineer(shifts=[{"weekday": 5, "start": time(8), "end": time(17)}])  # works on Friday only
    order = make_order(requested_window=None)
    assert ids(dispatching.candidates(order.id, actor=DISPATCHER)) == [today.id]
