"""The billing feed (BOSS): events written with their cause, numbered densely by the feed relay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dispatch.models.base import Base, BigIntPK, JSONType, UTCDateTime, check_in
from dispatch.vocabulary import BILLING_EVENT_TYPES


class BillingEvent(Base):
    """One billing event. ``seq`` is NULL until the relay numbers committed events in one locked statement
    (dispatch/billing/feed.py): a consumer's cursor over ``seq`` can never pass an event still to appear."""

    __tablename__ = "billing_events"
    __table_args__ = (
        sa.CheckConstraint(check_in("type", BILLING_EVENT_TYPES), name="type"),
        sa.Index(
            "ix_billing_events_unnumbered",
            "id",
            postgresql_where=sa.text("seq IS NULL"),
            sqlite_where=sa.text("seq IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(sa.BigInteger, unique=True)
    type: Mapped[str] = mapped_column(sa.String(32))
    dedupe_key: Mapped[str] = mapped_column(sa.String(200), unique=True)
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    numbered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BillingPushState(Base):
    """Where the push to BILLING_WEBHOOK_URL stands: one row; the pusher holds it locked while it sends."""

    __tablename__ = "billing_push_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
