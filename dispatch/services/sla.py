"""SLA policies (admins change them, the desk and managers read them) and the alerts the tick raises.

A policy change applies to clocks started afterwards only: every clock row carries its own ``due_at`` and
``warn_at`` from the moment it started (DESIGN.md decision 4), so running clocks keep their deadlines.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from dispatch.actors import Actor, require
from dispatch.clock import utcnow
from dispatch.errors import NotFound, ValidationError
from dispatch.extensions import db
from dispatch.models import Alert, SlaPolicy
from dispatch.models.sla import CLOCKS
from dispatch.services.paging import page_of
from dispatch.vocabulary import ORDER_TYPES

READ_POLICIES = frozenset({"admin", "dispatcher", "manager", "system"})
MANAGE_POLICIES = frozenset({"admin", "system"})
HANDLE_ALERTS = frozenset({"dispatcher", "admin", "system"})

MAX_TARGET_SECONDS = 30 * 24 * 3600  # a month: anything longer is a typo, not a service level
WARN_PERCENT_RANGE = (1, 100)
ALERT_STATUSES = ("open", "acknowledged")
MAX_ID = 2**31 - 1  # ids are INTEGER columns: a larger one is unknown, not a database error


def list_policies(*, actor: Actor) -> list[SlaPolicy]:
    """Every policy, by order type then clock in lifecycle order (take → completion)."""
    require(actor, READ_POLICIES, "read SLA policies")
    rows = db.session.scalars(sa.select(SlaPolicy)).all()
    rank = {clock: i for i, clock in enumerate(CLOCKS)}
    return sorted(rows, key=lambda p: (p.order_type, rank.get(p.clock, len(rank))))


def set_policy(
    order_type: str, clock: str, *, target_seconds: int, warn_percent: int, actor: Actor
) -> SlaPolicy:
    """Change one policy (admins only). An unknown order type or clock names no policy: 404.

    Out-of-range values are 422: ``target_seconds`` 0..30 days (0 for ``arrival`` means due at the window
    start), ``warn_percent`` 1..100. Clocks already running keep their deadlines.
    """
    require(actor, MANAGE_POLICIES, "change SLA policies")
    if order_type not in ORDER_TYPES or clock not in CLOCKS:
        raise NotFound(
            f"No SLA policy for {order_type}/{clock}",
            order_types=list(ORDER_TYPES),
            clocks=list(CLOCKS),
        )
    errors: dict[str, list[str]] = {}
    if isinstance(target_seconds, bool) or not 0 <= target_seconds <= MAX_TARGET_SECONDS:
        errors["target_seconds"] = [f"Must be between 0 and {MAX_TARGET_SECONDS}."]
    low, high = WARN_PERCENT_RANGE
    if isinstance(warn_percent, bool) or not low <= warn_percent <= high:
        errors["warn_percent"] = [f"Must be between {low} and {high}."]
    if errors:
        raise ValidationError(errors=errors)
    policy = db.session.get(SlaPolicy, (order_type, clock), with_for_update=True)
    if policy is None:  # the migration seeds all of them; a deleted row comes back on its first change
        policy = SlaPolicy(order_type=order_type, clock=clock)
        db.session.add(policy)
    policy.target_seconds = target_seconds
    policy.warn_percent = warn_percent
    policy.updated_at = utcnow()
    db.session.commit()
    return policy


def list_alerts(
    *,
    actor: Actor,
    page: int,
    page_size: int,
    order_id: int | None = None,
    status: str | None = None,
) -> tuple[list[Alert], int]:
    """A page of alerts, newest first, and the total; ``status`` is ``open`` (not acknowledged yet) or
    ``acknowledged``."""
    require(actor, HANDLE_ALERTS, "read alerts")
    query = sa.select(Alert)
    if order_id is not None:
        query = query.where(Alert.order_id == order_id)
    if status == "open":
        query = query.where(Alert.acknowledged_at.is_(None))
    elif status == "acknowledged":
        query = query.where(Alert.acknowledged_at.is_not(None))
    elif status is not None:
        raise ValidationError(errors={"status": [f"Must be one of: {', '.join(ALERT_STATUSES)}."]})
    return page_of(query, Alert.created_at.desc(), Alert.id.desc(), page=page, page_size=page_size)


def acknowledge_alert(alert_id: int, *, actor: Actor) -> Alert:
    """Mark an alert as seen by the caller. Idempotent: a second acknowledgement (also a concurrent one)
    keeps the first time and user. Unknown alert → 404."""
    require(actor, HANDLE_ALERTS, "acknowledge alerts")
    if not 0 < alert_id <= MAX_ID:
        raise NotFound(f"Alert {alert_id} not found")
    now: datetime = utcnow()
    # Conditional: of two concurrent acknowledgements only the first writes.
    db.session.execute(
        sa.update(Alert)
        .where(Alert.id == alert_id, Alert.acknowledged_at.is_(None))
        .values(acknowledged_at=now, acknowledged_by=actor.id if actor.kind == "user" else None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    alert = db.session.scalar(
        sa.select(Alert).where(Alert.id == alert_id).execution_options(populate_existing=True)
    )
    if alert is None:
        raise NotFound(f"Alert {alert_id} not found")
    return alert
