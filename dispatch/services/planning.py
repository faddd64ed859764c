"""Day planning: propose routes for a day and some districts, show them, accept (via the workflow) or discard.

How a proposal is built (everything in seconds from the business day's local midnight):

* Orders: the open orders filed under the districts. Unassigned ones (``new``, ``returned``) are optional
  visits with a drop penalty (higher for higher priority), for any engineer with the skill and the district
  who is not excluded from the order. Orders already with an engineer (``dispatched``, ``taken``,
  ``appointed``) are pinned to that engineer, with a penalty so large that the solver drops one only when it
  cannot fit at all. An order belongs to the day when its appointment does (pinned orders), else when its
  requested window overlaps the day, has passed already (overdue: the whole day) or it has no window.
  Its window is the appointment, else the requested window, clipped to the day (and to now, today).
* Engineers: active, covering one of the districts, with a shift that weekday, not on leave. The longest
  shift of the day is used (a split shift is never planned across its break). They leave from their live
  position (today, while fresh), else home, else the district's centroid; the route ends at the last visit.
  Capacity is the daily capacity less what the day already holds outside this plan: orders completed that
  day and other open orders of theirs counted that day (as dispatch.services.dispatching counts them).
* Travel: geodesic metres between all points and seconds at ``PLAN_SPEED_KMH``; service minutes per order
  type from ``PLAN_SERVICE_MINUTES``. The objective is distance plus drop penalties (no cost per engineer:
  spreading the work is fine).

Every solution is replayed by :func:`dispatch.planning.feasibility.check` before it is stored; a violation
is a bug and raises. Travel before is each engineer's route through the orders they already hold, in their
current order (appointment start, else creation); travel after is the plan's route.

Accepting assigns each visit whose engineer differs from the order's through
:func:`dispatch.services.dispatching.assign_order` (so events, SLA clocks and SMS are a dispatcher's), and
gives every planned order its ETA. An order that changed since the proposal is skipped and reported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm.exc import StaleDataError

from dispatch.actors import Actor, require
from dispatch.clock import utcnow
from dispatch.errors import Conflict, DispatchError, NotFound, ValidationError
from dispatch.extensions import db
from dispatch.models import (
    Address,
    AssignmentExclusion,
    DayPlan,
    District,
    Engineer,
    Order,
    PlanVisit,
    engineer_districts,
)
from dispatch.planning import Problem, Route, Solution, Vehicle, Visit, feasibility
from dispatch.planning.day import parse_service_minutes, travel_matrices
from dispatch.planning.model import schedule
from dispatch.services import dispatching
from dispatch.services.orders import ASSIGNED_STATUSES
from dispatch.timeutil import business_day, local_day_bounds

log = logging.getLogger("dispatch.planning")

PLANNERS = frozenset({"dispatcher", "admin"})
READ_PLANS = frozenset({"dispatcher", "admin", "manager"})
UNASSIGNED = ("new", "returned")
PINNED = ("dispatched", "taken", "appointed")
MAX_TIME_LIMIT_SECONDS = 30.0
MAX_DISTRICTS = 20
LIST_LIMIT = 50
# A drop penalty (in metres of travel) larger than any day's driving: serving an order always wins.
DROP_PENALTY = 10_000_000
PRIORITY_WEIGHT = {"low": 1, "normal": 2, "high": 4, "urgent": 8}
PINNED_WEIGHT = 1_000

REASONS = {
    "no_engineer": "没有可接此单的工程师（技能、区县、班次、休假或被排除）",
    "engineer_unavailable": "已派的工程师当日不可用（休假、无班次或已停用）",
    "window_passed": "预约时段已过或不在当日班次内",
    "does_not_fit": "在时段、班次和当日容量内排不下",
    "pinned_does_not_fit": "已派或已预约的工单在其工程师当日路线中排不下",
}


class PlanInfeasible(RuntimeError):
    """The solver returned a plan the independent checker refuses: a bug, never stored."""


@dataclass(frozen=True)
class PlanSettings:
    speed_kmh: float
    service_minutes: dict[str, int]
    time_limit_seconds: float
    position_max_age: timedelta


def plan_settings() -> PlanSettings:
    """The planning configuration (validated when the app starts: dispatch.config)."""
    cfg = current_app.config
    return PlanSettings(
        speed_kmh=float(cfg.get("PLAN_SPEED_KMH", 25.0)),
        service_minutes=parse_service_minutes(str(cfg.get("PLAN_SERVICE_MINUTES", ""))),
        time_limit_seconds=float(cfg.get("PLAN_TIME_LIMIT_SECONDS", 5.0)),
        position_max_age=dispatching.settings().position_max_age,
    )


# --- the facts ----------------------------------------------------------------------------------------


@dataclass
class _Crew:
    """One engineer as the planner sees them."""

    engineer: Engineer
    shift: tuple[int, int]
    capacity: int
    point: tuple[float, float]
    start: str  # "live", "home" or "district"
    skills: frozenset[str]
    district_ids: frozenset[int]


@dataclass
class _Job:
    order: Order
    window: tuple[int, int]
    pinned_to: int | None


@dataclass
class _Day:
    day: date
    begin: datetime
    end: datetime
    earliest: int  # seconds: now, today; 0 for a later day
    horizon: int
    crews: list[_Crew] = field(default_factory=list)
    jobs: list[_Job] = field(default_factory=list)
    unplanned: list[dict[str, Any]] = field(default_factory=list)
    considered: int = 0  # the open orders of the day, planned or not

    def seconds(self, when: datetime) -> int:
        return int((when - self.begin).total_seconds())

    def at(self, seconds: int) -> datetime:
        return self.begin + timedelta(seconds=seconds)

    def drop(self, order: Order, reason: str) -> None:
        self.unplanned.append(
            {
                "order_id": order.id,
                "external_id": order.external_id,
                "reason": reason,
                "message": REASONS[reason],
            }
        )


def _clock_seconds(value: time) -> int:
    return value.hour * 3600 + value.minute * 60 + value.second


def _order_point(order: Order) -> tuple[float, float]:
    address = order.address
    if address.lat is not None and address.lng is not None:
        return address.lat, address.lng
    assert address.district is not None  # the plan's orders are read by district
    return address.district.lat, address.district.lng


def _crews(
    day: _Day, district_ids: Sequence[int], districts: dict[int, District], now: datetime
) -> list[_Crew]:
    cfg = plan_settings()
    covering = sa.select(engineer_districts.c.engineer_id).where(
        engineer_districts.c.district_id.in_(district_ids)
    )
    engineers = db.session.scalars(
        sa.select(Engineer).where(Engineer.active.is_(True), Engineer.id.in_(covering)).order_by(Engineer.id)
    ).all()
    crews = []
    for engineer in engineers:
        if any(v.start_date <= day.day <= v.end_date for v in engineer.leaves):
            continue
        shifts = [
            (_clock_seconds(s.start_time), _clock_seconds(s.end_time))
            for s in engineer.shifts
            if s.weekday == day.day.isoweekday()
        ]
        if not shifts:
            continue
        opens, closes = max(shifts, key=lambda s: s[1] - s[0])
        opens = max(opens, day.earliest)
        if opens >= closes:  # today's shift is over
            continue
        live = (
            day.earliest > 0
            and engineer.position_lat is not None
            and engineer.position_lng is not None
            and engineer.position_at is not None
            and engineer.position_at >= now - cfg.position_max_age
        )
        if live:
            point, start = (engineer.position_lat, engineer.position_lng), "live"
        elif engineer.home_lat is not None and engineer.home_lng is not None:
            point, start = (engineer.home_lat, engineer.home_lng), "home"
        else:
            first = next(d for d in engineer.districts if d.id in districts)
            point, start = (first.lat, first.lng), "district"
        crews.append(
            _Crew(
                engineer=engineer,
                shift=(opens, closes),
                capacity=engineer.daily_capacity,
                point=point,  # type: ignore[arg-type]
                start=start,
                skills=frozenset(engineer.skills),
                district_ids=frozenset(d.id for d in engineer.districts),
            )
        )
    return crews


_PASSED = (1, 0)  # an appointment on the day that is already over (or outside what is left of it)


def _window(day: _Day, order: Order) -> tuple[int, int] | None:
    """The order's window on the day in seconds; None when it belongs to another day."""
    whole = (day.earliest, day.horizon)
    if order.status in PINNED and order.appointment_start is not None and order.appointment_end is not None:
        if not (order.appointment_start < day.end and order.appointment_end > day.begin):
            return None
        start, end = order.appointment_start, order.appointment_end
        opens, closes = max(day.seconds(start), day.earliest), min(day.seconds(end), day.horizon)
        return (opens, closes) if opens <= closes else _PASSED
    if order.requested_start is None:
        return whole
    start = order.requested_start
    end = order.requested_end or start
    if start >= day.end:
        return None
    opens, closes = max(day.seconds(start), day.earliest), min(day.seconds(end), day.horizon)
    return (opens, closes) if opens <= closes else whole  # overdue: any time that day


def _capacities(day: _Day, crews: list[_Crew], planned: set[int]) -> None:
    """Each engineer's capacity less what the day already holds outside the plan."""
    if not crews:
        return
    by_id = {c.engineer.id: c for c in crews}
    counted = sa.func.coalesce(Order.appointment_start, Order.requested_start, Order.updated_at)
    rows = db.session.execute(
        sa.select(Order.id, Order.engineer_id).where(
            Order.engineer_id.in_(list(by_id)),
            sa.or_(
                sa.and_(
                    Order.status == "completed", Order.completed_at >= day.begin, Order.completed_at < day.end
                ),
                sa.and_(Order.status.in_(ASSIGNED_STATUSES), counted >= day.begin, counted < day.end),
            ),
        )
    ).all()
    for order_id, engineer_id in rows:
        if order_id not in planned and engineer_id is not None:
            by_id[engineer_id].capacity -= 1
    for crew in crews:
        crew.capacity = max(0, crew.capacity)


def _read_day(day: _Day, district_ids: Sequence[int], districts: dict[int, District], now: datetime) -> None:
    day.crews = _crews(day, district_ids, districts, now)
    crew_ids = {c.engineer.id for c in day.crews}
    candidates = db.session.scalars(
        sa.select(Order)
        .join(Address, Order.address_id == Address.id)
        .where(Address.district_id.in_(district_ids), Order.status.in_(UNASSIGNED + PINNED))
        .order_by(Order.id)
    ).all()
    for order in candidates:
        window = _window(day, order)
        if window is None:
            continue
        day.considered += 1
        pinned_to = order.engineer_id if order.status in PINNED else None
        if pinned_to is not None and pinned_to not in crew_ids:
            day.drop(order, "engineer_unavailable")
        elif window == _PASSED:
            day.drop(order, "window_passed")
        else:
            day.jobs.append(_Job(order, window, pinned_to))
    _capacities(day, day.crews, {j.order.id for j in day.jobs})


# --- the problem --------------------------------------------------------------------------------------


@dataclass
class _Built:
    problem: Problem
    jobs: dict[int, _Job]
    crews: dict[int, _Crew]


def _build(day: _Day, cfg: PlanSettings) -> _Built:
    excluded: dict[int, set[int]] = {}
    unassigned = [j.order.id for j in day.jobs if j.pinned_to is None]
    if unassigned:
        for order_id, engineer_id in db.session.execute(
            sa.select(AssignmentExclusion.order_id, AssignmentExclusion.engineer_id).where(
                AssignmentExclusion.order_id.in_(unassigned)
            )
        ):
            excluded.setdefault(order_id, set()).add(engineer_id)
    points = [c.point for c in day.crews]
    visits, jobs = [], {}
    for job in day.jobs:
        order = job.order
        service = cfg.service_minutes.get(order.order_type, 60) * 60
        if job.pinned_to is not None:
            allowed = None
            penalty = DROP_PENALTY * PINNED_WEIGHT
        else:
            allowed = frozenset(
                c.engineer.id
                for c in day.crews
                if order.order_type in c.skills
                and order.address.district_id in c.district_ids
                and c.engineer.id not in excluded.get(order.id, set())
            )
            if not allowed:
                day.drop(order, "no_engineer")
                continue
            penalty = DROP_PENALTY * PRIORITY_WEIGHT.get(order.priority, 2)
        points.append(_order_point(order))
        visits.append(
            Visit(
                id=order.id,
                location=len(points) - 1,
                window=job.window,
                service=service,
                demand=1,
                allowed_vehicles=allowed,
                drop_penalty=penalty,
                pinned_vehicle=job.pinned_to,
            )
        )
        jobs[order.id] = job
    seconds, metres = travel_matrices(points, cfg.speed_kmh)
    vehicles = tuple(
        Vehicle(id=c.engineer.id, start=k, end=None, shift=c.shift, capacity=c.capacity)
        for k, c in enumerate(day.crews)
    )
    problem = Problem(tuple(visits), vehicles, seconds, metres)
    return _Built(problem, jobs, {c.engineer.id: c for c in day.crews})


def _solve(problem: Problem, time_limit_seconds: float) -> Solution:
    if not problem.visits or not problem.vehicles:
        routes = tuple(schedule(problem, v, []) for v in problem.vehicles)
        return Solution(routes, tuple(v.id for v in problem.visits), 0, 0)
    # OR-Tools is imported here, by the process that plans: importing it with the app would add about 20 MB
    # to every web worker (QUALITY.md's memory bar), most of which never plan a day.
    from dispatch.planning import solver

    return solver.solve(problem, time_limit_seconds, vehicle_fixed_cost=0)


def _travel_before(built: _Built) -> dict[int, int]:
    """Each engineer's route through the plan's orders they already hold, in their current order."""
    problem = built.problem
    held: dict[int, list[Visit]] = {}
    for visit in problem.visits:
        if visit.pinned_vehicle is not None:
            held.setdefault(int(visit.pinned_vehicle), []).append(visit)
    before = {}
    for k, vehicle in enumerate(problem.vehicles):

        def current(v: Visit) -> tuple[datetime, int]:
            order = built.jobs[int(v.id)].order
            return order.appointment_start or order.created_at, order.id

        loc, total = k, 0
        for visit in sorted(held.get(int(vehicle.id), []), key=current):
            total += problem.distance[loc][visit.location]
            loc = visit.location
        before[int(vehicle.id)] = total
    return before


# --- use cases ----------------------------------------------------------------------------------------


def _check_input(
    day: date, district_ids: Iterable[int], time_limit_seconds: float | None
) -> tuple[list[int], float]:
    limit = plan_settings().time_limit_seconds if time_limit_seconds is None else float(time_limit_seconds)
    if not (0 < limit <= MAX_TIME_LIMIT_SECONDS) or math.isnan(limit):
        raise ValidationError(
            errors={"time_limit_seconds": [f"Must be above 0 and at most {MAX_TIME_LIMIT_SECONDS:g}."]}
        )
    ids = sorted(set(district_ids))
    if not ids:
        raise ValidationError(errors={"district_ids": ["Choose at least one district."]})
    if len(ids) > MAX_DISTRICTS:
        raise ValidationError(errors={"district_ids": [f"At most {MAX_DISTRICTS} districts per plan."]})
    if day < business_day(utcnow()):
        raise ValidationError(errors={"day": ["The day has passed."]})
    return ids, limit


def propose_plan(
    day: date, district_ids: Iterable[int], *, actor: Actor, time_limit_seconds: float | None = None
) -> DayPlan:
    """Plan a day for some districts: which engineer visits which open order when; stored as proposed."""
    require(actor, PLANNERS, "plan the day")
    ids, limit = _check_input(day, district_ids, time_limit_seconds)
    districts = {d.id: d for d in db.session.scalars(sa.select(District).where(District.id.in_(ids)))}
    unknown = [i for i in ids if i not in districts]
    if unknown:
        raise ValidationError(errors={"district_ids": [f"Unknown district(s): {unknown}."]})
    cfg = plan_settings()
    now = utcnow()
    begin, end = local_day_bounds(day)
    earliest = max(0, math.ceil((now - begin).total_seconds()))
    facts = _Day(day, begin, end, earliest, int((end - begin).total_seconds()))
    _read_day(facts, ids, districts, now)
    built = _build(facts, cfg)
    solution = _solve(built.problem, limit)
    violations = feasibility.check(built.problem, solution)
    if violations:
        log.error("the planner proposed an infeasible plan: %s", violations)
        raise PlanInfeasible("; ".join(violations))
    before = _travel_before(built)
    for order_id in solution.dropped:
        job = built.jobs[int(order_id)]
        facts.drop(job.order, "pinned_does_not_fit" if job.pinned_to is not None else "does_not_fit")
    routes = {int(r.vehicle_id): r for r in solution.routes}
    plan = DayPlan(
        day=day,
        district_ids=ids,
        status="proposed",
        proposed_by=actor.name,
        proposed_by_id=actor.id if actor.kind == "user" else None,
        proposed_at=now,
        speed_kmh=cfg.speed_kmh,
        time_limit_seconds=limit,
        solve_seconds=round(float(solution.stats.get("seconds", 0.0)), 3),
        travel_before_m=sum(before.values()),
        travel_after_m=solution.distance,
        orders_count=facts.considered,
        planned_count=sum(len(r.stops) for r in solution.routes),
        engineers=[
            {
                "engineer_id": c.engineer.id,
                "start": c.start,
                "shift": [c.shift[0], c.shift[1]],
                "capacity": c.capacity,
                "travel_before_m": before.get(c.engineer.id, 0),
                "travel_after_m": routes[c.engineer.id].distance if c.engineer.id in routes else 0,
            }
            for c in facts.crews
        ],
        unplanned=sorted(facts.unplanned, key=lambda u: u["order_id"]),
    )
    for route in solution.routes:
        plan.visits.extend(_visits(facts, built, route))
    db.session.add(plan)
    db.session.commit()
    log.info(
        "day plan %s for %s: %d of %d orders planned in %.1fs",
        plan.id,
        day,
        plan.planned_count,
        plan.orders_count,
        plan.solve_seconds,
    )
    return plan


def _visits(facts: _Day, built: _Built, route: Route) -> list[PlanVisit]:
    problem = built.problem
    loc = next(k for k, v in enumerate(problem.vehicles) if v.id == route.vehicle_id)
    rows = []
    for sequence, stop in enumerate(route.stops, 1):
        visit = problem.visit(stop.visit_id)
        order = built.jobs[int(stop.visit_id)].order
        rows.append(
            PlanVisit(
                engineer_id=int(route.vehicle_id),
                order_id=order.id,
                sequence=sequence,
                eta=facts.at(stop.start),
                arrival=facts.at(stop.arrival),
                window_start=facts.at(visit.window[0]),
                window_end=facts.at(visit.window[1]),
                leg_m=problem.distance[loc][visit.location],
                pinned=visit.pinned_vehicle is not None,
                engineer_before_id=order.engineer_id,
                order_status=order.status,
                order_version=order.version,
            )
        )
        loc = visit.location
    return rows


def _plan(plan_id: int, *, for_update: bool = False) -> DayPlan:
    query = sa.select(DayPlan).where(DayPlan.id == plan_id)
    if for_update:
        query = query.with_for_update()
    plan = db.session.scalar(query) if 0 < plan_id <= 2**31 - 1 else None
    if plan is None:
        raise NotFound(f"Plan {plan_id} not found")
    return plan


def get_plan(plan_id: int, *, actor: Actor) -> DayPlan:
    """One day plan with its visits."""
    require(actor, READ_PLANS, "read day plans")
    return _plan(plan_id)


def list_plans(day: date | None = None, *, actor: Actor) -> list[DayPlan]:
    """The plans of a day (or the latest ones), newest first."""
    require(actor, READ_PLANS, "read day plans")
    query = sa.select(DayPlan).order_by(DayPlan.id.desc()).limit(LIST_LIMIT)
    if day is not None:
        query = query.where(DayPlan.day == day)
    return list(db.session.scalars(query))


def _decide(plan_id: int, status: str, actor: Actor) -> DayPlan:
    """Move a proposed plan to ``status``, once: of two concurrent decisions only one wins."""
    plan = _plan(plan_id)
    if plan.status != "proposed":
        raise Conflict(f"The plan is already {plan.status}", status=plan.status)
    now = utcnow()
    claimed: sa.CursorResult[Any] = db.session.execute(  # type: ignore[assignment]
        sa.update(DayPlan)
        .where(DayPlan.id == plan_id, DayPlan.status == "proposed")
        .values(status=status, decided_by=actor.name, decided_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        db.session.rollback()
        plan = _plan(plan_id)
        raise Conflict(f"The plan is already {plan.status}", status=plan.status)
    db.session.commit()
    return _plan(plan_id)


def discard_plan(plan_id: int, *, actor: Actor) -> DayPlan:
    """Discard a proposed plan: nothing about the orders changes."""
    require(actor, PLANNERS, "discard day plans")
    return _decide(plan_id, "discarded", actor)


@dataclass(frozen=True)
class _Planned:
    order_id: int
    engineer_id: int
    eta: datetime
    status: str
    engineer_before_id: int | None
    version: int


def accept_plan(plan_id: int, *, actor: Actor) -> tuple[DayPlan, dict[str, list[dict[str, Any]]]]:
    """Accept a proposed plan: assign its orders through the workflow and give each its ETA.

    The plan is claimed first (a second accept is a 409), then each order is assigned in its own
    transaction, as a dispatcher would one after the other; an order that moved on since the proposal
    (status, engineer or version) is skipped and reported, never forced. The result is stored last: an
    accepted plan without one was interrupted (its process died), and accepting it again finishes the job
    (orders already assigned as planned come out unchanged).
    """
    require(actor, PLANNERS, "accept day plans")
    plan = _plan(plan_id)
    if plan.status != "accepted" or plan.result is not None:
        if plan.status == "proposed" and plan.day < business_day(utcnow()):
            raise Conflict("The plan's day has passed; plan again", status=plan.status)
        plan = _decide(plan_id, "accepted", actor)
    planned = [
        _Planned(v.order_id, v.engineer_id, v.eta, v.order_status, v.engineer_before_id, v.order_version)
        for v in plan.visits
    ]
    result: dict[str, list[dict[str, Any]]] = {"assigned": [], "unchanged": [], "skipped": []}
    for p in planned:
        outcome, entry = _accept_visit(plan_id, p, actor)
        result[outcome].append(entry)
    plan = _plan(plan_id)
    plan.result = result
    db.session.commit()
    return plan, result


def _accept_visit(plan_id: int, p: _Planned, actor: Actor) -> tuple[str, dict[str, Any]]:
    order = db.session.get(Order, p.order_id, populate_existing=True)
    entry: dict[str, Any] = {"order_id": p.order_id, "engineer_id": p.engineer_id, "eta": p.eta.isoformat()}
    if order is None:
        return "skipped", {**entry, "reason": "changed", "message": "工单不存在"}
    entry["external_id"] = order.external_id
    if order.engineer_id == p.engineer_id and order.status in ASSIGNED_STATUSES:
        if order.planned_eta != p.eta:
            order.planned_eta = p.eta
            try:
                db.session.commit()
            except StaleDataError:
                db.session.rollback()
                return "skipped", {**entry, "reason": "changed", "message": "工单刚被他人修改"}
        return "unchanged", entry
    if (order.status, order.engineer_id, order.version) != (p.status, p.engineer_before_id, p.version):
        db.session.rollback()
        return "skipped", {**entry, "reason": "changed", "message": "工单在计划生成后已变更，未按计划派单"}
    try:
        # expect_status: an accept finishing an interrupted one may race it for the same order.
        _, warnings = dispatching.assign_order(
            p.order_id, p.engineer_id, actor=actor, expect_status=p.status, plan_id=plan_id, planned_eta=p.eta
        )
    except DispatchError as exc:
        db.session.rollback()
        return "skipped", {**entry, "reason": "refused", "message": exc.message}
    return "assigned", {**entry, "warnings": [w["code"] for w in warnings]}


# --- what the dispatcher sees ------------------------------------------------------------------------


def describe(plan: DayPlan) -> dict[str, Any]:
    """The plan per engineer (visits in order, travel before and after), its unplanned orders and totals."""
    order_ids = {v.order_id for v in plan.visits} | {u["order_id"] for u in plan.unplanned}
    orders = (
        {o.id: o for o in db.session.scalars(sa.select(Order).where(Order.id.in_(order_ids))).unique()}
        if order_ids
        else {}
    )
    engineer_ids = {e["engineer_id"] for e in plan.engineers} | {v.engineer_id for v in plan.visits}
    engineer_ids |= {v.engineer_before_id for v in plan.visits if v.engineer_before_id is not None}
    engineers = (
        {e.id: e for e in db.session.scalars(sa.select(Engineer).where(Engineer.id.in_(engineer_ids)))}
        if engineer_ids
        else {}
    )
    districts = list(db.session.scalars(sa.select(District).where(District.id.in_(plan.district_ids))))
    begin, day_end = local_day_bounds(plan.day)
    by_engineer: dict[int, list[PlanVisit]] = {}
    for visit in sorted(plan.visits, key=lambda v: (v.engineer_id, v.sequence)):
        by_engineer.setdefault(visit.engineer_id, []).append(visit)

    def ref(engineer_id: int | None) -> dict[str, Any] | None:
        engineer = engineers.get(engineer_id) if engineer_id is not None else None
        return None if engineer is None else {"id": engineer.id, "code": engineer.code, "name": engineer.name}

    routes = []
    for info in plan.engineers:
        visits = by_engineer.get(info["engineer_id"], [])
        routes.append(
            {
                "engineer": ref(info["engineer_id"]),
                "start": info["start"],
                "shift": {
                    "start": begin + timedelta(seconds=info["shift"][0]),
                    "end": begin + timedelta(seconds=info["shift"][1]),
                },
                "capacity": info["capacity"],
                "travel_before_m": info["travel_before_m"],
                "travel_after_m": info["travel_after_m"],
                "visits": [_visit_view(v, orders.get(v.order_id), ref, day_end) for v in visits],
            }
        )
    return {
        "plan": plan,
        "districts": [{"id": d.id, "name": d.name} for d in districts],
        "routes": routes,
        "unplanned": [
            {**u, "order_type": o.order_type if o else None, "address": o.address.text if o else None}
            for u in plan.unplanned
            for o in [orders.get(u["order_id"])]
        ],
    }


def _visit_view(visit: PlanVisit, order: Order | None, ref: Any, day_end: datetime) -> dict[str, Any]:
    return {
        "sequence": visit.sequence,
        "order_id": visit.order_id,
        "external_id": order.external_id if order else None,
        "order_type": order.order_type if order else None,
        "status": order.status if order else None,
        "address": order.address.text if order else None,
        "window": {"start": visit.window_start, "end": visit.window_end},
        "open_end": visit.window_end >= day_end,  # any time until the day ends (shown as 24:00)
        "eta": visit.eta,
        "arrival": visit.arrival,
        "leg_m": visit.leg_m,
        "pinned": visit.pinned,
        "engineer_before": ref(visit.engineer_before_id),
    }


def districts(*, actor: Actor) -> list[District]:
    """The districts a plan may cover (for the console's form)."""
    require(actor, PLANNERS, "plan the day")
    return list(db.session.scalars(sa.select(District).order_by(District.id)))
