"""Hotline intake (I受理): create an order exactly once per ``external_id``, whatever the retries."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from dispatch import workflow
from dispatch.actors import INTAKE, Actor, require
from dispatch.clock import utcnow
from dispatch.errors import Conflict, ValidationError
from dispatch.extensions import db
from dispatch.models import Address, Customer, District, Order

MAX_ATTEMPTS = 3


def fingerprint(data: dict[str, Any]) -> str:
    """SHA-256 of the canonical request: equal for the same order however its JSON was written."""

    def default(value: Any) -> str:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        raise TypeError(type(value).__name__)

    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=default)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _existing(external_id: str, digest: str) -> Order | None:
    order = db.session.scalar(sa.select(Order).where(Order.external_id == external_id))
    if order is not None and order.intake_fingerprint != digest:
        raise Conflict(
            f"external_id {external_id} was already used for a different order",
            order_id=order.id,
        )
    return order


def intake_order(data: dict[str, Any], *, actor: Actor) -> tuple[Order, bool]:
    """Create the order described by ``data`` (validated by the intake schema) → ``(order, created)``.

    A replay with the same content returns the first order (``created`` False); the same ``external_id``
    with other content is a 409. Concurrent retries race on the unique ``external_id``: the loser rolls
    back and returns the winner's order.
    """
    require(actor, INTAKE, "submit orders")
    digest = fingerprint(data)
    existing = _existing(data["external_id"], digest)
    if existing is not None:
        return existing, False
    district = _district_for(data["address"])
    for attempt in range(MAX_ATTEMPTS):
        try:
            order = _create(data, digest, district, actor)
            db.session.commit()
            return order, True
        except IntegrityError:
            db.session.rollback()
            existing = _existing(data["external_id"], digest)
            if existing is not None:
                return existing, False
            if attempt == MAX_ATTEMPTS - 1:  # a customer-phone race that keeps losing: let the edge map it
                raise
    raise AssertionError("unreachable")


def _district_for(address: dict[str, Any]) -> District | None:
    district = db.session.scalar(sa.select(District).where(District.name == address["district"]))
    if district is None and (address.get("lat") is None or address.get("lng") is None):
        raise ValidationError(
            errors={"address": {"district": [f"Unknown district {address['district']!r}; give lat and lng."]}}
        )
    return district


def _create(data: dict[str, Any], digest: str, district: District | None, actor: Actor) -> Order:
    now = utcnow()
    customer_data, address_data = data["customer"], data["address"]
    customer = db.session.scalar(sa.select(Customer).where(Customer.phone == customer_data["phone"]))
    if customer is None:
        customer = Customer(name=customer_data["name"], phone=customer_data["phone"], created_at=now)
        db.session.add(customer)
    has_position = address_data.get("lat") is not None and address_data.get("lng") is not None
    address = Address(
        customer=customer,
        text=address_data["text"],
        district_name=address_data["district"],
        district_id=district.id if district else None,
        lat=address_data["lat"] if has_position else (district.lat if district else None),
        lng=address_data["lng"] if has_position else (district.lng if district else None),
        location_source="intake" if has_position else "centroid",
    )
    window = data.get("requested_window") or {}
    order = Order(
        external_id=data["external_id"],
        order_type=data["order_type"],
        pay_mode=data["pay_mode"],
        priority=data.get("priority", "normal"),
        customer=customer,
        address=address,
        requested_start=window.get("start"),
        requested_end=window.get("end"),
        products=list(data.get("products") or []),
        notes=data.get("notes"),
        intake_fingerprint=digest,
    )
    db.session.add_all([address, order])
    workflow.record_intake(
        order,
        actor,
        now=now,
        payload={
            "external_id": order.external_id,
            "order_type": order.order_type,
            "pay_mode": order.pay_mode,
        },
    )
    db.session.flush()
    return order
