"""SLA policies, the clocks of each order (rows with deadlines: DESIGN.md decision 4) and their alerts."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dispatch.models.base import Base, BigIntPK, UTCDateTime, check_in
from dispatch.vocabulary import ORDER_TYPES

CLOCKS = ("take", "contact", "arrival", "acceptance", "completion")
CLOCK_STATUSES = ("running", "paused", "met", "breached", "cancelled")
ALERT_KINDS = ("warning", "breach")


class SlaPolicy(Base):
    """Target and warning threshold of one clock for one order type (admins change them)."""

    __tablename__ = "sla_policies"
    __table_args__ = (
        sa.CheckConstraint(check_in("order_type", ORDER_TYPES), name="order_type"),
        sa.CheckConstraint(check_in("clock", CLOCKS), name="clock"),
        sa.CheckConstraint("target_seconds >= 0", name="target_seconds"),
        sa.CheckConstraint("warn_percent BETWEEN 1 AND 100", name="warn_percent"),
    )

    order_type: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    clock: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    target_seconds: Mapped[int]
    warn_percent: Mapped[int]
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


_LIVE = sa.text("status = 'running'")


class SlaClock(Base):
    """One clock of one order; ``warn_at`` and ``due_at`` include paused time, the tick reads only them."""

    __tablename__ = "sla_clocks"
    __table_args__ = (
        sa.CheckConstraint(check_in("clock", CLOCKS), name="clock"),
        sa.CheckConstraint(check_in("status", CLOCK_STATUSES), name="status"),
        # At most one live clock of a kind per order: a second start is a bug, not a second deadline.
        sa.Index(
            "ix_sla_clocks_order_id_clock_live",
            "order_id",
            "clock",
            unique=True,
            postgresql_where=sa.text("status IN ('running', 'paused')"),
            sqlite_where=sa.text("status IN ('running', 'paused')"),
        ),
        # The tick's two claims read only these partial indexes: cost follows due clocks, not all clocks.
        sa.Index("ix_sla_clocks_due_at_running", "due_at", postgresql_where=_LIVE, sqlite_where=_LIVE),
        sa.Index(
            "ix_sla_clocks_warn_at_unwarned",
            "warn_at",
            postgresql_where=sa.text("status = 'running' AND warned_at IS NULL"),
            sqlite_where=sa.text("status = 'running' AND warned_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    clock: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    engineer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("engineers.id"))
    target_seconds: Mapped[int]
    warn_percent: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    warn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_seconds: Mapped[int] = mapped_column(default=0)
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(sa.String(32))  # e.g. "provider_reschedule", "reassigned"


class Alert(Base):
    """A warning or breach for the dispatchers; at most one of each kind per clock (a unique constraint)."""

    __tablename__ = "alerts"
    __table_args__ = (
        sa.CheckConstraint(check_in("kind", ALERT_KINDS), name="kind"),
        sa.UniqueConstraint("clock_id", "kind"),
        sa.Index("ix_alerts_acknowledged_at_created_at", "acknowledged_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    clock_id: Mapped[int] = mapped_column(sa.ForeignKey("sla_clocks.id"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    clock: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
