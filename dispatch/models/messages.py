"""SMS beyond the outbox: templates admins edit, opted-out numbers, inbound replies, satisfaction."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from dispatch.models.base import Base, BigIntPK, UTCDateTime


class SmsTemplate(Base):
    """An admin's version of a message template; without a row the built-in default applies."""

    __tablename__ = "sms_templates"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    body: Mapped[str] = mapped_column(sa.Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))


class SmsOptOut(Base):
    """A number that sent STOP, TD or 退订: no customer message goes to it until it sends START."""

    __tablename__ = "sms_opt_outs"

    phone: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    keyword: Mapped[str] = mapped_column(sa.String(16))
    opted_out_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboundMessage(Base):
    """Every inbound SMS once (Twilio retries a webhook it got no answer to), with what it was taken as."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    message_sid: Mapped[str] = mapped_column(sa.String(64), unique=True)
    from_phone: Mapped[str] = mapped_column(sa.String(32))
    body: Mapped[str] = mapped_column(sa.String(1600))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    handled_as: Mapped[str] = mapped_column(sa.String(32))  # opt_out, opt_in, confirm, reschedule, ...
    order_id: Mapped[int | None] = mapped_column(sa.ForeignKey("orders.id"), index=True)


class SatisfactionResponse(Base):
    """The customer's 1–5 answer to the completion SMS; the first answer per order counts."""

    __tablename__ = "satisfaction_responses"
    __table_args__ = (sa.CheckConstraint("score BETWEEN 1 AND 5", name="score"),)

    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), primary_key=True)
    phone: Mapped[str] = mapped_column(sa.String(20))
    score: Mapped[int]
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    message_sid: Mapped[str | None] = mapped_column(sa.String(64))
