"""The acceptance desk's queue (集中受理): install-then-pay orders waiting for formal acceptance.

The desk works oldest first against its own 10-minute clock (DOMAIN.md: "formally accepts within 10
minutes"), so the queue is ordered by when the running acceptance clock started, not by order creation.
The decision itself is :func:`dispatch.services.orders.decide_acceptance` (the workflow says who may take it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa

from dispatch import workflow
from dispatch.actors import Actor, require
from dispatch.extensions import db
from dispatch.models import Attachment, Order, OrderEvent, SlaClock
from dispatch.services import attachments, orders

# Who works at the desk: the desk itself, dispatchers (who may also decide) and admins (who may look).
DESK_READERS = frozenset({"acceptance", "dispatcher", "admin"})
QUEUE_LIMIT = 500
DESK_ACTIONS = ("submit", "approve", "reject")


@dataclass(frozen=True)
class DeskItem:
    """One order at the desk: its acceptance clock (the live one, else the latest), the attachments the
    actor may see (ID photos only for the roles allowed) and, on the detail page, the desk's history."""

    order: Order
    clock: SlaClock | None
    attachments: list[Attachment] = field(default_factory=list)
    history: list[OrderEvent] = field(default_factory=list)

    @property
    def id_photos(self) -> list[Attachment]:
        return [a for a in self.attachments if a.kind == "id_card"]


def may_decide(actor: Actor) -> bool:
    """Whether the actor may approve or reject (the workflow's rule, not a second copy of it)."""
    allowed = workflow.TRANSITIONS["approve"].allowed & workflow.TRANSITIONS["reject"].allowed
    return bool(actor.principals & allowed)


def acceptance_queue(*, actor: Actor, limit: int = QUEUE_LIMIT) -> list[DeskItem]:
    """Orders waiting for acceptance, the one submitted longest ago first."""
    require(actor, DESK_READERS, "use the acceptance desk")
    # The latest submission's clock (a rejected order resubmitted starts a new one; a breached one stays).
    submitted = (
        sa.select(SlaClock.order_id, sa.func.max(SlaClock.started_at).label("started_at"))
        .where(SlaClock.clock == "acceptance")
        .group_by(SlaClock.order_id)
        .subquery()
    )
    query = (
        sa.select(Order)
        .outerjoin(submitted, submitted.c.order_id == Order.id)
        .where(Order.status == "pending_acceptance")
        .order_by(sa.func.coalesce(submitted.c.started_at, Order.updated_at), Order.id)
        .limit(limit)
    )
    pending = list(db.session.scalars(query).unique())
    ids = [order.id for order in pending]
    visible: dict[int, list[Attachment]] = defaultdict(list)
    if ids:
        rows = db.session.scalars(
            sa.select(Attachment).where(Attachment.order_id.in_(ids)).order_by(Attachment.id)
        )
        for row in rows:
            if attachments.may_see(actor, row.kind):  # the attachments service's own rule, in bulk
                visible[row.order_id].append(row)
    return [DeskItem(order, _acceptance_clock(order), visible[order.id]) for order in pending]


def desk_order(order_id: int, *, actor: Actor) -> DeskItem:
    """One order as the desk reviews it (any status: a colleague may have decided it meanwhile)."""
    require(actor, DESK_READERS, "use the acceptance desk")
    order = orders.get_order(order_id, actor=actor)
    history = [event for event in orders.order_events(order) if event.action in DESK_ACTIONS]
    return DeskItem(
        order,
        _acceptance_clock(order),
        attachments.list_attachments(order.id, actor=actor),
        history,
    )


def _acceptance_clock(order: Order) -> SlaClock | None:
    clocks = [clock for clock in order.sla_clocks if clock.clock == "acceptance"]
    live = [clock for clock in clocks if clock.status in ("running", "paused")]
    latest = live or clocks
    return latest[-1] if latest else None
