"""Customers, addresses, work orders, their append-only event log and field attachments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dispatch.models.base import Base, BigIntPK, JSONType, UTCDateTime, check_in
from dispatch.models.engineers import Engineer
from dispatch.models.geo import District
from dispatch.models.sla import SlaClock
from dispatch.vocabulary import (
    ATTACHMENT_KINDS,
    EXCLUSION_REASONS,
    ORDER_TYPES,
    PAY_MODES,
    PRIORITIES,
    STATUSES,
)


class Customer(Base):
    """A subscriber, identified by mobile number (E.164) so repeat repairs can be recognised."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    phone: Mapped[str] = mapped_column(sa.String(20), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Address(Base):
    """A service address. ``location_source`` says where lat/lng came from: intake, centroid or geocoder."""

    __tablename__ = "addresses"
    __table_args__ = (
        sa.CheckConstraint(
            check_in("location_source", ("intake", "centroid", "geocoded")), name="location_source"
        ),
        sa.Index(
            "ix_addresses_geocode_next_at",
            "geocode_next_at",
            postgresql_where=sa.text("geocode_next_at IS NOT NULL"),
            sqlite_where=sa.text("geocode_next_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    text: Mapped[str] = mapped_column(sa.String(500))
    district_name: Mapped[str] = mapped_column(sa.String(50))
    district_id: Mapped[int | None] = mapped_column(sa.ForeignKey("districts.id"), index=True)
    lat: Mapped[float | None]
    lng: Mapped[float | None]
    location_source: Mapped[str] = mapped_column(sa.String(16))
    # A centroid stands in until the geocoder answers: when to ask (again), and how often it was asked.
    geocode_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    geocode_attempts: Mapped[int] = mapped_column(default=0, server_default="0")

    district: Mapped[District | None] = relationship(lazy="joined")
    customer: Mapped[Customer] = relationship()


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        sa.CheckConstraint(check_in("order_type", ORDER_TYPES), name="order_type"),
        sa.CheckConstraint(check_in("pay_mode", PAY_MODES), name="pay_mode"),
        sa.CheckConstraint(check_in("priority", PRIORITIES), name="priority"),
        sa.CheckConstraint(check_in("status", STATUSES), name="status"),
        sa.CheckConstraint(
            "requested_end IS NULL OR requested_end > requested_start", name="requested_window"
        ),
        sa.CheckConstraint(
            "appointment_end IS NULL OR appointment_end > appointment_start", name="appointment_window"
        ),
        sa.Index("ix_orders_status_order_type", "status", "order_type"),
        sa.Index("ix_orders_engineer_id_status", "engineer_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    order_type: Mapped[str] = mapped_column(sa.String(32))
    pay_mode: Mapped[str] = mapped_column(sa.String(32))
    priority: Mapped[str] = mapped_column(sa.String(16), default="normal")
    status: Mapped[str] = mapped_column(sa.String(32))
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    address_id: Mapped[int] = mapped_column(sa.ForeignKey("addresses.id"))
    engineer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("engineers.id"))
    requested_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    requested_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    appointment_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    appointment_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    products: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    notes: Mapped[str | None] = mapped_column(sa.Text)
    # SHA-256 of the canonical intake request, to tell a replay from a conflicting reuse of external_id.
    intake_fingerprint: Mapped[str] = mapped_column(sa.String(64))
    # Suspension: where to return to, why, and until when.
    status_before_suspend: Mapped[str | None] = mapped_column(sa.String(32))
    suspend_reason: Mapped[str | None] = mapped_column(sa.String(32))
    suspended_until: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    return_reason: Mapped[str | None] = mapped_column(sa.String(32))
    cancel_reason: Mapped[str | None] = mapped_column(sa.String(500))
    cancel_reason_code: Mapped[str | None] = mapped_column(sa.String(32))
    # Auto-dispatch found nobody: not before this time again (dispatch.services.dispatching.sweep).
    auto_dispatch_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The service start an accepted day plan gave the order (the customer's SMS may show it); cleared when
    # the order is assigned elsewhere, returned or cancelled (dispatch.workflow.apply).
    planned_eta: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Terminal resources (末梢资源) reported from the site.
    box_id: Mapped[str | None] = mapped_column(sa.String(64))
    port: Mapped[str | None] = mapped_column(sa.String(32))
    ont_sn: Mapped[str | None] = mapped_column(sa.String(64))
    loid: Mapped[str | None] = mapped_column(sa.String(64))
    optical_power_dbm: Mapped[float | None]
    repair_cause: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(default=1)

    customer: Mapped[Customer] = relationship(lazy="joined")
    address: Mapped[Address] = relationship(lazy="joined")
    engineer: Mapped[Engineer | None] = relationship(lazy="joined")
    events: Mapped[list[OrderEvent]] = relationship(order_by="OrderEvent.id", lazy="select", viewonly=True)
    sla_clocks: Mapped[list[SlaClock]] = relationship(order_by="SlaClock.id", lazy="selectin", viewonly=True)
    exclusions: Mapped[list[AssignmentExclusion]] = relationship(lazy="select", cascade="all, delete-orphan")
    attachments: Mapped[list[Attachment]] = relationship(
        order_by="Attachment.id", lazy="select", viewonly=True
    )

    # Optimistic concurrency: a stale write raises StaleDataError (→ 409) instead of overwriting.
    __mapper_args__ = {"version_id_col": version}


class AssignmentExclusion(Base):
    """An engineer auto-dispatch must not give this order again (they returned it or let ``take`` breach);
    a dispatcher may still choose them by hand."""

    __tablename__ = "assignment_exclusions"
    __table_args__ = (sa.CheckConstraint(check_in("reason", EXCLUSION_REASONS), name="reason"),)

    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), primary_key=True)
    engineer_id: Mapped[int] = mapped_column(sa.ForeignKey("engineers.id"), primary_key=True)
    reason: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OrderEvent(Base):
    """One row per transition or field fact; append-only (database triggers refuse UPDATE and DELETE)."""

    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    action: Mapped[str] = mapped_column(sa.String(32))
    from_status: Mapped[str | None] = mapped_column(sa.String(32))
    to_status: Mapped[str | None] = mapped_column(sa.String(32))
    actor_type: Mapped[str] = mapped_column(sa.String(16))  # user, api_key, system
    actor_id: Mapped[int | None]
    actor_name: Mapped[str] = mapped_column(sa.String(100))
    source: Mapped[str] = mapped_column(sa.String(16))  # api, mobile, intake, scheduler, cli, console
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    device_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    order: Mapped[Order] = relationship(lazy="raise_on_sql")


class Attachment(Base):
    """A photo or signature from the site; the file lives under UPLOAD_DIR, named by its SHA-256."""

    __tablename__ = "attachments"
    __table_args__ = (
        sa.CheckConstraint(check_in("kind", ATTACHMENT_KINDS), name="kind"),
        sa.UniqueConstraint("order_id", "sha256", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    content_type: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int]
    storage_path: Mapped[str] = mapped_column(sa.String(255))
    uploaded_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
