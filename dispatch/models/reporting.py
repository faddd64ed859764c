"""KPI rollups: deltas written with their cause, folded into daily totals (dispatch/reporting/rollup.py)."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dispatch.models.base import Base, BigIntPK, UTCDateTime, check_in

GROUPINGS = ("order_type", "district", "team", "engineer")


class KpiDelta(Base):
    """A change to one KPI counter, written in the transaction that causes it (insert only: no hot row
    for concurrent transactions to queue on). The fold moves it into :class:`KpiDaily` and deletes it in
    one transaction, so each delta counts exactly once; reports add the deltas not folded yet.

    ``district`` is '' and ``team_id``/``engineer_id`` are 0 when unknown (unassigned orders)."""

    __tablename__ = "kpi_deltas"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(sa.Date)
    order_type: Mapped[str] = mapped_column(sa.String(32))
    district: Mapped[str] = mapped_column(sa.String(50))
    team_id: Mapped[int]
    engineer_id: Mapped[int]
    metric: Mapped[str] = mapped_column(sa.String(48))
    value: Mapped[int]


class KpiDaily(Base):
    """Daily totals per grouping: ``key`` is '' for the whole city (grouping ``order_type``), the district
    name, or the team or engineer id as text. Every row also splits by order type."""

    __tablename__ = "kpi_daily"
    __table_args__ = (sa.CheckConstraint(check_in("grouping", GROUPINGS), name="grouping"),)

    # Grouping first: a report reads one grouping's days, a contiguous range of the primary key.
    grouping: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    order_type: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    metric: Mapped[str] = mapped_column(sa.String(48), primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger)


class KpiDayClose(Base):
    """A business day whose ``kpi.daily`` billing events were written (once, by whichever scheduler)."""

    __tablename__ = "kpi_day_closes"

    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class KpiOrderFacts(Base):
    """What one order contributes to the KPIs now (dispatch/reporting/kpi.py ``OrderFacts``): the rollup
    subtracts the old contribution and adds the new one when it changes. No row: the order is as received
    (unassigned, open); intake writes none, to stay short."""

    __tablename__ = "kpi_order_facts"

    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), primary_key=True)
    received_day: Mapped[date] = mapped_column(sa.Date)
    order_type: Mapped[str] = mapped_column(sa.String(32))
    district: Mapped[str] = mapped_column(sa.String(50))
    team_id: Mapped[int]
    engineer_id: Mapped[int]
    outcome: Mapped[str] = mapped_column(sa.String(16))  # open, completed, excluded
    on_time: Mapped[bool]
    completed_day: Mapped[date | None] = mapped_column(sa.Date)
    single_visit: Mapped[bool]
    repeated: Mapped[bool]  # a repair of the same customer came in within 30 days of this one's completion
