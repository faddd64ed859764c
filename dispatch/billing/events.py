"""The billing events of orders and complaints, written in the transaction that causes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatch.billing import feed
from dispatch.extensions import db
from dispatch.models import Complaint, Engineer, Order, Team
from dispatch.timeutil import to_local


def _iso(value: datetime | None) -> str | None:
    return to_local(value).isoformat() if value is not None else None


def order_ref(order: Order) -> dict[str, Any]:
    return {"id": order.id, "external_id": order.external_id, "order_type": order.order_type}


def engineer_ref(engineer_id: int | None) -> dict[str, Any] | None:
    engineer = db.session.get(Engineer, engineer_id) if engineer_id else None
    if engineer is None:
        return None
    return {"id": engineer.id, "code": engineer.code, "name": engineer.name}


def team_ref(team_id: int | None) -> dict[str, Any] | None:
    team = db.session.get(Team, team_id) if team_id else None
    return {"id": team.id, "name": team.name} if team is not None else None


def order_completed(order: Order, *, team_id: int, now: datetime) -> None:
    """The billing start of an install-then-pay order: its products and the exact completion time."""
    feed.record(
        "order.completed",
        dedupe_key=f"order.completed:{order.id}",
        occurred_at=order.completed_at or now,
        order_id=order.id,
        now=now,
        payload={
            "order": order_ref(order),
            "customer": {"name": order.customer.name, "phone": order.customer.phone},
            "products": list(order.products or []),
            "pay_mode": order.pay_mode,
            "completed_at": _iso(order.completed_at),
            "engineer": engineer_ref(order.engineer_id),
            "team": team_ref(team_id),
            "district": order.address.district_name,
        },
    )


def order_cancelled(order: Order, *, now: datetime) -> None:
    feed.record(
        "order.cancelled",
        dedupe_key=f"order.cancelled:{order.id}",
        occurred_at=now,
        order_id=order.id,
        now=now,
        payload={
            "order": order_ref(order),
            "pay_mode": order.pay_mode,
            "cancelled_at": _iso(now),
            "reason_code": order.cancel_reason_code,
            "reason": order.cancel_reason,
        },
    )


def complaint_recorded(complaint: Complaint, *, now: datetime) -> None:
    order = complaint.order
    feed.record(
        "complaint.recorded",
        dedupe_key=f"complaint.recorded:{complaint.id}",
        occurred_at=now,
        order_id=complaint.order_id,
        now=now,
        payload={
            "complaint": {
                "id": complaint.id,
                "external_id": complaint.external_id,
                "category": complaint.category,
                "cause": complaint.cause,
                "received_at": _iso(complaint.received_at),
            },
            "order": order_ref(order) if order is not None else None,
            "engineer": engineer_ref(complaint.engineer_id),
            "team": team_ref(complaint.team_id),
        },
    )
