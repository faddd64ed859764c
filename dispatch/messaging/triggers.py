"""Which transitions send which SMS (DOMAIN.md "SMS"): outbox rows written in the transition's transaction.

The relay (dispatch/messaging/relay.py) renders and delivers them from the scheduler process. Each row's
``dedupe_key`` names the order, the event that caused it and the recipient role, so a transition can only
ever cause its messages once. The SLA warnings and breach escalations are written by the tick
(dispatch/sla/tick.py); the reply to a customer's "2" by the inbound webhook.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from dispatch.extensions import db
from dispatch.models import Engineer, Order, OrderEvent, OutboxMessage

REMINDER_BEFORE = timedelta(hours=1)

# action → (template, recipient role)
MESSAGES: dict[str, tuple[str, str]] = {
    "assign": ("dispatch_engineer", "engineer"),
    "reassign": ("dispatch_engineer", "engineer"),
    "appoint": ("appointment_customer", "customer"),
    "reschedule": ("reschedule_customer", "customer"),
    "complete": ("completion_customer", "customer"),
}


def _sms(
    order: Order,
    event: OrderEvent,
    template: str,
    role: str,
    phone: str,
    now: datetime,
    *,
    not_before: datetime | None = None,
    **payload: Any,
) -> None:
    db.session.add(
        OutboxMessage(
            kind="sms",
            dedupe_key=f"sms:{order.id}:{event.id}:{template}:{role}",
            order_id=order.id,
            recipient=phone,
            template=template,
            body=None,  # rendered when sent, with the order as it is then
            payload={"order_id": order.id, "recipient_role": role, "event_id": event.id, **payload},
            status="pending",
            attempts=0,
            next_attempt_at=not_before or now,
            created_at=now,
        )
    )


def on_transition(order: Order, action: str, event: OrderEvent, *, now: datetime) -> None:
    """Write the SMS that ``action`` (just applied to ``order``, recorded as ``event``) sends."""
    message = MESSAGES.get(action)
    if message is None:
        return
    template, role = message
    db.session.flush()  # the event's id names the messages
    if role == "engineer":
        engineer = db.session.get(Engineer, order.engineer_id) if order.engineer_id else None
        if engineer is not None:
            _sms(order, event, template, role, engineer.phone, now, engineer_id=engineer.id)
        return
    phone = order.customer.phone
    window: dict[str, Any] = {}
    if order.appointment_start is not None and order.appointment_end is not None:
        window = {
            "window_start": order.appointment_start.isoformat(),
            "window_end": order.appointment_end.isoformat(),
        }
    _sms(order, event, template, role, phone, now, engineer_id=order.engineer_id, **window)
    if action in ("appoint", "reschedule") and order.appointment_start is not None:
        remind_at = order.appointment_start - REMINDER_BEFORE
        if remind_at > now:  # an appointment within the hour needs no reminder
            _sms(
                order,
                event,
                "reminder_customer",
                role,
                phone,
                now,
                not_before=remind_at,
                engineer_id=order.engineer_id,
                **window,
            )
