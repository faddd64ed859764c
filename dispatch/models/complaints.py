"""Complaints from the hotline (投诉), linked to the order, engineer and team they are about."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dispatch.models.base import Base, UTCDateTime, check_in
from dispatch.models.engineers import Engineer, Team
from dispatch.models.orders import Order
from dispatch.vocabulary import COMPLAINT_CATEGORIES, COMPLAINT_CAUSES


class Complaint(Base):
    """One complaint, once per ``external_id``. Engineer, team, district and order type are taken from the
    order when the complaint is recorded: the figures it counts in never move afterwards."""

    __tablename__ = "complaints"
    __table_args__ = (
        sa.CheckConstraint(check_in("category", COMPLAINT_CATEGORIES), name="category"),
        sa.CheckConstraint(check_in("cause", COMPLAINT_CAUSES), name="cause"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    order_external_id: Mapped[str | None] = mapped_column(sa.String(64))
    engineer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("engineers.id"), index=True)
    team_id: Mapped[int | None] = mapped_column(sa.ForeignKey("teams.id"), index=True)
    district: Mapped[str | None] = mapped_column(sa.String(50))
    order_type: Mapped[str | None] = mapped_column(sa.String(32))
    category: Mapped[str] = mapped_column(sa.String(32))
    cause: Mapped[str] = mapped_column(sa.String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    text: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    order: Mapped[Order | None] = relationship(lazy="joined")
    engineer: Mapped[Engineer | None] = relationship(lazy="joined")
    team: Mapped[Team | None] = relationship(lazy="joined")
