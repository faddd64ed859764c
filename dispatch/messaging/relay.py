"""The SMS relay: deliver the outbox's SMS rows, exactly once per dedupe key (the scheduler's ``sms-relay``).

:func:`deliver_pending` claims due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a conditional UPDATE where
SQLite serialises writers with ``BEGIN IMMEDIATE``), those with an unknown outcome first, by moving their
``next_attempt_at`` a lease ahead and counting the attempt, and commits the claim before anything else. Then,
for each row: render the body if the row has none; suppress a customer message to an opted-out number (or one
whose reason is gone, such as a reminder for a moved appointment); defer a customer message in QUIET_HOURS to
the window's end; defer any message over the per-number limit until the oldest send to that number leaves the
hour; then deliver it.

``SMS_BACKEND=outbox`` records the message as sent (no network, no provider sid). ``SMS_BACKEND=twilio``:

1. a row whose earlier attempt may have reached Twilio (a timeout, a dropped connection, a sender killed in
   mid-request) is first looked up at Twilio (:func:`twilio_sms.find_sent`): a message found is adopted, and
   the row is sent without a second request;
2. before the request the row is marked ``outcome unknown ... in flight`` and its lease renewed, in a
   committed transaction: a sender killed during the request leaves that mark, so the next attempt looks
   before it sends;
3. the answer decides: accepted → ``sent`` with the sid; refused for now → ``pending`` with exponential
   backoff (``failed`` after SMS_MAX_ATTEMPTS); refused for good → ``failed`` with Twilio's code; no answer
   → ``pending`` like a refusal but flagged (payload ``unconfirmed_send``) so every later attempt looks first.

Every write is conditioned on the lease (``next_attempt_at`` and ``attempts`` as the claim left them), so a
sender that lost its lease (stalled past it while another took the row) changes nothing. No transaction is
open during a request to Twilio; outcomes without a request are committed together before the next request.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app

from dispatch.clock import utcnow
from dispatch.config import SMS_BACKENDS, ConfigError
from dispatch.extensions import db
from dispatch.logs import log_exception
from dispatch.messaging import policy, templates, twilio_sms
from dispatch.models import OutboxMessage, SmsOptOut
from dispatch.services import sms_inbound

log = logging.getLogger("dispatch.sms")

BATCH = 100
DUE = ("pending", "deferred")
# Rows that went out (a status callback may since have moved them on); they count against the hourly limit.
WENT_OUT = ("sent", "delivered", "undelivered", "failed")
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
UNKNOWN_MARK = "outcome unknown"
UNCONFIRMED = "unconfirmed_send"  # payload flag: some attempt may have reached Twilio
# A lease covers one step after its renewal: a look-up (at most two requests) or one send, each at most
# TWILIO_TIMEOUT_SECONDS; the rest is margin for the database.
LEASE_MARGIN = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)
# Failed requests in a row after which Twilio counts as unavailable: the batch's other rows are put back
# for later without an attempt, so an outage costs a few timeouts per run, not one per message.
UNAVAILABLE_AFTER = 3
RATE_WINDOW = timedelta(hours=1)
_ERROR_LENGTH = 500  # outbox.last_error is a String(500)


@dataclass
class RelayResult:
    """One run of the job: messages sent, deferred, suppressed, failed for good, to be retried."""

    sent: int = 0
    deferred: int = 0
    suppressed: int = 0
    failed: int = 0
    retried: int = 0

    def __bool__(self) -> bool:
        return bool(self.sent or self.deferred or self.suppressed or self.failed or self.retried)


@dataclass
class _Claimed:
    """A claimed row (a detached copy, never added to the session) and the lease that makes it ours."""

    message: OutboxMessage
    until: datetime
    attempts: int


def lease_length(timeout_seconds: float) -> timedelta:
    return LEASE_MARGIN + timedelta(seconds=3 * timeout_seconds)


def retry_delay(attempts: int, base_seconds: float) -> timedelta:
    """How long to wait after the ``attempts``-th attempt failed: ``base``, doubling, at most an hour."""
    exponent = min(max(attempts, 1) - 1, 20)  # 2**20 × base is far past the cap; no huge numbers
    return min(timedelta(seconds=base_seconds) * (1 << exponent), MAX_RETRY)


def limited_until(sent_times: Sequence[datetime], limit: int, now: datetime) -> datetime | None:
    """When a number that was sent messages at ``sent_times`` may be sent one more under ``limit`` per
    hour: None if now, else the moment enough of them have left the hour."""
    recent = sorted(t for t in sent_times if t > now - RATE_WINDOW)
    if len(recent) < limit:
        return None
    return recent[len(recent) - limit] + RATE_WINDOW


# --- claims and lease-conditioned writes ----------------------------------------------------------------

_COLUMNS = [column for column in OutboxMessage.__table__.c]


def _claim(now: datetime, lease_until: datetime, limit: int) -> list[_Claimed]:
    """Lease up to ``limit`` due SMS rows (the caller commits): first the rows whose last attempt's outcome
    is unknown, so their look-up does not wait behind a backlog of new messages (it settles whether a
    message went out: reliability-anchors §2.3 asks for that within 60 s), then the rest, earliest due first.
    """
    due = (
        (OutboxMessage.kind == "sms") & OutboxMessage.status.in_(DUE) & (OutboxMessage.next_attempt_at <= now)
    )
    unknown_first = sa.case((OutboxMessage.last_error.startswith(UNKNOWN_MARK), 0), else_=1)
    candidates = (
        sa.select(OutboxMessage.id)
        .where(due)
        .order_by(unknown_first, OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if db.session.get_bind().dialect.name == "postgresql":
        # Concurrent senders take disjoint rows; materialised so the locking select runs once (sla/tick.py).
        locked = candidates.with_for_update(skip_locked=True).cte("due_sms").prefix_with("MATERIALIZED")
        claim = sa.update(OutboxMessage).where(OutboxMessage.id == locked.c.id)
    else:
        claim = sa.update(OutboxMessage).where(OutboxMessage.id.in_(candidates.scalar_subquery()), due)
    rows = db.session.execute(
        claim.values(next_attempt_at=lease_until, attempts=OutboxMessage.attempts + 1)
        .returning(*_COLUMNS)
        .execution_options(synchronize_session=False)
    ).all()
    claimed = [
        _Claimed(OutboxMessage(**dict(row._mapping)), row.next_attempt_at, row.attempts) for row in rows
    ]
    return sorted(claimed, key=lambda c: c.message.id)


def _write(item: _Claimed, **values: Any) -> bool:
    """Write ``values`` to a claimed row unless its lease was lost; a new ``next_attempt_at`` or
    ``attempts`` becomes the lease. The caller commits."""
    statement = (
        sa.update(OutboxMessage)
        .where(
            OutboxMessage.id == item.message.id,
            OutboxMessage.status.in_(DUE),
            OutboxMessage.next_attempt_at == item.until,
            OutboxMessage.attempts == item.attempts,
        )
        .values(**values)
        .returning(OutboxMessage.id)
        .execution_options(synchronize_session=False)
    )
    if db.session.execute(statement).first() is None:
        log.warning("sms %s: lease lost to another sender; leaving it", item.message.id)
        return False
    item.until = values.get("next_attempt_at", item.until)
    item.attempts = values.get("attempts", item.attempts)
    for key, value in values.items():
        setattr(item.message, key, value)
    return True


def _error(text: str) -> str:
    return text[:_ERROR_LENGTH]


# --- one run --------------------------------------------------------------------------------------------


@dataclass
class _Run:
    now: datetime
    config: Any
    result: RelayResult = field(default_factory=RelayResult)
    sender: twilio_sms.TwilioSms | None = None
    sends: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    failures_in_a_row: int = 0
    lease: timedelta = field(init=False)

    def __post_init__(self) -> None:
        self.lease = lease_length(float(self.config["TWILIO_TIMEOUT_SECONDS"]))
        self.max_attempts = int(self.config["SMS_MAX_ATTEMPTS"])
        self.per_hour = int(self.config["SMS_PER_NUMBER_PER_HOUR"])
        self.retry_seconds = float(self.config["SMS_RETRY_SECONDS"])
        self.quiet_hours = str(self.config.get("QUIET_HOURS") or "")
        self.tz = ZoneInfo(self.config["DISPATCH_TZ"])
        base = str(self.config["PUBLIC_BASE_URL"]).rstrip("/")
        self.status_callback = base + STATUS_CALLBACK_PATH

    @property
    def twilio_unavailable(self) -> bool:
        return self.failures_in_a_row >= UNAVAILABLE_AFTER

    def current(self) -> datetime:
        """The time of a write: the job's ``now``, or later when the run has taken a while."""
        return max(self.now, utcnow())

    # --- what the database knows ---

    def load_recent_sends(self, recipients: Collection[str]) -> None:
        """The sends of the last hour to these numbers. A sent row's ``next_attempt_at`` is its send time,
        so the (status, next_attempt_at) index finds them."""
        since = self.now - RATE_WINDOW
        self.sends.clear()  # an earlier batch's sends are in the database by now
        rows = db.session.execute(
            sa.select(OutboxMessage.recipient, OutboxMessage.sent_at).where(
                OutboxMessage.kind == "sms",
                OutboxMessage.status.in_(WENT_OUT),
                OutboxMessage.next_attempt_at > since,
                OutboxMessage.sent_at > since,
                OutboxMessage.recipient.in_(sorted(recipients)),
            )
        )
        for recipient, sent_at in rows:
            if recipient is not None and sent_at is not None:
                self.sends[recipient].append(sent_at)

    def opted_out(self, phone: str) -> bool:
        return db.session.scalar(sa.select(SmsOptOut.phone).where(SmsOptOut.phone == phone)) is not None

    def sids_taken(self, item: _Claimed, sids: Sequence[str]) -> set[str]:
        """Which of ``sids`` other outbox rows already hold."""
        rows = db.session.scalars(
            sa.select(OutboxMessage.provider_sid).where(
                OutboxMessage.provider_sid.in_(list(sids)), OutboxMessage.id != item.message.id
            )
        )
        return {sid for sid in rows if sid is not None}

    # --- outcomes (the caller commits) ---

    def sent(self, item: _Claimed, body: str, sid: str | None) -> None:
        at = self.current()
        if _write(
            item,
            status="sent",
            body=body,
            provider_sid=sid,
            sent_at=at,
            next_attempt_at=at,  # a sent row's next_attempt_at is its send time (load_recent_sends)
            status_updated_at=at,
            last_error=None,
            error_code=None,
        ):
            self.result.sent += 1
            if item.message.recipient:
                self.sends[item.message.recipient].append(at)

    def deferred(self, item: _Claimed, until: datetime, why: str) -> None:
        # Not an attempt: the count goes back. The body is not kept, so it is rendered with the order as it
        # is when the message finally goes out.
        if _write(
            item,
            status="deferred",
            next_attempt_at=until,
            attempts=item.attempts - 1,
            status_updated_at=self.current(),
        ):
            log.debug("sms %s deferred to %s (%s)", item.message.id, until.isoformat(), why)
            self.result.deferred += 1

    def put_back(self, item: _Claimed) -> None:
        """Twilio is unavailable: the row waits like after a first failure, and no attempt is counted."""
        if _write(
            item,
            next_attempt_at=self.current() + retry_delay(1, self.retry_seconds),
            attempts=item.attempts - 1,
        ):
            self.result.retried += 1

    def suppressed(self, item: _Claimed, body: str | None, why: str) -> None:
        if _write(
            item,
            status="suppressed",
            body=body,
            attempts=item.attempts - 1,
            status_updated_at=self.current(),
            last_error=_error(why),
        ):
            self.result.suppressed += 1

    def failed(self, item: _Claimed, body: str | None, why: str, code: int | None = None) -> None:
        log.warning("sms %s failed for good: %s", item.message.id, why)
        if _write(
            item,
            status="failed",
            body=body,
            status_updated_at=self.current(),
            last_error=_error(why),
            error_code=code,
        ):
            self.result.failed += 1

    def retry(
        self, item: _Claimed, body: str | None, why: str, *, code: int | None = None, unconfirmed: bool
    ) -> None:
        """Try again later with backoff (``failed`` once SMS_MAX_ATTEMPTS are spent); ``unconfirmed``: the
        message may have reached Twilio, so every later attempt looks for it first."""
        if item.attempts >= self.max_attempts:
            self.failed(item, body, f"gave up after {item.attempts} attempts: {why}", code)
            return
        values: dict[str, Any] = {}
        if unconfirmed:
            values["payload"] = {**(item.message.payload or {}), UNCONFIRMED: True}
        retry_at = self.current() + retry_delay(item.attempts, self.retry_seconds)
        log.info("sms %s: attempt %d failed (%s); retry at %s", item.message.id, item.attempts, why, retry_at)
        if _write(
            item,
            status="pending",
            body=body,
            next_attempt_at=retry_at,
            status_updated_at=self.current(),
            last_error=_error(why),
            error_code=code,
            **values,
        ):
            self.result.retried += 1

    # --- one message ---

    def deliver(self, item: _Claimed) -> None:
        message = item.message
        body = message.body
        if body is None:
            try:
                with db.session.begin_nested():  # a failed render leaves the batch's other writes alone
                    body = templates.render_message(message, self.now)
            except templates.ObsoleteMessage as exc:
                self.suppressed(item, None, f"obsolete: {exc}")
                return
            except templates.TemplateError as exc:
                self.failed(item, None, f"template {message.template!r}: {exc}")
                return
            except Exception as exc:  # one bad row must not stop the batch; retried, then failed
                log_exception(log, "sms %s: rendering failed", message.id)
                self.retry(item, None, f"rendering failed ({type(exc).__name__})", unconfirmed=False)
                return
        recipient = message.recipient
        if not recipient:
            self.failed(item, body, "no recipient")
            return
        if policy.is_customer(message):
            if self.opted_out(recipient):
                self.suppressed(item, body, "recipient opted out")
                return
            quiet_end = policy.quiet_until(self.now, self.quiet_hours, self.tz) if self.quiet_hours else None
            if quiet_end is not None:
                self.deferred(item, quiet_end, "quiet hours")
                return
            # Customers are not flooded; staff numbers (the desk, team leaders) get every escalation at once.
            free_at = limited_until(self.sends[recipient], self.per_hour, self.now)
            if free_at is not None:
                self.deferred(item, free_at, f"{self.per_hour} messages to this number within the hour")
                return
        if self.sender is None:
            self.sent(item, body, None)  # SMS_BACKEND=outbox: recorded, never sent
            return
        self.deliver_by_twilio(item, recipient, body)

    def deliver_by_twilio(self, item: _Claimed, recipient: str, body: str) -> None:
        assert self.sender is not None
        message = item.message
        unconfirmed = bool((message.last_error or "").startswith(UNKNOWN_MARK)) or bool(
            (message.payload or {}).get(UNCONFIRMED)
        )
        if unconfirmed:
            # An earlier attempt may have been accepted: look before sending again.
            if not _write(item, next_attempt_at=self.current() + self.lease, body=body):
                return
            db.session.commit()
            try:
                found = self.sender.find_sent(
                    recipient, body, message.created_at, taken=lambda sids: self.sids_taken(item, sids)
                )
            except twilio_sms.SmsError as exc:
                self.failures_in_a_row += 1
                self.retry(item, body, f"{UNKNOWN_MARK}; {exc}", code=exc.code, unconfirmed=True)
                db.session.commit()
                return
            self.failures_in_a_row = 0
            if found is not None:
                log.info(
                    "sms %s: an earlier attempt was accepted as %s; not sending again", message.id, found.sid
                )
                self.sent(item, body, found.sid)
                db.session.commit()
                # Callbacks that came before the sid was known found no row: take the status Twilio has now.
                sms_inbound.record_status(
                    {"MessageSid": found.sid, "MessageStatus": found.status}, now=self.now
                )
                return
        if item.attempts > self.max_attempts:  # crashed attempts count too
            self.failed(item, body, f"gave up after {item.attempts - 1} attempts")
            return
        if not _write(
            item,
            body=body,
            next_attempt_at=self.current() + self.lease,
            last_error=f"{UNKNOWN_MARK}: attempt {item.attempts} in flight",
            **({"payload": {**(message.payload or {}), UNCONFIRMED: True}} if unconfirmed else {}),
        ):
            return
        db.session.commit()  # the mark is durable before the request leaves
        try:
            sid, _status = self.sender.send(recipient, body, self.status_callback)
        except twilio_sms.SmsError as exc:
            self.failures_in_a_row = 0 if exc.outcome == twilio_sms.PERMANENT else self.failures_in_a_row + 1
            if exc.outcome == twilio_sms.PERMANENT:
                self.failed(item, body, str(exc), exc.code)
            elif exc.outcome == twilio_sms.RETRYABLE:
                self.retry(item, body, str(exc), code=exc.code, unconfirmed=unconfirmed)
            else:
                self.retry(item, body, f"{UNKNOWN_MARK}: {exc}", code=exc.code, unconfirmed=True)
        except Exception as exc:  # whatever broke after the request left, Twilio may have accepted it
            log_exception(log, "sms %s: sending failed", message.id)
            self.failures_in_a_row += 1
            self.retry(item, body, f"{UNKNOWN_MARK}: {type(exc).__name__}", unconfirmed=True)
        else:
            self.failures_in_a_row = 0
            self.sent(item, body, sid)
        db.session.commit()


def deliver_pending(now: datetime, *, limit: int = BATCH) -> RelayResult:
    """Scheduler job: deliver the SMS due at ``now``, each outcome committed under the row's lease.

    Full batches follow one another for about one scheduler tick (the next run starts right after, so
    nothing is slower, and a scheduler asked to stop waits for one batch at most); a run ends early when
    Twilio fails :data:`UNAVAILABLE_AFTER` requests in a row.
    """
    config = current_app.config
    backend = config["SMS_BACKEND"]
    if backend not in SMS_BACKENDS:
        raise ConfigError(f"SMS_BACKEND must be one of {', '.join(SMS_BACKENDS)}, got {backend!r}")
    run = _Run(now, config)
    if backend == "twilio":
        run.sender = twilio_sms.sender_for(current_app)  # ConfigError before anything is claimed
    started = time.monotonic()
    budget = float(config["SCHEDULER_TICK_SECONDS"])
    while True:
        claimed = _claim(run.now, run.now + run.lease, limit)
        db.session.commit()
        if not claimed:
            return run.result
        run.load_recent_sends({c.message.recipient for c in claimed if c.message.recipient})
        for item in claimed:
            if run.twilio_unavailable:
                run.put_back(item)
            else:
                run.deliver(item)
        db.session.commit()
        if run.twilio_unavailable:
            log.warning(
                "Twilio failed %d requests in a row; the rest waits for a later run", UNAVAILABLE_AFTER
            )
            return run.result
        if len(claimed) < limit or time.monotonic() - started >= budget:
            return run.result
        run.now = run.current()  # a long run also takes what fell due meanwhile (retries, say)
