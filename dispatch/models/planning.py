"""Day plans: a proposal of which engineer visits which order when, and its visits in route order."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dispatch.models.base import Base, JSONType, UTCDateTime, check_in

PLAN_STATUSES = ("proposed", "accepted", "discarded")


class DayPlan(Base):
    """One planner run for a local day and some districts; proposed, then accepted or discarded once."""

    __tablename__ = "day_plans"
    __table_args__ = (
        sa.CheckConstraint(check_in("status", PLAN_STATUSES), name="status"),
        sa.Index("ix_day_plans_day_status", "day", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    district_ids: Mapped[list[int]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(sa.String(16))
    proposed_by: Mapped[str] = mapped_column(sa.String(100))
    proposed_by_id: Mapped[int | None]
    proposed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(sa.String(100))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    speed_kmh: Mapped[float]
    time_limit_seconds: Mapped[float]
    solve_seconds: Mapped[float] = mapped_column(default=0.0)
    travel_before_m: Mapped[int]
    travel_after_m: Mapped[int]
    orders_count: Mapped[int]
    planned_count: Mapped[int]
    # Per engineer: {engineer_id, start ("live"/"home"/"district"), shift [open, close] in local seconds,
    # capacity, travel_before_m, travel_after_m}.
    engineers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # [{order_id, external_id, reason, message}]: the orders the plan does not serve, and why.
    unplanned: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # What accepting did: {assigned: [...], unchanged: [...], skipped: [...]}.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    visits: Mapped[list[PlanVisit]] = relationship(
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by=lambda: [PlanVisit.engineer_id, PlanVisit.sequence],
    )


class PlanVisit(Base):
    """One stop of a plan: the order, the engineer, where in the route, and the planned service start."""

    __tablename__ = "plan_visits"
    __table_args__ = (sa.UniqueConstraint("plan_id", "order_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(sa.ForeignKey("day_plans.id", ondelete="CASCADE"), index=True)
    engineer_id: Mapped[int] = mapped_column(sa.ForeignKey("engineers.id"))
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    sequence: Mapped[int]
    eta: Mapped[datetime] = mapped_column(UTCDateTime)  # the planned service start
    arrival: Mapped[datetime] = mapped_column(UTCDateTime)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)  # the window the planner kept to
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    leg_m: Mapped[int]  # from the previous stop (or the engineer's start)
    pinned: Mapped[bool]
    # The order as it was when proposed: accepting skips an order that has moved on since.
    engineer_before_id: Mapped[int | None] = mapped_column(sa.ForeignKey("engineers.id"))
    order_status: Mapped[str] = mapped_column(sa.String(32))
    order_version: Mapped[int]
