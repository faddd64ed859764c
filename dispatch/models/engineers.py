"""Field engineers (装维经理) and their teams: skills, districts, shifts, home position, capacity."""

from __future__ import annotations

from datetime import date, datetime, time

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dispatch.models.base import Base, UTCDateTime, check_in
from dispatch.models.geo import District
from dispatch.vocabulary import ORDER_TYPES


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    leader_name: Mapped[str | None] = mapped_column(sa.String(64))
    leader_phone: Mapped[str | None] = mapped_column(sa.String(20))


engineer_districts = sa.Table(
    "engineer_districts",
    Base.metadata,
    sa.Column("engineer_id", sa.ForeignKey("engineers.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("district_id", sa.ForeignKey("districts.id"), primary_key=True),
)


class EngineerSkill(Base):
    __tablename__ = "engineer_skills"
    __table_args__ = (sa.CheckConstraint(check_in("order_type", ORDER_TYPES), name="order_type"),)

    engineer_id: Mapped[int] = mapped_column(
        sa.ForeignKey("engineers.id", ondelete="CASCADE"), primary_key=True
    )
    order_type: Mapped[str] = mapped_column(sa.String(32), primary_key=True)


class EngineerShift(Base):
    """A weekly working window; ``weekday`` is ISO (1 = Monday … 7 = Sunday), times in DISPATCH_TZ."""

    __tablename__ = "engineer_shifts"
    __table_args__ = (
        sa.CheckConstraint("weekday BETWEEN 1 AND 7", name="weekday"),
        sa.CheckConstraint("start_time < end_time", name="start_before_end"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    engineer_id: Mapped[int] = mapped_column(sa.ForeignKey("engineers.id", ondelete="CASCADE"), index=True)
    weekday: Mapped[int]
    start_time: Mapped[time]
    end_time: Mapped[time]


class EngineerLeave(Base):
    """Days off (inclusive local dates, DISPATCH_TZ): the engineer is not proposed or auto-assigned then."""

    __tablename__ = "engineer_leaves"
    __table_args__ = (sa.CheckConstraint("start_date <= end_date", name="dates"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    engineer_id: Mapped[int] = mapped_column(sa.ForeignKey("engineers.id", ondelete="CASCADE"), index=True)
    start_date: Mapped[date]
    end_date: Mapped[date]
    reason: Mapped[str | None] = mapped_column(sa.String(100))


class Engineer(Base):
    __tablename__ = "engineers"
    __table_args__ = (sa.CheckConstraint("daily_capacity >= 0", name="daily_capacity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(32), unique=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    phone: Mapped[str] = mapped_column(sa.String(20))
    team_id: Mapped[int | None] = mapped_column(sa.ForeignKey("teams.id"), index=True)
    home_lat: Mapped[float | None]
    home_lng: Mapped[float | None]
    # The live position from the PDA's location heartbeat; the home position stands in until it is fresh.
    position_lat: Mapped[float | None]
    position_lng: Mapped[float | None]
    position_accuracy_m: Mapped[float | None]
    position_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    daily_capacity: Mapped[int] = mapped_column(default=6)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    team: Mapped[Team | None] = relationship(lazy="joined")
    skill_rows: Mapped[list[EngineerSkill]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by=EngineerSkill.order_type
    )
    districts: Mapped[list[District]] = relationship(
        secondary=engineer_districts, lazy="selectin", order_by=District.name
    )
    shifts: Mapped[list[EngineerShift]] = relationship(
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by=(EngineerShift.weekday, EngineerShift.start_time),
    )

    leaves: Mapped[list[EngineerLeave]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by=lambda: EngineerLeave.start_date
    )

    @property
    def skills(self) -> list[str]:
        return [s.order_type for s in self.skill_rows]
