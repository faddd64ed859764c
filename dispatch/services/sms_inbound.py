"""What Twilio tells us: delivery statuses of our messages, and the customers' SMS replies.

Both arrive as webhooks that Twilio may repeat and reorder, so both are idempotent: a status is applied with
one conditional UPDATE that can only move a message forward, and an inbound message is taken once per
``MessageSid`` (the unique ``inbound_messages.message_sid`` decides between concurrent deliveries).
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.extensions import db
from dispatch.models import Customer, InboundMessage, Order, OutboxMessage, SatisfactionResponse, SmsOptOut
from dispatch.phones import InvalidPhone, mask_phone, normalise_cn_mobile
from dispatch.reporting import rollup

log = logging.getLogger(__name__)

SMS_INBOUND = Actor(kind="system", id=None, name="sms-inbound", source="sms")

# Twilio's message statuses that we track → ours. Others (scheduled, canceled, receiving, read, ...) change
# nothing: a status we do not know must not make Twilio retry a callback forever.
TWILIO_STATUSES: dict[str, str] = {
    "accepted": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
}
FINAL_STATUSES = ("delivered", "undelivered", "failed")
# The statuses each of ours may replace: never backwards, and the first final status wins (a late
# "delivered" after "undelivered" is a reordered callback, not news).
_REPLACES: dict[str, tuple[str, ...]] = {
    "sent": ("pending", "deferred"),
    **dict.fromkeys(FINAL_STATUSES, ("pending", "deferred", "sent")),
}
MAX_ERROR_CODE = 2**31 - 1  # an INTEGER column

OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "TD", "退订"}
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "订阅"})
CONFIRM, RESCHEDULE = "1", "2"
SCORES = frozenset("12345")
SATISFACTION_WINDOW = timedelta(days=7)
# Around a reply: spaces and the punctuation people add ("1。", "TD!"); NFKC has already made full-width
# forms ASCII, except the ideographic full stop.
_PUNCTUATION = " .,!?;:~。、"


# --- delivery statuses ----------------------------------------------------------------------------------


def record_status(form: Mapping[str, str], *, now: datetime) -> bool:
    """Apply a Twilio status callback to the outbox row with its ``MessageSid``; True if the row changed."""
    sid = (form.get("MessageSid") or "").strip()
    twilio_status = (form.get("MessageStatus") or "").strip().lower()
    status = TWILIO_STATUSES.get(twilio_status)
    if not sid or status is None:
        log.info("status callback %r for %s ignored: not a status we track", twilio_status, sid or "?")
        return False
    values: dict[str, Any] = {"status": status, "status_updated_at": now}
    error_code = _error_code(form.get("ErrorCode"))
    if status in FINAL_STATUSES and error_code is not None:
        values["error_code"] = error_code
    # One conditional UPDATE: concurrent callbacks for one message serialise on its row, and the WHERE is
    # re-checked after waiting (PostgreSQL READ COMMITTED), so a status can never move backwards.
    result = db.session.execute(
        sa.update(OutboxMessage)
        .where(
            OutboxMessage.provider_sid == sid,
            OutboxMessage.kind == "sms",
            OutboxMessage.status.in_(_REPLACES[status]),
        )
        .values(values)
        .execution_options(synchronize_session=False)
    )
    changed = int(getattr(result, "rowcount", 0) or 0) > 0
    if not changed:
        known = db.session.scalar(
            sa.select(OutboxMessage.status).where(OutboxMessage.provider_sid == sid).limit(1)
        )
        if known is None:
            # Answered with success all the same: Twilio would otherwise retry a callback we can never use.
            log.warning("status callback %r for unknown MessageSid %s ignored", twilio_status, sid)
        else:
            log.info(
                "status callback %r for %s ignored: the message is already %s", twilio_status, sid, known
            )
    db.session.commit()
    return changed


def _error_code(raw: str | None) -> int | None:
    text = (raw or "").strip()
    if not text.isdecimal() or not text.isascii():
        return None
    code = int(text)
    return code if 0 < code <= MAX_ERROR_CODE else None


# --- inbound messages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reading:
    """What an inbound message means, decided before anything is written."""

    handled_as: str
    phone: str | None = None
    keyword: str | None = None
    order: Order | None = None
    score: int | None = None


def handle_inbound(form: Mapping[str, str], *, now: datetime) -> str:
    """Take one inbound SMS once per ``MessageSid`` and return what it was handled as (a replay: the same)."""
    sid = (form.get("MessageSid") or "").strip()
    if not sid:
        raise ValueError("an inbound message needs its MessageSid")
    raw_from = (form.get("From") or "").strip()
    body = form.get("Body") or ""
    seen = _handled_as(sid)
    if seen is not None:
        db.session.commit()  # ends the read (on SQLite it holds the write lock)
        return seen

    reading = _read(raw_from, body, now)
    message = InboundMessage(
        message_sid=sid,
        from_phone=(reading.phone or raw_from)[:32],
        body=body[:1600],
        received_at=now,
        handled_as=reading.handled_as,
        order_id=reading.order.id if reading.order is not None else None,
    )
    try:
        db.session.add(message)
        db.session.flush()  # first: a concurrent delivery of the same message waits here, then fails
        _apply(reading, sid, now)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        seen = _handled_as(sid)
        if seen is None:
            raise
        db.session.commit()
        return seen
    log.info(
        "inbound SMS %s from %s handled as %s",
        sid,
        mask_phone(reading.phone) if reading.phone else "a non-CN number",
        reading.handled_as,
    )
    return reading.handled_as


def _handled_as(sid: str) -> str | None:
    return db.session.scalar(sa.select(InboundMessage.handled_as).where(InboundMessage.message_sid == sid))


def normalise_reply(body: str) -> str:
    """A reply as compared with the keywords: full-width forms folded (NFKC), trimmed, upper case."""
    text = " ".join(unicodedata.normalize("NFKC", body).split())
    return text.strip(_PUNCTUATION).upper()


def _read(raw_from: str, body: str, now: datetime) -> _Reading:
    try:
        phone = normalise_cn_mobile(raw_from)
    except InvalidPhone:
        return _Reading("ignored")
    reply = normalise_reply(body)
    if reply in OPT_OUT_KEYWORDS:
        return _Reading("opt_out", phone=phone, keyword=reply)
    if reply in OPT_IN_KEYWORDS:
        return _Reading("opt_in", phone=phone, keyword=reply)
    if reply not in SCORES:
        return _Reading("unrecognised", phone=phone)
    customer_id = db.session.scalar(sa.select(Customer.id).where(Customer.phone == phone))
    if customer_id is None:
        return _Reading("unrecognised", phone=phone)
    if reply in (CONFIRM, RESCHEDULE):
        appointed = _appointed_order(customer_id)
        if appointed is not None:
            return _Reading("confirm" if reply == CONFIRM else "reschedule", phone=phone, order=appointed)
    completed = _order_awaiting_score(customer_id, now)
    if completed is not None:
        return _Reading("satisfaction", phone=phone, order=completed, score=int(reply))
    return _Reading("unrecognised", phone=phone)


def _locked(query: sa.Select[Order]) -> Order | None:
    """The first row of ``query``, row-locked on PostgreSQL so replies about one order are taken in turn."""
    return db.session.scalar(
        query.limit(1).with_for_update(of=Order).execution_options(populate_existing=True)
    )


def _appointed_order(customer_id: int) -> Order | None:
    """The customer's latest order waiting for its appointment."""
    return _locked(
        sa.select(Order)
        .where(Order.customer_id == customer_id, Order.status == "appointed")
        .order_by(Order.created_at.desc(), Order.id.desc())
    )


def _scored(order_id: int) -> sa.Exists:
    return sa.exists().where(SatisfactionResponse.order_id == order_id)


def _order_awaiting_score(customer_id: int, now: datetime) -> Order | None:
    """The customer's latest order completed in the last 7 days that has no score yet."""
    order = _locked(
        sa.select(Order)
        .where(
            Order.customer_id == customer_id,
            Order.status == "completed",
            Order.completed_at >= now - SATISFACTION_WINDOW,
            Order.completed_at <= now,
            ~sa.exists().where(SatisfactionResponse.order_id == Order.id),
        )
        .order_by(Order.completed_at.desc(), Order.id.desc())
    )
    # Asked again once the lock is ours: a concurrent reply may have scored it while we waited.
    if order is not None and db.session.scalar(sa.select(_scored(order.id))):
        return None
    return order


def _apply(reading: _Reading, sid: str, now: datetime) -> None:
    """The effects of an inbound message, in the transaction that records it."""
    order = reading.order
    if reading.handled_as == "opt_out" and reading.phone and reading.keyword:
        _opt_out(reading.phone, reading.keyword, now)
    elif reading.handled_as == "opt_in" and reading.phone:
        db.session.execute(sa.delete(SmsOptOut).where(SmsOptOut.phone == reading.phone))
    elif reading.handled_as == "confirm" and order is not None:
        _event(order, "customer_confirmed", now, {"message_sid": sid, **_appointment(order)})
    elif reading.handled_as == "reschedule" and order is not None:
        _event(order, "customer_reschedule_requested", now, {"message_sid": sid, **_appointment(order)})
        _alert_engineer(order, sid, now)
    elif reading.handled_as == "satisfaction" and order is not None and reading.score is not None:
        db.session.add(
            SatisfactionResponse(
                order_id=order.id,
                phone=reading.phone,
                score=reading.score,
                received_at=now,
                message_sid=sid,
            )
        )
        _event(order, "satisfaction_recorded", now, {"message_sid": sid, "score": reading.score})
        rollup.on_satisfaction(order, reading.score, now)


def _appointment(order: Order) -> dict[str, Any]:
    """The window the reply is about (a later reschedule moves it; the event keeps this one)."""
    return {"appointment": {"start": order.appointment_start, "end": order.appointment_end}}


def _event(order: Order, action: str, now: datetime, payload: dict[str, Any]) -> None:
    # A fact about the order, not a status change: the status stays, and the order row is not updated (no
    # version bump that would turn an engineer's concurrent update into a 409).
    workflow.record_event(
        order, action, SMS_INBOUND, now=now, from_status=order.status, to_status=order.status, payload=payload
    )


def _alert_engineer(order: Order, sid: str, now: datetime) -> None:
    """An SMS to the order's engineer that the customer asks for another time (sent by the outbox relay)."""
    engineer = order.engineer
    if engineer is None or not engineer.phone:
        log.warning("order %s: reschedule request %s has no engineer to tell", order.id, sid)
        return
    db.session.add(
        OutboxMessage(
            kind="sms",
            dedupe_key=f"inbound:{sid}:engineer",
            order_id=order.id,
            recipient=engineer.phone,
            template="reschedule_request",
            body=None,
            payload={
                "recipient_role": "engineer",
                "order_id": order.id,
                "external_id": order.external_id,
                "engineer_id": engineer.id,
                "message_sid": sid,
            },
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


def _opt_out(phone: str, keyword: str, now: datetime) -> None:
    """Record the opt-out; a number already opted out keeps its first keyword and time (also under races)."""
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    row = {"phone": phone, "keyword": keyword[:16], "opted_out_at": now}
    db.session.execute(insert(SmsOptOut).values(row).on_conflict_do_nothing())
