"""The SLA tick: claim due warnings and breaches, record each exactly once with its effects.

A claim is one conditional UPDATE over the partial indexes of due clocks (``FOR UPDATE SKIP LOCKED`` in its
subquery on PostgreSQL, so concurrent schedulers take disjoint rows; SQLite serialises writers with
``BEGIN IMMEDIATE``). The claim, the alert, the escalation event on the order and the SMS outbox rows commit
in one transaction: a scheduler killed at any moment leaves either all of them or none, and the next tick
(in this process or another) picks up whatever is still due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.extensions import db
from dispatch.models import Alert, Engineer, Order, OutboxMessage, SlaClock

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
    if db.session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    claimed = db.session.execute(
        sa.update(SlaClock)
        .where(SlaClock.id.in_(candidates.scalar_subquery()), condition)
        .values(**values)
        .returning(SlaClock.id)
        .execution_options(synchronize_session=False)
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


def _sms(order: Order, clock: SlaClock, kind: str, role: str, phone: str | None, now: datetime) -> None:
    if not phone:
        return
    db.session.add(
        OutboxMessage(
            kind="sms",
            dedupe_key=f"sla:{clock.id}:{kind}:{role}",
            order_id=order.id,
            recipient=phone,
            template=f"sla_{kind}",
            payload={
                "order_id": order.id,
                "external_id": order.external_id,
                "clock": clock.clock,
                "due_at": clock.due_at.isoformat(),
                "recipient_role": role,
                "engineer_id": clock.engineer_id,
            },
            status="pending",
            next_attempt_at=now,
            created_at=now,
        )
    )


def _record(ids: list[int], kind: str, now: datetime) -> None:
    """The effects of claimed warnings or breaches: alert, escalation event, SMS outbox rows."""
    if not ids:
        return
    rows = db.session.scalars(
        sa.select(SlaClock).where(SlaClock.id.in_(ids)).execution_options(populate_existing=True)
    ).all()
    order_ids = {r.order_id for r in rows}
    orders = {o.id: o for o in db.session.scalars(sa.select(Order).where(Order.id.in_(order_ids)))}
    engineer_ids = {r.engineer_id for r in rows} | {o.engineer_id for o in orders.values()}
    engineers = {
        e.id: e for e in db.session.scalars(sa.select(Engineer).where(Engineer.id.in_(engineer_ids - {None})))
    }
    desk_phone = current_app.config.get("DISPATCH_DESK_PHONE")
    for clock in rows:
        order = orders[clock.order_id]
        db.session.add(
            Alert(order_id=order.id, clock_id=clock.id, kind=kind, clock=clock.clock, created_at=now)
        )
        late = (now - clock.due_at).total_seconds() if kind == "breach" else None
        workflow.record_event(
            order,
            f"sla_{kind}",
            SCHEDULER,
            now=now,
            from_status=order.status,
            to_status=order.status,
            payload={"clock": clock.clock, "clock_id": clock.id, "due_at": clock.due_at, "late_s": late},
        )
        engineer = engineers.get(clock.engineer_id or order.engineer_id or 0)
        if kind == "warning":
            _sms(order, clock, kind, "engineer", engineer.phone if engineer else desk_phone, now)
        else:
            leader = engineer.team.leader_phone if engineer and engineer.team else None
            _sms(order, clock, kind, "team_leader", leader, now)
            _sms(order, clock, kind, "dispatcher", desk_phone, now)


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
