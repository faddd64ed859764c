"""The engineers' field work from the PDA: their orders, take, calls, check-in, resources, completion.

Every mutation may carry the device time ``at``. Both times are kept: the event's ``occurred_at`` is the
server's, its ``device_time`` the PDA's. The SLA clocks start and stop at the device time only while the
device clock is within ``DEVICE_CLOCK_SKEW_SECONDS`` of the server's; otherwise at the server's time, and
the event says ``device_time_rejected: true`` (an offline PDA replaying old actions, or a wrong clock).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import orm

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.clock import utcnow
from dispatch.errors import InvalidTransition, NotFound, PermissionDenied, ValidationError
from dispatch.extensions import db
from dispatch.geo.distance import geodesic_km
from dispatch.models import Attachment, Order
from dispatch.services import dispatching, orders
from dispatch.services.paging import page_of
from dispatch.vocabulary import CLOSED_STATUSES, CONTACT_OUTCOMES

NOT_REACHED = ("no_answer", "busy", "wrong_number")
# Resources are reported from the take on, while the order is open (and not suspended).
RESOURCE_STATUSES = frozenset({"taken", "appointed", "on_site", "pending_acceptance", "in_progress"})


@dataclass(frozen=True)
class FieldOrder:
    """An order as the PDA needs it offline: the order, its checklist and what it still lacks."""

    order: Order
    checklist: tuple[str, ...]
    missing: list[str]
    allowed_actions: list[str]
    warnings: list[dict[str, str]] = field(default_factory=list)
    check_in: dict[str, Any] | None = None


# --- settings -----------------------------------------------------------------------------------------


def _setting(name: str, default: float) -> float:
    return float(current_app.config.get(name, default))


def _clock_time(at: datetime | None) -> tuple[datetime | None, dict[str, Any]]:
    """When the SLA clocks move (None: the server's now) and what the event should say about it."""
    if at is None:
        return None, {}
    skew = _setting("DEVICE_CLOCK_SKEW_SECONDS", 300)
    if abs((at - utcnow()).total_seconds()) <= skew:
        return at, {}
    return None, {"device_time_rejected": True}


# --- reading ------------------------------------------------------------------------------------------


def _require_engineer(actor: Actor) -> None:
    if not actor.is_engineer:
        raise PermissionDenied("Only engineers work orders in the field")


def _kinds_by_order(order_ids: list[int]) -> dict[int, frozenset[str]]:
    if not order_ids:
        return {}
    rows = db.session.execute(
        sa.select(Attachment.order_id, Attachment.kind).where(Attachment.order_id.in_(order_ids))
    )
    kinds: dict[int, set[str]] = defaultdict(set)
    for order_id, kind in rows:
        kinds[order_id].add(kind)
    return {order_id: frozenset(k) for order_id, k in kinds.items()}


def _view(order: Order, actor: Actor, kinds: frozenset[str] | None = None, **extra: Any) -> FieldOrder:
    if kinds is None:
        kinds = orders.attachment_kinds(order)
    step = workflow.Step(order, actor, utcnow(), {}, orders.workflow_rules(), kinds)
    return FieldOrder(
        order=order,
        checklist=workflow.CHECKLISTS[order.order_type],
        missing=workflow.missing_for_completion(step),
        allowed_actions=workflow.allowed_actions(order, actor),
        **extra,
    )


def my_orders(actor: Actor, *, page: int = 1, page_size: int = 200) -> tuple[list[FieldOrder], int]:
    """The engineer's open orders, soonest first (appointment, else requested start, else received)."""
    _require_engineer(actor)
    if actor.engineer_id is None:
        return [], 0
    query = (
        sa.select(Order)
        .where(Order.engineer_id == actor.engineer_id, Order.status.not_in(tuple(CLOSED_STATUSES)))
        # The order's engineer is the caller: their skills, shifts, districts and leave are not shown.
        .options(orm.joinedload(Order.engineer).lazyload("*"))
    )
    soonest = sa.func.coalesce(Order.appointment_start, Order.requested_start, Order.created_at)
    items, total = page_of(query, soonest, Order.id, page=page, page_size=page_size)
    kinds = _kinds_by_order([o.id for o in items])
    return [_view(o, actor, kinds.get(o.id, frozenset())) for o in items], total


def field_order(order_id: int, *, actor: Actor) -> FieldOrder:
    """One of the engineer's orders with its checklist (404 for anyone else's)."""
    _require_engineer(actor)
    return _view(orders.get_order(order_id, actor=actor), actor)


# --- transitions --------------------------------------------------------------------------------------


def _transition(
    order_id: int,
    action: str,
    *,
    actor: Actor,
    at: datetime | None,
    params: dict[str, Any],
    payload: dict[str, Any] | None = None,
) -> FieldOrder:
    _require_engineer(actor)
    clock_now, flags = _clock_time(at)
    order = orders.transition(
        order_id,
        action,
        actor=actor,
        params=params,
        device_time=at,
        event_payload={**params, **(payload or {}), **flags},
        clock_now=clock_now,
    )
    return _view(order, actor)


def take_order(order_id: int, *, at: datetime | None = None, actor: Actor) -> FieldOrder:
    """Accept a dispatched order: the take clock is met, the contact clock starts."""
    return _transition(order_id, "take", actor=actor, at=at, params={})


def record_contact(
    order_id: int,
    *,
    outcome: str,
    called_at: datetime,
    appointment: dict[str, datetime] | None = None,
    reason: str | None = None,
    actor: Actor,
) -> FieldOrder:
    """Log a call: not reached → an attempt; reached with a window → the appointment (or a reschedule)."""
    _require_engineer(actor)
    if outcome not in CONTACT_OUTCOMES:
        raise ValidationError(errors={"outcome": [f"Must be one of: {', '.join(CONTACT_OUTCOMES)}."]})
    params: dict[str, Any] = {"outcome": outcome, "called_at": called_at}
    if outcome in NOT_REACHED:
        if appointment is not None:
            raise ValidationError(errors={"appointment": ["Only a reached customer agrees a window."]})
        return _transition(order_id, "contact_attempt", actor=actor, at=called_at, params=params)
    if appointment is None:
        raise ValidationError(errors={"appointment": ["A reached customer needs an agreed window."]})
    # The status decides between appointing and rescheduling; transition re-checks it under the row lock.
    status = orders.get_order(order_id, actor=actor).status
    action = "reschedule" if status == "appointed" else "appoint"
    params["appointment"] = appointment
    if action == "reschedule":
        params["reason"] = reason
    return _transition(order_id, action, actor=actor, at=called_at, params=params)


def check_in(
    order_id: int, *, lat: float, lng: float, accuracy_m: float, at: datetime, actor: Actor
) -> FieldOrder:
    """Arrive at the site: the arrival clock is met; the distance to the address is recorded, not enforced."""
    _require_engineer(actor)
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise ValidationError(errors={"lat" if not -90 <= lat <= 90 else "lng": ["Out of range."]})
    address = orders.get_order(order_id, actor=actor).address
    radius_m = _setting("CHECKIN_RADIUS_M", 500)
    distance_m: float | None = None
    inside: bool | None = None
    if address.lat is not None and address.lng is not None:
        distance_m = round(geodesic_km((lat, lng), (address.lat, address.lng)) * 1000, 1)
        inside = distance_m <= radius_m
    facts = {
        "distance_m": distance_m,
        "inside_radius": inside,
        "radius_m": radius_m,
        "poor_accuracy": accuracy_m > _setting("CHECKIN_MAX_ACCURACY_M", 100),
    }
    view = _transition(
        order_id,
        "check_in",
        actor=actor,
        at=at,
        params={"lat": lat, "lng": lng, "accuracy_m": accuracy_m, "at": at},
        payload=facts,
    )
    return replace(view, check_in=facts)


def submit_for_acceptance(order_id: int, *, at: datetime | None = None, actor: Actor) -> FieldOrder:
    """Send an install-then-pay order to the acceptance desk (needs the ID photo and the resources)."""
    return _transition(order_id, "submit", actor=actor, at=at, params={})


def complete_order(
    order_id: int,
    *,
    at: datetime | None,
    notes: str | None,
    cause_code: str | None = None,
    actor: Actor,
) -> FieldOrder:
    """Close the order once its checklist passes (the workflow's 409/422 names what is missing)."""
    params: dict[str, Any] = {"notes": notes}
    if cause_code:
        params["cause_code"] = cause_code
    return _transition(order_id, "complete", actor=actor, at=at, params=params)


def return_order(
    order_id: int, *, reason_code: str, note: str | None, at: datetime | None = None, actor: Actor
) -> FieldOrder:
    """Hand the order back to dispatch with a reason; the engineer no longer sees it."""
    return _transition(
        order_id, "return", actor=actor, at=at, params={"reason_code": reason_code, "note": note}
    )


def suspend_order(
    order_id: int,
    *,
    reason_code: str,
    until: datetime | None,
    note: str | None = None,
    at: datetime | None = None,
    actor: Actor,
) -> FieldOrder:
    """Put the order on hold with a reason (customer-caused reasons pause the SLA clocks)."""
    return _transition(
        order_id,
        "suspend",
        actor=actor,
        at=at,
        params={"reason_code": reason_code, "until": until, "note": note},
    )


# --- facts that change no status ----------------------------------------------------------------------


def _power_warnings(power: float | None) -> list[dict[str, str]]:
    if power is None:
        return []
    rules = orders.workflow_rules()
    low = _setting("OPTICAL_POWER_WARN_BELOW_DBM", -25.0)
    if not rules.optical_power_min_dbm <= power <= rules.optical_power_max_dbm:
        return [
            {
                "code": "optical_power_out_of_range",
                "message": f"Optical power {power} dBm is outside {rules.optical_power_min_dbm}.."
                f"{rules.optical_power_max_dbm} dBm: completion needs a reading in range",
            }
        ]
    if power < low:
        return [{"code": "optical_power_low", "message": f"Optical power {power} dBm is below {low} dBm"}]
    return []


def report_resources(
    order_id: int,
    *,
    box_id: str,
    port: str,
    ont_sn: str | None,
    loid: str | None,
    optical_power_dbm: float | None,
    at: datetime | None = None,
    actor: Actor,
) -> FieldOrder:
    """Record the terminal resources (末梢资源) and the optical power; an out-of-range reading is warned."""
    _require_engineer(actor)
    order = orders.get_order(order_id, actor=actor, for_update=True)
    if order.status not in RESOURCE_STATUSES:
        raise InvalidTransition("report_resources", order.status)
    values = {
        "box_id": box_id,
        "port": port,
        "ont_sn": ont_sn,
        "loid": loid,
        "optical_power_dbm": optical_power_dbm,
    }
    warnings = _power_warnings(optical_power_dbm)
    _, flags = _clock_time(at)
    now = utcnow()
    with orders.committing():
        for name, value in values.items():
            setattr(order, name, value)
        order.updated_at = now
        workflow.record_event(
            order,
            "resources_reported",
            actor,
            now=now,
            from_status=order.status,
            to_status=order.status,
            payload={**values, "warnings": [w["code"] for w in warnings], **flags},
            device_time=at,
        )
    return _view(order, actor, warnings=warnings)


@dataclass(frozen=True)
class Position:
    """The position the server kept for the engineer after a heartbeat."""

    engineer_id: int
    lat: float | None
    lng: float | None
    accuracy_m: float | None
    at: datetime | None
    device_time_rejected: bool


def report_location(
    *, lat: float, lng: float, accuracy_m: float | None, at: datetime, actor: Actor
) -> Position:
    """The PDA's position heartbeat (a device clock beyond the skew is replaced by the server's time)."""
    _require_engineer(actor)
    if actor.engineer_id is None:
        raise NotFound("This login is not linked to an engineer")
    # A far-future device time would pin the position: later heartbeats are ignored as older.
    clock_now, flags = _clock_time(at)
    engineer = dispatching.record_position(
        actor.engineer_id, lat=lat, lng=lng, accuracy_m=accuracy_m, at=clock_now or utcnow(), actor=actor
    )
    return Position(
        engineer_id=engineer.id,
        lat=engineer.position_lat,
        lng=engineer.position_lng,
        accuracy_m=engineer.position_accuracy_m,
        at=engineer.position_at,
        device_time_rejected=bool(flags),
    )
