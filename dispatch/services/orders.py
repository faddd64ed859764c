"""Orders for dispatchers and the acceptance desk: queries, assignment, suspension, cancellation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm.exc import StaleDataError

from dispatch import workflow
from dispatch.actors import READ_ORDERS, Actor, require
from dispatch.assignment import rules
from dispatch.clock import utcnow
from dispatch.errors import Conflict, NotFound, ValidationError
from dispatch.extensions import db
from dispatch.models import (
    Address,
    Attachment,
    District,
    Engineer,
    Order,
    OrderEvent,
    OutboxMessage,
    SlaClock,
)
from dispatch.services.paging import page_of
from dispatch.timeutil import local_day_bounds, to_local

MAX_ID = 2**31 - 1  # ids are INTEGER columns
ASSIGNED_STATUSES = ("dispatched", "taken", "appointed", "on_site", "pending_acceptance", "in_progress")


@dataclass(frozen=True)
class OrderFilters:
    status: tuple[str, ...] = ()
    order_type: str | None = None
    district: str | None = None
    engineer_id: int | None = None
    external_id: str | None = None
    sla: str | None = None  # "at_risk" or "breached" (see _sla_condition)
    engineer_code: str | None = None  # the console's board filters by staff number


def _visible_query(actor: Actor, *, action: str | None = None) -> sa.Select[Order]:
    """Orders the actor may see; to take ``action``, whoever the workflow allows it may load the order
    even without read access (the intake system cancels, the scheduler assigns)."""
    query = sa.select(Order)
    if actor.is_engineer:
        if actor.engineer_id is None:  # `engineer_id == None` would be IS NULL: every unassigned order
            return query.where(sa.false())
        return query.where(Order.engineer_id == actor.engineer_id)
    allowed = workflow.TRANSITIONS[action].allowed if action else frozenset()
    require(actor, READ_ORDERS | allowed, "read orders")
    return query


def list_orders(filters: OrderFilters, *, page: int, page_size: int, actor: Actor) -> tuple[list[Order], int]:
    """A page of orders matching ``filters``, newest first, and the total count."""
    query = _visible_query(actor)
    if filters.status:
        query = query.where(Order.status.in_(filters.status))
    if filters.order_type:
        query = query.where(Order.order_type == filters.order_type)
    if filters.engineer_id is not None:
        query = query.where(Order.engineer_id == filters.engineer_id)
    if filters.external_id:
        query = query.where(Order.external_id == filters.external_id)
    if filters.engineer_code:
        query = query.where(
            Order.engineer_id.in_(sa.select(Engineer.id).where(Engineer.code == filters.engineer_code))
        )
    if filters.district:
        query = query.join(Address, Order.address_id == Address.id).where(
            Address.district_name == filters.district
        )
    if filters.sla:
        query = query.where(_sla_condition(filters.sla, utcnow()))
    return page_of(query, Order.created_at.desc(), Order.id.desc(), page=page, page_size=page_size)


def _sla_condition(kind: str, now: datetime) -> sa.ColumnElement[bool]:
    """``at_risk``: a running clock past its warning time but not yet due. ``breached``: an open order with
    a breached clock, or with a running clock already past due that the next tick will record as breached.
    Correlated EXISTS on ``sla_clocks.order_id`` (indexed): the cost follows the order's few clocks."""
    clocks = sa.select(SlaClock.id).where(SlaClock.order_id == Order.id)
    if kind == "at_risk":
        return clocks.where(
            SlaClock.status == "running", SlaClock.warn_at <= now, SlaClock.due_at > now
        ).exists()
    if kind == "breached":
        late = (SlaClock.status == "breached") | ((SlaClock.status == "running") & (SlaClock.due_at <= now))
        return sa.and_(Order.status.not_in(("completed", "cancelled")), clocks.where(late).exists())
    raise ValidationError(errors={"sla": ["Must be one of: at_risk, breached."]})


def get_order(order_id: int, *, actor: Actor, for_update: bool = False, action: str | None = None) -> Order:
    """One order, if the actor may see it (404 otherwise, also for an engineer's colleague's order)."""
    query = _visible_query(actor, action=action).where(Order.id == order_id)
    if not 0 < order_id <= MAX_ID:  # out of the INTEGER range: PostgreSQL would raise, not find nothing
        raise NotFound(f"Order {order_id} not found")
    if for_update:
        query = query.with_for_update(of=Order)
    order = db.session.scalar(query)
    if order is None:
        raise NotFound(f"Order {order_id} not found")
    return order


def orders_by_id(order_ids: Iterable[int], *, actor: Actor) -> dict[int, Order]:
    """The visible orders among ``order_ids`` by id, in one query (e.g. for a page of alerts)."""
    wanted = sorted({i for i in order_ids if 0 < i <= MAX_ID})
    if not wanted:
        return {}
    return {o.id: o for o in db.session.scalars(_visible_query(actor).where(Order.id.in_(wanted))).unique()}


def district_names(*, actor: Actor) -> list[str]:
    """The districts orders are filed under, by name (for filters)."""
    require(actor, READ_ORDERS, "read orders")
    return list(db.session.scalars(sa.select(District.name).order_by(District.id)))


def order_events(order: Order) -> list[OrderEvent]:
    return list(
        db.session.scalars(
            sa.select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)
        )
    )


def order_notifications(order: Order) -> list[OutboxMessage]:
    return list(
        db.session.scalars(
            sa.select(OutboxMessage)
            .where(OutboxMessage.order_id == order.id, OutboxMessage.kind == "sms")
            .order_by(OutboxMessage.id)
        )
    )


def attachment_kinds(order: Order) -> frozenset[str]:
    return frozenset(db.session.scalars(sa.select(Attachment.kind).where(Attachment.order_id == order.id)))


def workflow_rules() -> workflow.Rules:
    cfg = current_app.config
    return workflow.Rules(
        optical_power_min_dbm=float(cfg.get("OPTICAL_POWER_MIN_DBM", -27.0)),
        optical_power_max_dbm=float(cfg.get("OPTICAL_POWER_MAX_DBM", -8.0)),
    )


def transition(
    order_id: int,
    action: str,
    *,
    actor: Actor,
    params: dict[str, Any] | None = None,
    device_time: datetime | None = None,
    event_payload: dict[str, Any] | None = None,
    clock_now: datetime | None = None,
) -> Order:
    """Load the order (row-locked on PostgreSQL), apply one workflow action, commit (``clock_now``: when
    the SLA clocks start or stop, if not the server's now: see :func:`dispatch.workflow.apply`)."""
    order = get_order(order_id, actor=actor, for_update=True, action=action)
    with committing():
        workflow.apply(
            order,
            action,
            actor,
            now=utcnow(),
            params=params,
            device_time=device_time,
            attachment_kinds=attachment_kinds(order),
            rules=workflow_rules(),
            event_payload=event_payload,
            clock_now=clock_now,
        )
    return order


@contextmanager
def committing() -> Iterator[None]:
    """Commit what the block did; a concurrent change to the same order (stale version) is a 409."""
    try:
        yield
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        raise Conflict("The order was changed by someone else; reload and retry") from None


def order_facts(order: Order) -> rules.OrderFacts:
    """The order as the assignment rules see it: its window (the appointment, else the requested one, else
    the rest of today: an order without a window can be served by anyone still working today)."""
    start = order.appointment_start or order.requested_start
    if start is None:
        start = utcnow()
        end = local_day_bounds(to_local(start).date())[1]
    else:
        end = order.appointment_end or order.requested_end or start
    return rules.OrderFacts(
        order_type=order.order_type,
        district_id=order.address.district_id,
        window_start=to_local(start),
        window_end=to_local(end),
    )


def cancel_order(order_id: int, *, reason: str, actor: Actor, reason_code: str | None = None) -> Order:
    """Withdraw an order (dispatcher or the intake system)."""
    params = {"reason": reason, "reason_code": reason_code} if reason_code else {"reason": reason}
    return transition(order_id, "cancel", actor=actor, params=params)


def suspend_order(
    order_id: int, *, reason_code: str, note: str | None, until: datetime | None, actor: Actor
) -> Order:
    """Put an open order on hold with a reason; it resumes by hand or when ``until`` passes."""
    return transition(
        order_id, "suspend", actor=actor, params={"reason_code": reason_code, "note": note, "until": until}
    )


def resume_order(order_id: int, *, note: str | None, actor: Actor) -> Order:
    """Return a suspended order to the status it had."""
    return transition(order_id, "resume", actor=actor, params={"note": note})


def decide_acceptance(order_id: int, *, decision: str, note: str | None, actor: Actor) -> Order:
    """The acceptance desk approves (→ in progress) or rejects (→ back to the engineer on site)."""
    if decision not in ("approve", "reject"):
        raise ValidationError(errors={"decision": ["Must be one of: approve, reject."]})
    return transition(order_id, decision, actor=actor, params={"note": note})


def resume_due_suspensions(*, now: datetime, limit: int = 500) -> int:
    """Scheduler job: resume orders whose suspension ``until`` has passed; safe in several processes."""
    actor = Actor.system()
    query = (
        sa.select(Order.id)
        .where(Order.status == "suspended", Order.suspended_until.is_not(None), Order.suspended_until <= now)
        .order_by(Order.suspended_until)
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    resumed = 0
    with committing():
        for order_id in db.session.scalars(query).all():
            order = db.session.get(Order, order_id)
            if order is None or order.status != "suspended":
                continue
            workflow.apply(order, "resume", actor, now=now, params={"note": "suspension period ended"})
            resumed += 1
    return resumed
