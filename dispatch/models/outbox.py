"""The transactional outbox: side effects (SMS, billing events, escalations) written with the change.

A relay in the scheduler process delivers each row and records the result; ``dedupe_key`` makes a second
write of the same effect a no-op, so nothing is sent twice and nothing is lost when a process dies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dispatch.models.base import Base, BigIntPK, JSONType, UTCDateTime, check_in

OUTBOX_STATUSES = ("pending", "deferred", "sent", "delivered", "undelivered", "failed", "suppressed")


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        sa.CheckConstraint(check_in("status", OUTBOX_STATUSES), name="status"),
        sa.Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(32))  # sms, billing, ...
    dedupe_key: Mapped[str] = mapped_column(sa.String(200), unique=True)
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    recipient: Mapped[str | None] = mapped_column(sa.String(64))
    template: Mapped[str | None] = mapped_column(sa.String(64))
    body: Mapped[str | None] = mapped_column(sa.Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    provider_sid: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    error_code: Mapped[int | None]  # the provider's, e.g. Twilio 21610 (opted out), 30003 (unreachable)
    status_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
