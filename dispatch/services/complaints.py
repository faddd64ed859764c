"""Complaints (投诉) from the hotline: recorded once per ``external_id``, counted in the KPIs, billed."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from dispatch.actors import READ_COMPLAINTS, RECORD_COMPLAINTS, Actor, require
from dispatch.billing import events as billing_events
from dispatch.clock import utcnow
from dispatch.errors import Conflict, NotFound, ValidationError
from dispatch.extensions import db
from dispatch.models import Complaint, Order
from dispatch.reporting import kpi, rollup
from dispatch.services.intake import fingerprint
from dispatch.services.paging import page_of
from dispatch.timeutil import business_day, local_day_bounds

MAX_ATTEMPTS = 3


def record_complaint(data: dict[str, Any], *, actor: Actor) -> tuple[Complaint, bool]:
    """Record the complaint described by ``data`` → ``(complaint, created)``.

    Idempotent on ``external_id`` as hotline orders are: the same content again returns the first complaint,
    other content is a 409; concurrent retries race on the unique ``external_id`` and the loser finds the
    winner's row. The complaint counts for the order's engineer, team and district as they are now.
    """
    require(actor, RECORD_COMPLAINTS, "record complaints")
    digest = fingerprint(data)
    now = utcnow()
    skew = timedelta(seconds=int(current_app.config.get("DEVICE_CLOCK_SKEW_SECONDS", 300)))
    if data["received_at"] > now + skew:
        raise ValidationError(errors={"received_at": ["Must not be in the future."]})
    for _ in range(MAX_ATTEMPTS):
        existing = db.session.scalar(sa.select(Complaint).where(Complaint.external_id == data["external_id"]))
        if existing is not None:
            if existing.fingerprint != digest:
                raise Conflict(
                    f"external_id {data['external_id']} was already used for a different complaint",
                    complaint_id=existing.id,
                )
            return existing, False
        try:
            complaint = _create(data, digest, now)
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            continue
        return complaint, True
    raise Conflict(f"external_id {data['external_id']} is being recorded concurrently; retry")


def _create(data: dict[str, Any], digest: str, now: datetime) -> Complaint:
    order = None
    if data.get("order_external_id"):
        order = db.session.scalar(sa.select(Order).where(Order.external_id == data["order_external_id"]))
        if order is None:
            raise ValidationError(errors={"order_external_id": ["Unknown order."]})
    dims = rollup.current_facts(order).dims if order is not None else kpi.Dims("", "")
    complaint = Complaint(
        external_id=data["external_id"],
        fingerprint=digest,
        order_id=order.id if order is not None else None,
        order_external_id=data.get("order_external_id"),
        engineer_id=dims.engineer_id or None,
        team_id=dims.team_id or None,
        district=dims.district or None,
        order_type=dims.order_type or None,
        category=data["category"],
        cause=data["cause"],
        received_at=data["received_at"],
        text=data["text"],
        created_at=now,
    )
    complaint.order = order
    db.session.add(complaint)
    db.session.flush()
    rollup.emit(
        kpi.complaint_contributions(
            complaint.category, complaint.cause, day=business_day(complaint.received_at), dims=dims
        )
    )
    billing_events.complaint_recorded(complaint, now=now)
    return complaint


def list_complaints(
    *,
    actor: Actor,
    page: int,
    page_size: int,
    category: str | None = None,
    cause: str | None = None,
    order_id: int | None = None,
    engineer_id: int | None = None,
    team_id: int | None = None,
    district: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> tuple[list[Complaint], int]:
    """A page of complaints, newest first, and the total; ``start``/``end`` are business days (inclusive)."""
    require(actor, READ_COMPLAINTS, "read complaints")
    query = sa.select(Complaint)
    for column, value in (
        (Complaint.category, category),
        (Complaint.cause, cause),
        (Complaint.order_id, order_id),
        (Complaint.engineer_id, engineer_id),
        (Complaint.team_id, team_id),
        (Complaint.district, district),
    ):
        if value is not None:
            query = query.where(column == value)
    if start is not None:
        query = query.where(Complaint.received_at >= local_day_bounds(start)[0])
    if end is not None:
        query = query.where(Complaint.received_at < local_day_bounds(end)[1])
    return page_of(query, Complaint.received_at.desc(), Complaint.id.desc(), page=page, page_size=page_size)


def get_complaint(complaint_id: int, *, actor: Actor) -> Complaint:
    """One complaint; unknown → 404."""
    require(actor, READ_COMPLAINTS, "read complaints")
    complaint = db.session.get(Complaint, complaint_id) if 0 < complaint_id < 2**31 else None
    if complaint is None:
        raise NotFound(f"Complaint {complaint_id} not found")
    return complaint
