"""Stored responses for ``Idempotency-Key`` (CONTRACT §3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dispatch.models.base import Base, JSONType, UTCDateTime


class IdempotencyRecord(Base):
    """One per (caller, key). ``response_status`` is NULL while the first request is still in flight."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("principal", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    principal: Mapped[str] = mapped_column(sa.String(64))
    key: Mapped[str] = mapped_column(sa.String(200))
    method: Mapped[str] = mapped_column(sa.String(8))
    path: Mapped[str] = mapped_column(sa.String(500))
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    response_status: Mapped[int | None]
    response_body: Mapped[Any] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
