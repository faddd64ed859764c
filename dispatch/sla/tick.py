"""The SLA tick: claim due warnings and breaches, record each exactly once with its effects.

A claim is one conditional UPDATE over the partial indexes of due clocks (``FOR UPDATE SKIP LOCKED`` in its
locking CTE on PostgreSQL, so concurrent schedulers take disjoint rows; SQLite serialises writers with
``BEGIN IMMEDIATE``). The claim, the alert, the escalation event on the order and the SMS outbox rows commit
in one transaction: a scheduler killed at any moment leaves either all of them or none, and the next tick
(in this process or another) picks up whatever is still due.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.extensions import db
from dispatch.models import (
    Address,
    Alert,
    Engineer,
    KpiOrderFacts,
    Order,
    OrderEvent,
    OutboxMessage,
    SlaClock,
    Team,
)
from dispatch.reporting import kpi, rollup

BATCH = 500
SCHEDULER = Actor.system(name="sla-tick", source="scheduler")


@dataclass
class TickResult:
    warnings: int = 0
    breaches: int = 0

    def __bool__(self) -> bool:
        return bool(self.warnings or self.breaches)


def _claim(condition: sa.ColumnElement[bool], order_by: Any, values: dict[str, Any], limit: int) -> list[int]:
    """Mark up to ``limit`` clocks matching ``condition`` and return their ids (never the same row twice)."""
    candidates = sa.select(SlaClock.id).where(condition).order_by(order_by).limit(limit)
    claim = sa.update(SlaClock).where(SlaClock.id.in_(candidates.scalar_subquery()), condition)
    if db.session.get_bind().dialect.name == "postgresql":
        # The order is share-locked with its clock (KEY SHARE, what the foreign keys of the alert, event and
        # SMS rows take anyway; ticks do not block each other on it) and the clock is skipped while a
        # transition holds the order: waiting for it later, while that transition waits for this clock,
        # would be a deadlock (tests/reliability/test_tick_transition_race.py). SQLAlchemy renders one
        # locking clause per SELECT, hence the suffix.
        locked = candidates.join(Order, Order.id == SlaClock.order_id).suffix_with(
            f"FOR UPDATE OF {SlaClock.__tablename__} SKIP LOCKED"
            f" FOR KEY SHARE OF {Order.__tablename__} SKIP LOCKED"
        )
        # A materialized CTE joined by primary key: the rows it locked still match ``condition``. Under
        # ``id IN (subquery) AND condition`` the planner, which expects almost no clock to be due, re-ran the
        # locking subquery once per due clock (a 1 000-clock burst: 0.2–0.6 s per batch instead of ~5 ms).
        due = locked.cte("due_clocks").prefix_with("MATERIALIZED")
        claim = sa.update(SlaClock).where(SlaClock.id == due.c.id)
    claimed = db.session.execute(
        claim.values(**values).returning(SlaClock.id).execution_options(synchronize_session=False)
    )
    return [row[0] for row in claimed]


def claim_warnings(now: datetime, limit: int = BATCH) -> list[int]:
    due = (
        (SlaClock.status == "running")
        & SlaClock.warned_at.is_(None)
        & (SlaClock.warn_at <= now)
        & (SlaClock.due_at > now)  # past due: the breach says it all
    )
    return _claim(due, SlaClock.warn_at, {"warned_at": now}, limit)


def claim_breaches(now: datetime, limit: int = BATCH) -> list[int]:
    due = (SlaClock.status == "running") & (SlaClock.due_at <= now)
    return _claim(due, SlaClock.due_at, {"status": "breached", "breached_at": now}, limit)


_ALERTS: sa.Table = Alert.__table__  # type: ignore[assignment]
_EVENTS: sa.Table = OrderEvent.__table__  # type: ignore[assignment]
_OUTBOX: sa.Table = OutboxMessage.__table__  # type: ignore[assignment]


def _insert_new_outbox_rows() -> Any:
    """INSERT into the outbox that skips a row whose ``dedupe_key`` is taken (one SMS per key, no lookups)."""
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    return insert(_OUTBOX).on_conflict_do_nothing(index_elements=[_OUTBOX.c.dedupe_key])


def _sms(clock: Any, kind: str, role: str, phone: str | None, now: datetime) -> dict[str, Any] | None:
    """The outbox row of one SLA SMS, or None without a phone."""
    if not phone:
        return None
    key = f"sla:{clock.id}:{kind}:{role}"
    if kind == "warning":
        # A customer reschedule re-arms the arrival warning (clocks._move_arrival): one SMS per deadline.
        key += f":{int(clock.due_at.timestamp())}"
    return {
        "kind": "sms",
        "dedupe_key": key,
        "order_id": clock.order_id,
        "recipient": phone,
        "template": f"sla_{kind}",
        "body": None,
        "payload": {
            "order_id": clock.order_id,
            "external_id": clock.external_id,
            "clock": clock.clock,
            "due_at": clock.due_at.isoformat(),
            "recipient_role": role,
            "engineer_id": clock.engineer_id,
        },
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "provider_sid": None,
        "last_error": None,
        "created_at": now,
        "sent_at": None,
    }


def _record(ids: list[int], kind: str, now: datetime) -> None:
    """The effects of claimed warnings or breaches: alert, escalation event, SMS outbox rows.

    Written with one statement per table for the whole batch (Core executemany, no ORM objects): what a
    clock's effects need of its order, engineer and team comes in one read.
    """
    if not ids:
        return
    # The SMS goes to the clock's engineer, else the order's (the warning) or to that engineer's team leader.
    engineer_id = sa.func.coalesce(SlaClock.engineer_id, Order.engineer_id)
    clocks = db.session.execute(
        sa.select(
            SlaClock.id,
            SlaClock.order_id,
            SlaClock.clock,
            SlaClock.engineer_id,
            SlaClock.due_at,
            Order.external_id,
            Order.status.label("order_status"),
            Engineer.id.label("phone_engineer_id"),
            Engineer.phone.label("engineer_phone"),
            Team.leader_phone,
            # What the breach counts under in the KPIs: the order's current assignment (rollup facts).
            Order.order_type,
            Address.district_name,
            sa.func.coalesce(KpiOrderFacts.team_id, 0).label("kpi_team_id"),
            sa.func.coalesce(KpiOrderFacts.engineer_id, 0).label("kpi_engineer_id"),
        )
        .join(Order, Order.id == SlaClock.order_id)
        .join(Address, Address.id == Order.address_id)
        .outerjoin(KpiOrderFacts, KpiOrderFacts.order_id == Order.id)
        .outerjoin(Engineer, Engineer.id == engineer_id)
        .outerjoin(Team, Team.id == Engineer.team_id)
        .where(SlaClock.id.in_(ids))
        .order_by(SlaClock.id)
    ).all()
    desk_phone = current_app.config.get("DISPATCH_DESK_PHONE")
    # One alert per clock and kind (a unique key): a re-armed warning reopens the clock's earlier one.
    reopened = set(
        db.session.scalars(
            sa.update(Alert)
            .where(Alert.clock_id.in_(ids), Alert.kind == kind)
            .values(created_at=now, acknowledged_at=None, acknowledged_by=None)
            .returning(Alert.clock_id)
        )
    )
    alerts, events, sms = [], [], []
    kpis: Counter[kpi.Key] = Counter()
    for clock in clocks:
        if clock.id not in reopened:
            alerts.append(
                {
                    "order_id": clock.order_id,
                    "clock_id": clock.id,
                    "kind": kind,
                    "clock": clock.clock,
                    "created_at": now,
                    "acknowledged_at": None,
                    "acknowledged_by": None,
                }
            )
        late = (now - clock.due_at).total_seconds() if kind == "breach" else None
        event = workflow.event_values(
            f"sla_{kind}",
            SCHEDULER,
            now=now,
            from_status=clock.order_status,
            to_status=clock.order_status,
            payload={"clock": clock.clock, "clock_id": clock.id, "due_at": clock.due_at, "late_s": late},
        )
        events.append({"order_id": clock.order_id, **event})
        if kind == "warning":
            phone = clock.engineer_phone if clock.phone_engineer_id is not None else desk_phone
            sms.append(_sms(clock, kind, "engineer", phone, now))
        else:
            sms.append(_sms(clock, kind, "team_leader", clock.leader_phone, now))
            sms.append(_sms(clock, kind, "dispatcher", desk_phone, now))
            dims = kpi.Dims(clock.order_type, clock.district_name, clock.kpi_team_id, clock.kpi_engineer_id)
            kpis.update(rollup.clock_counter(clock.clock, "breached", None, now, clock.due_at, dims))
    if alerts:
        db.session.execute(_ALERTS.insert(), alerts)
    if events:
        db.session.execute(_EVENTS.insert(), events)
    sms_rows = [row for row in sms if row is not None]
    if sms_rows:
        db.session.execute(_insert_new_outbox_rows(), sms_rows)
    rollup.emit(kpis)


def tick(now: datetime, *, batch: int = BATCH) -> TickResult:
    """Record every warning and breach due at ``now``, one committed batch at a time."""
    result = TickResult()
    while True:
        warned = claim_warnings(now, batch)
        _record(warned, "warning", now)
        breached = claim_breaches(now, batch)
        _record(breached, "breach", now)
        db.session.commit()
        result.warnings += len(warned)
        result.breaches += len(breached)
        if len(warned) < batch and len(breached) < batch:
            return result
