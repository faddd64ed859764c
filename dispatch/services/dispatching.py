"""Dispatching: ranked candidates for an order, manual and automatic assignment, re-dispatch, live positions.

How a candidate list is made: the engineers who are active, have the order type's skill and cover the
order's district are read with a few column queries (no ORM objects: a city has 2 000 engineers); the
remaining hard rules (shift, leave, capacity that day, exclusions) are checked per engineer by
:func:`dispatch.assignment.rules.violations`, the same function that produces a manual assignment's
warnings; :func:`dispatch.assignment.scoring.rank` scores the rest. The finalists' distances are then
recomputed with geopy's geodesic.

Capacity under concurrency: every assignment locks the chosen engineer's row (``FOR NO KEY UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers) and counts their load after the lock, so two
orders racing for an engineer's last slot are decided one after the other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from flask import current_app

from dispatch import workflow
from dispatch.actors import Actor, require
from dispatch.assignment import rules, scoring
from dispatch.clock import utcnow
from dispatch.errors import (
    Conflict,
    DispatchError,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from dispatch.extensions import db
from dispatch.geo.distance import geodesic_km
from dispatch.models import (
    AssignmentExclusion,
    Engineer,
    EngineerLeave,
    EngineerShift,
    EngineerSkill,
    Order,
    SlaClock,
    engineer_districts,
)
from dispatch.services import orders
from dispatch.timeutil import local_day_bounds

log = logging.getLogger("dispatch.dispatching")

AUTO_ACTOR = Actor.system(name="auto-dispatch", source="scheduler")
READ_CANDIDATES = frozenset({"dispatcher", "admin", "system"})
MAX_CANDIDATES = 50
DECISION_CANDIDATES = 10  # how many ranked candidates an assignment event records


@dataclass(frozen=True)
class Settings:
    weights: scoring.Weights
    max_km: float
    position_max_age: timedelta
    urgency_horizon: timedelta
    retry_after: timedelta
    auto_dispatch: bool
    redispatch: frozenset[str]


def settings() -> Settings:
    """The dispatching configuration (validated when the app starts: dispatch.config)."""
    cfg = current_app.config
    return Settings(
        weights=scoring.Weights.parse(cfg.get("ASSIGNMENT_WEIGHTS", "")),
        max_km=float(cfg.get("ASSIGNMENT_MAX_KM", 30.0)),
        position_max_age=timedelta(seconds=int(cfg.get("POSITION_MAX_AGE_SECONDS", 7200))),
        urgency_horizon=timedelta(seconds=int(cfg.get("URGENCY_HORIZON_SECONDS", 3600))),
        retry_after=timedelta(seconds=int(cfg.get("AUTO_DISPATCH_RETRY_SECONDS", 60))),
        auto_dispatch=bool(cfg.get("AUTO_DISPATCH", False)),
        redispatch=frozenset(cfg.get("AUTO_REDISPATCH", ())),
    )


@dataclass(frozen=True)
class Candidate:
    engineer_id: int
    code: str
    name: str
    score: float | None  # None: rejected by a hard rule
    distance_km: float | None
    position: str | None  # "live", "home" or None (unknown)
    reasons: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def engineer(self) -> dict[str, Any]:
        return {"id": self.engineer_id, "code": self.code, "name": self.name}

    def summary(self) -> dict[str, Any]:
        """What an assignment event records of a candidate."""
        return {
            "engineer_id": self.engineer_id,
            "code": self.code,
            "score": self.score,
            "distance_km": self.distance_km,
            "violations": self.violations,
        }


# --- the facts ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Facts:
    """One engineer's columns, as read for one order (a :class:`dispatch.assignment.rules.Engineer`)."""

    id: int
    code: str
    name: str
    active: bool
    daily_capacity: int
    team_id: int | None
    lat: float | None
    lng: float | None
    position: str | None
    skills: set[str] = field(default_factory=set)
    district_ids: set[int] = field(default_factory=set)
    shifts: list[rules.Shift] = field(default_factory=list)
    leaves: list[tuple[date, date]] = field(default_factory=list)
    load_that_day: int = 0
    open_orders: int = 0
    urgent: int = 0
    excluded: bool = False


def _order_point(order: Order) -> tuple[float, float] | None:
    address = order.address
    if address.lat is not None and address.lng is not None:
        return address.lat, address.lng
    if address.district is not None:
        return address.district.lat, address.district.lng
    return None


def _prefilter(order: Order) -> sa.ColumnElement[bool]:
    """Active, with the order type's skill, covering the order's district (the cheap rules, in SQL)."""
    skilled = sa.select(EngineerSkill.engineer_id).where(
        EngineerSkill.engineer_id == Engineer.id, EngineerSkill.order_type == order.order_type
    )
    covers = sa.select(engineer_districts.c.engineer_id).where(
        engineer_districts.c.engineer_id == Engineer.id,
        engineer_districts.c.district_id == order.address.district_id,
    )
    return sa.and_(Engineer.active.is_(True), skilled.exists(), covers.exists())


def _read_facts(
    order: Order,
    now: datetime,
    cfg: Settings,
    *,
    engineer_ids: Iterable[int] | None = None,
    prefilter: bool = True,
) -> tuple[list[_Facts], rules.OrderFacts]:
    """The facts of the engineers considered for ``order``: the given ones, else (``prefilter``) those
    :func:`_prefilter` lets through, else everyone."""
    order_facts = orders.order_facts(order)
    if engineer_ids is not None:
        chosen: sa.ColumnElement[bool] = Engineer.id.in_(list(engineer_ids))
    else:
        chosen = _prefilter(order) if prefilter else sa.true()
    prefiltered = engineer_ids is None and prefilter
    fresh = now - cfg.position_max_age
    # Core reads on the session's connection: plain rows, none of the ORM's per-row loading machinery (a
    # fifth of the time for 2 000 engineers); the flush makes this transaction's own changes visible.
    db.session.flush()
    conn = db.session.connection()
    rows = conn.execute(
        sa.select(
            Engineer.id,
            Engineer.code,
            Engineer.name,
            Engineer.active,
            Engineer.daily_capacity,
            Engineer.team_id,
            Engineer.home_lat,
            Engineer.home_lng,
            Engineer.position_lat,
            Engineer.position_lng,
            # Compared in SQL: converting 2 000 timestamps to aware datetimes was a fifth of the time.
            sa.and_(Engineer.position_at >= fresh, Engineer.position_lat.is_not(None)).label("live"),
        )
        .where(chosen)
        .order_by(Engineer.id)
    ).all()
    facts: dict[int, _Facts] = {}
    for r in rows:
        lat, lng, source = (
            (r.position_lat, r.position_lng, "live")
            if r.live
            else (r.home_lat, r.home_lng, "home" if r.home_lat is not None else None)
        )
        f = _Facts(r.id, r.code, r.name, r.active, r.daily_capacity, r.team_id, lat, lng, source)
        if prefiltered:  # the SQL checked these already
            f.skills.add(order.order_type)
            f.district_ids.add(order.address.district_id)  # type: ignore[arg-type]
        facts[r.id] = f
    if not facts:
        return [], order_facts
    # The engineers' other rows, by the same condition (a subquery: faster than an array of 2 000 ids).
    ids = sa.select(Engineer.id).where(chosen).scalar_subquery()
    day = order_facts.window_start.date()
    if not prefiltered:
        for engineer_id, order_type in conn.execute(
            sa.select(EngineerSkill.engineer_id, EngineerSkill.order_type).where(
                EngineerSkill.engineer_id.in_(ids), EngineerSkill.order_type == order.order_type
            )
        ):
            facts[engineer_id].skills.add(order_type)
        if order.address.district_id is not None:
            for engineer_id, district_id in conn.execute(
                sa.select(engineer_districts.c.engineer_id, engineer_districts.c.district_id).where(
                    engineer_districts.c.engineer_id.in_(ids),
                    engineer_districts.c.district_id == order.address.district_id,
                )
            ):
                facts[engineer_id].district_ids.add(district_id)
    for engineer_id, weekday, shift_start, shift_end in conn.execute(
        sa.select(
            EngineerShift.engineer_id, EngineerShift.weekday, EngineerShift.start_time, EngineerShift.end_time
        ).where(EngineerShift.engineer_id.in_(ids), EngineerShift.weekday == day.isoweekday())
    ):
        facts[engineer_id].shifts.append(rules.Shift(weekday, shift_start, shift_end))
    for engineer_id, first, last in conn.execute(
        sa.select(EngineerLeave.engineer_id, EngineerLeave.start_date, EngineerLeave.end_date).where(
            EngineerLeave.engineer_id.in_(ids),
            EngineerLeave.start_date <= day,
            EngineerLeave.end_date >= day,
        )
    ):
        facts[engineer_id].leaves.append((first, last))
    begin, end = local_day_bounds(day)
    planned = sa.func.coalesce(Order.appointment_start, Order.requested_start, Order.updated_at)
    assigned = sa.and_(
        Order.engineer_id.in_(ids), Order.id != order.id, Order.status.in_(orders.ASSIGNED_STATUSES)
    )
    for assignee, total, that_day in conn.execute(
        sa.select(
            Order.engineer_id,
            sa.func.count(),
            sa.func.count().filter(sa.and_(planned >= begin, planned < end)),
        )
        .where(assigned)
        .group_by(Order.engineer_id)
    ):
        assert assignee is not None  # engineer_id IN (...) holds
        facts[assignee].open_orders, facts[assignee].load_that_day = total, that_day
    urgent = sa.or_(SlaClock.warn_at <= now, SlaClock.due_at <= now + cfg.urgency_horizon)
    for assignee, count in conn.execute(
        sa.select(Order.engineer_id, sa.func.count(sa.distinct(Order.id)))
        .join(SlaClock, SlaClock.order_id == Order.id)
        .where(assigned, SlaClock.status == "running", urgent)
        .group_by(Order.engineer_id)
    ):
        assert assignee is not None
        facts[assignee].urgent = count
    for engineer_id in conn.scalars(
        sa.select(AssignmentExclusion.engineer_id).where(AssignmentExclusion.order_id == order.id)
    ):
        if engineer_id in facts:
            facts[engineer_id].excluded = True
    return list(facts.values()), order_facts


def _pool(facts: list[_Facts], order_facts: rules.OrderFacts) -> scoring.Pool:
    teams = {
        team_id: i for i, team_id in enumerate(sorted({f.team_id for f in facts if f.team_id is not None}))
    }
    broken = np.zeros((len(facts), len(scoring.HARD_FILTERS)), dtype=bool)
    column = {code: j for j, code in enumerate(scoring.HARD_FILTERS)}
    for i, f in enumerate(facts):
        for code in rules.violations(order_facts, f):
            broken[i, column[code]] = True
    nan = float("nan")
    return scoring.Pool(
        ids=np.array([f.id for f in facts], dtype=np.int64),
        broken=broken,
        lat=np.array([nan if f.lat is None else f.lat for f in facts], dtype=np.float64),
        lng=np.array([nan if f.lng is None else f.lng for f in facts], dtype=np.float64),
        load=np.array([f.load_that_day for f in facts], dtype=np.int64),
        capacity=np.array([f.daily_capacity for f in facts], dtype=np.int64),
        urgent=np.array([f.urgent for f in facts], dtype=np.int64),
        team=np.array(
            [teams.get(f.team_id, -1) if f.team_id is not None else -1 for f in facts], dtype=np.int64
        ),
        open_orders=np.array([f.open_orders for f in facts], dtype=np.int64),
    )


def _rank(
    order: Order, now: datetime, cfg: Settings, *, limit: int, include_rejected: bool = False
) -> list[Candidate]:
    """The order's qualified engineers, best first (then, if asked, everyone else with the rules broken)."""
    facts, order_facts = _read_facts(order, now, cfg, prefilter=not include_rejected)
    point = _order_point(order)
    pool = _pool(facts, order_facts)
    lat, lng = point if point is not None else (float("nan"), float("nan"))
    ranked = scoring.rank(pool, lat, lng, cfg.weights, max_km=cfg.max_km, limit=limit)
    result = []
    for r in ranked:
        f = facts[r.index]
        km = None
        if point is not None and f.lat is not None and f.lng is not None:
            km = round(geodesic_km(point, (f.lat, f.lng)), 3)  # the finalists only: ~0.2 ms each
        reasons = dict(r.reasons)
        reasons["distance"] = {**reasons["distance"], "km": km, "position": f.position}
        result.append(Candidate(f.id, f.code, f.name, r.score, km, f.position, reasons, []))
    if include_rejected:
        chosen = {c.engineer_id for c in result}
        for i, f in enumerate(facts):
            broken = scoring.violations(pool, i)
            if f.id not in chosen and broken:
                result.append(Candidate(f.id, f.code, f.name, None, None, f.position, {}, broken))
    return result


# --- use cases ----------------------------------------------------------------------------------------


def candidates(
    order_id: int, *, actor: Actor, limit: int = DECISION_CANDIDATES, include_rejected: bool = False
) -> list[Candidate]:
    """The engineers who may take the order, ranked and explained; optionally also those a rule excludes."""
    require(actor, READ_CANDIDATES, "see assignment candidates")
    if not 1 <= limit <= MAX_CANDIDATES:
        raise ValidationError(errors={"limit": [f"Must be between 1 and {MAX_CANDIDATES}."]})
    order = orders.get_order(order_id, actor=actor, action="assign")
    return _rank(order, utcnow(), settings(), limit=limit, include_rejected=include_rejected)


def _lock_engineer(engineer_id: int) -> None:
    """Serialise assignments to one engineer until commit (KEY SHARE locks of new rows still pass)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(
            sa.select(Engineer.id).where(Engineer.id == engineer_id).with_for_update(key_share=True)
        )


def _checked(order: Order, engineer_id: int, now: datetime, cfg: Settings) -> tuple[_Facts, list[str]] | None:
    """Lock the engineer, then read their facts afresh: what rules would this assignment break now?"""
    _lock_engineer(engineer_id)
    facts, order_facts = _read_facts(order, now, cfg, engineer_ids=[engineer_id])
    if not facts:
        return None
    return facts[0], rules.violations(order_facts, facts[0])


def assign_order(
    order_id: int,
    engineer_id: int | None = None,
    *,
    auto: bool = False,
    actor: Actor,
    exclude_current: str | None = None,
    expect_status: str | None = None,
    plan_id: int | None = None,
    planned_eta: datetime | None = None,
) -> tuple[Order, list[dict[str, str]]]:
    """Assign or reassign an order, by a dispatcher's choice or automatically, and record why.

    A manual choice is honoured whatever rules it breaks (each becomes a warning), except an inactive
    engineer (409). ``auto`` takes the best candidate that still passes every rule once locked, or answers
    409 when nobody qualifies. ``exclude_current`` (a re-dispatch after a take breach) first bars the order's
    current engineer from it. ``expect_status`` (the scheduler's sweeps) re-checks, under the order's lock,
    that the order is still where the sweep found it: a concurrent sweep may have dispatched it already.
    ``plan_id`` / ``planned_eta``: an accepted day plan's assignment (dispatch.services.planning), recorded
    in the event and on the order in the same transaction.
    """
    if auto == (engineer_id is not None):
        raise ValidationError(errors={"engineer_id": ["Give either engineer_id or auto: true."]})
    order = orders.get_order(order_id, actor=actor, for_update=True, action="assign")  # reassign: a subset
    if expect_status is not None and order.status != expect_status:
        raise InvalidTransition("auto-dispatch", order.status)
    action = "assign" if order.status in ("new", "returned") else "reassign"
    workflow.check(order, action, actor)  # role and status come before anything about the engineer
    now, cfg = utcnow(), settings()
    if exclude_current == "take_breach" and not _take_breached(order):
        raise InvalidTransition(
            "re-dispatch", order.status, "The current engineer's take clock has not breached"
        )
    previous = order.engineer_id
    if exclude_current and previous is not None:
        _exclude(order, previous, exclude_current, now)
    ranking = _rank(order, now, cfg, limit=DECISION_CANDIDATES)
    if auto:
        chosen, broken = _auto_choice(order, ranking, now, cfg)
    else:
        assert engineer_id is not None
        chosen, broken = _manual_choice(order, engineer_id, now, cfg)
    warnings = [{"code": code, "message": rules.MESSAGES[code]} for code in broken]
    placed = next((i for i, c in enumerate(ranking) if c.engineer_id == chosen.id), None)
    with orders.committing():
        workflow.apply(
            order,
            action,
            actor,
            now=now,
            params={"engineer_id": chosen.id},
            rules=orders.workflow_rules(),
            event_payload={
                "engineer_id": chosen.id,
                "engineer_code": chosen.code,
                "previous_engineer_id": previous,
                "mode": "auto" if auto else "manual",
                "warnings": broken,
                "rank": None if placed is None else placed + 1,
                "score": None if placed is None else ranking[placed].score,
                "weights": cfg.weights.as_dict(),
                "candidates": [c.summary() for c in ranking],
                **({"redispatch": exclude_current} if exclude_current else {}),
                **({"plan_id": plan_id} if plan_id is not None else {}),
            },
        )
        order.auto_dispatch_after = None
        if planned_eta is not None:
            order.planned_eta = planned_eta
    return order, warnings


def _manual_choice(order: Order, engineer_id: int, now: datetime, cfg: Settings) -> tuple[_Facts, list[str]]:
    checked = _checked(order, engineer_id, now, cfg)
    if checked is None:
        raise ValidationError(errors={"engineer_id": [f"No engineer with id {engineer_id}."]})
    facts, broken = checked
    if not facts.active:
        raise Conflict(f"Engineer {facts.code} is inactive", engineer_id=facts.id)
    return facts, [code for code in broken if code != "inactive"]


def _auto_choice(
    order: Order, ranking: list[Candidate], now: datetime, cfg: Settings
) -> tuple[_Facts, list[str]]:
    """The best-ranked candidate who still qualifies under their lock (another order may have taken the
    last slot since the ranking was read)."""
    for candidate in ranking:
        checked = _checked(order, candidate.engineer_id, now, cfg)
        if checked is not None and not checked[1]:
            return checked[0], []
    raise Conflict("No engineer qualifies for this order", order_id=order.id, candidates=len(ranking))


def _take_breached(order: Order) -> bool:
    return any(
        c.clock == "take" and c.status == "breached" and c.engineer_id == order.engineer_id
        for c in db.session.scalars(sa.select(SlaClock).where(SlaClock.order_id == order.id))
    )


def _exclude(order: Order, engineer_id: int, reason: str, now: datetime) -> None:
    if not any(e.engineer_id == engineer_id for e in order.exclusions):
        order.exclusions.append(AssignmentExclusion(engineer_id=engineer_id, reason=reason, created_at=now))


def try_auto_dispatch(order_id: int, *, expect_status: str, exclude_current: str | None = None) -> bool:
    """Auto-assign one order if anybody qualifies; otherwise leave it and retry it after a while."""
    try:
        assign_order(
            order_id,
            auto=True,
            actor=AUTO_ACTOR,
            exclude_current=exclude_current,
            expect_status=expect_status,
        )
    except InvalidTransition as exc:  # the order moved on meanwhile (taken, cancelled, dispatched by another)
        db.session.rollback()
        log.info("auto-dispatch of order %s skipped: %s", order_id, exc.message)
        return False
    except Conflict as exc:
        db.session.rollback()
        log.info("auto-dispatch of order %s: %s", order_id, exc.message)
        later = utcnow() + settings().retry_after
        db.session.execute(
            sa.update(Order)
            .where(Order.id == order_id)
            .values(auto_dispatch_after=later, version=Order.version + 1)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        return False
    except DispatchError as exc:
        db.session.rollback()
        log.info("auto-dispatch of order %s skipped: %s", order_id, exc.message)
        return False
    return True


@dataclass
class SweepResult:
    assigned: int = 0
    unassigned: int = 0

    def __bool__(self) -> bool:
        return bool(self.assigned or self.unassigned)


def sweep(now: datetime, *, limit: int = 50) -> SweepResult:
    """Scheduler job: auto-dispatch new orders (``AUTO_DISPATCH``) and re-dispatch returned orders and
    orders whose ``take`` clock breached (``AUTO_REDISPATCH``). Orders nobody can take wait
    ``AUTO_DISPATCH_RETRY_SECONDS``; two schedulers skip each other's orders on PostgreSQL."""
    cfg = settings()
    if not cfg.auto_dispatch and not cfg.redispatch:
        return SweepResult()
    due = sa.or_(Order.auto_dispatch_after.is_(None), Order.auto_dispatch_after <= now)
    work: list[tuple[int, str, str | None]] = []
    if cfg.auto_dispatch:
        work += [(i, "new", None) for i in _claimable(sa.and_(Order.status == "new", due), limit)]
    if "return" in cfg.redispatch:
        work += [(i, "returned", None) for i in _claimable(sa.and_(Order.status == "returned", due), limit)]
    if "take_breach" in cfg.redispatch:
        breached = sa.select(SlaClock.id).where(
            SlaClock.order_id == Order.id,
            SlaClock.clock == "take",
            SlaClock.status == "breached",
            SlaClock.engineer_id == Order.engineer_id,
        )
        condition = sa.and_(Order.status == "dispatched", breached.exists(), due)
        work += [(i, "dispatched", "take_breach") for i in _claimable(condition, limit)]
    result = SweepResult()
    for order_id, status, exclude in work:
        if try_auto_dispatch(order_id, expect_status=status, exclude_current=exclude):
            result.assigned += 1
        else:
            result.unassigned += 1
    return result


def _claimable(condition: sa.ColumnElement[bool], limit: int) -> list[int]:
    ids = list(
        db.session.scalars(
            sa.select(Order.id).where(condition).order_by(Order.created_at, Order.id).limit(limit)
        )
    )
    db.session.rollback()  # each order is then locked (FOR UPDATE) and re-checked in its own transaction
    return ids


def record_position(
    engineer_id: int, *, lat: float, lng: float, accuracy_m: float | None, at: datetime, actor: Actor
) -> Engineer:
    """The PDA's location heartbeat: the engineer's live position for ranking. A heartbeat older than the
    one already recorded (sent late after a network gap) does not move the engineer back."""
    if actor.kind != "system" and not (actor.is_engineer and actor.engineer_id == engineer_id):
        raise PermissionDenied("only the engineer's own device reports their position")
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise ValidationError(
            errors={"lat": ["Out of range."]} if not -90 <= lat <= 90 else {"lng": ["Out of range."]}
        )
    # One conditional UPDATE: of two heartbeats racing, the later device time wins whatever commits first.
    db.session.execute(
        sa.update(Engineer)
        .where(
            Engineer.id == engineer_id,
            sa.or_(Engineer.position_at.is_(None), Engineer.position_at < at),
        )
        .values(
            position_lat=lat,
            position_lng=lng,
            position_accuracy_m=accuracy_m,
            position_at=at,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    engineer = db.session.get(Engineer, engineer_id, populate_existing=True)
    if engineer is None:
        raise NotFound(f"Engineer {engineer_id} not found")
    return engineer
