"""The billing push: numbered events POSTed to BILLING_WEBHOOK_URL in ``seq`` order (job ``billing-feed``).

Each run numbers pending events (:func:`feed.number_pending`), then, when ``BILLING_WEBHOOK_URL`` is set,
sends batches of the events after ``billing_push_state.last_seq`` as ``{"events": [...]}`` (each event in the
feed's wire shape, :func:`feed.as_json`), signed with ``X-Billing-Signature: sha256=<hex HMAC-SHA256 of the
exact body bytes with BILLING_WEBHOOK_SECRET>``. A 2xx moves ``last_seq`` to the batch's last ``seq``;
anything else (another status, a timeout, a refused or dropped connection) records ``last_error``, counts
the attempt and waits ``BILLING_RETRY_SECONDS`` × 2^(attempts−1), at most ``BILLING_MAX_BACKOFF_SECONDS``,
before the same batch is sent again. Redirects are not followed: a 3xx is a failure like any other.

Delivery is at least once: a run that dies after the receiver answered 2xx but before ``last_seq`` was
committed sends that batch again, and a batch that timed out may have been received. The receiver dedupes by
the event's ``id`` (or ``seq``, which is as stable): it keeps the highest ``seq`` it has stored and ignores
events at or below it. Absent such crashes each event is sent once.

One pusher at a time: on PostgreSQL the run holds the state row ``FOR UPDATE SKIP LOCKED`` from reading the
batch until its outcome is committed, so a second scheduler skips the run instead of sending the same batch
beside it. SQLite has no row locks and one write lock for the whole database, which must not be held over a
network call (every web request's write would wait on BOSS): there the run takes a lease on the row instead
(``next_attempt_at`` moved past the longest the request may take, committed before sending), and writes its
outcome only if the lease is still its own.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from dispatch.billing import feed
from dispatch.clock import utcnow
from dispatch.extensions import db
from dispatch.models import BillingPushState

log = logging.getLogger("dispatch.billing")

STATE_ID = 1
BATCH = 500
MAX_BATCHES = 20  # per run: a long backlog is worked off over several ticks, not in one endless job
SIGNATURE_HEADER = "X-Billing-Signature"
TIMESTAMP_HEADER = "X-Billing-Timestamp"
LEASE_MARGIN = timedelta(seconds=30)
_ERROR_LENGTH = 500  # billing_push_state.last_error is a String(500)
_STATE: sa.Table = BillingPushState.__table__  # type: ignore[assignment]


@dataclass
class PushResult:
    """One run: events numbered, events and batches delivered, and the error that stopped it, if any."""

    numbered: int = 0
    pushed: int = 0
    batches: int = 0
    error: str | None = None

    def __bool__(self) -> bool:
        return bool(self.numbered or self.pushed or self.error)


@dataclass(frozen=True)
class _Claim:
    last_seq: int
    attempts: int
    lease: datetime | None  # SQLite only: the next_attempt_at that makes the row ours


def sign(body: bytes, secret: str) -> str:
    """The ``X-Billing-Signature`` value for ``body``: ``sha256=`` and the hex HMAC-SHA256 with ``secret``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def encode(events: list[dict[str, Any]]) -> bytes:
    """The request body: ``{"events": [...]}`` as compact UTF-8 JSON (signed byte for byte)."""
    return json.dumps({"events": events}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def backoff(attempts: int, base_seconds: float, cap_seconds: float) -> timedelta:
    """The wait after the ``attempts``-th failure in a row: ``base``, doubling, at most ``cap``."""
    exponent = min(max(attempts, 1) - 1, 30)  # 2**30 × base is far past any cap; no huge numbers
    return timedelta(seconds=min(base_seconds * (1 << exponent), cap_seconds))


def relay(now: datetime, *, batch: int = BATCH) -> PushResult:
    """Number pending events; when BILLING_WEBHOOK_URL is set, push what the receiver has not acknowledged."""
    result = PushResult(numbered=feed.number_pending(now))
    config = current_app.config
    url = config.get("BILLING_WEBHOOK_URL")
    if not url:
        return result
    secret = str(config["BILLING_WEBHOOK_SECRET"] or "")
    timeout = float(config["BILLING_WEBHOOK_TIMEOUT_SECONDS"])
    _ensure_state(now)
    for _ in range(MAX_BATCHES):
        claim = _claim(now, lease=LEASE_MARGIN + timedelta(seconds=3 * timeout))
        if claim is None:  # backing off, or another scheduler is pushing
            break
        events = feed.page(claim.last_seq, batch).events
        if not events:
            _release(claim)
            break
        body = encode(events)
        error = _post(str(url), body, secret, timeout, now)
        at = max(now, utcnow())  # a slow request must not leave the backoff already in the past
        if error is not None:
            attempts = claim.attempts + 1
            retry_at = at + backoff(
                attempts, float(config["BILLING_RETRY_SECONDS"]), float(config["BILLING_MAX_BACKOFF_SECONDS"])
            )
            log.warning(
                "billing push after seq %d failed (%s); attempt %d, retry at %s",
                *(claim.last_seq, error, attempts, retry_at.isoformat()),
            )
            _finish(
                claim, attempts=attempts, next_attempt_at=retry_at, last_error=error[:_ERROR_LENGTH], at=at
            )
            result.error = error
            break
        _finish(claim, last_seq=events[-1]["seq"], attempts=0, next_attempt_at=None, last_error=None, at=at)
        result.pushed += len(events)
        result.batches += 1
        if len(events) < batch:
            break
    return result


def _ensure_state(now: datetime) -> None:
    """The state row exists from the first configured run on (a concurrent first run inserts nothing)."""
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    db.session.execute(
        insert(_STATE)
        .values(id=STATE_ID, last_seq=0, attempts=0, next_attempt_at=None, last_error=None, updated_at=now)
        .on_conflict_do_nothing(index_elements=[_STATE.c.id])
    )
    db.session.commit()


def _claim(now: datetime, *, lease: timedelta) -> _Claim | None:
    """The state row, if it is due and no other pusher has it; on PostgreSQL it stays locked until
    :func:`_finish` commits, on SQLite it is leased (committed here)."""
    due = sa.and_(
        _STATE.c.id == STATE_ID,
        sa.or_(_STATE.c.next_attempt_at.is_(None), _STATE.c.next_attempt_at <= now),
    )
    if db.session.get_bind().dialect.name == "postgresql":
        row = db.session.execute(
            sa.select(_STATE.c.last_seq, _STATE.c.attempts).where(due).with_for_update(skip_locked=True)
        ).first()
        if row is None:
            db.session.rollback()
            return None
        return _Claim(row.last_seq, row.attempts, None)
    until = now + lease
    row = db.session.execute(
        sa.update(_STATE)
        .where(due)
        .values(next_attempt_at=until)
        .returning(_STATE.c.last_seq, _STATE.c.attempts)
    ).first()
    db.session.commit()
    return None if row is None else _Claim(row.last_seq, row.attempts, until)


def _finish(claim: _Claim, *, at: datetime | None = None, **values: Any) -> None:
    """Write the run's outcome and commit (releasing the row); on SQLite only while the lease is ours."""
    statement = sa.update(_STATE).where(_STATE.c.id == STATE_ID)
    if claim.lease is not None:
        statement = statement.where(_STATE.c.next_attempt_at == claim.lease)
    if at is not None:
        values["updated_at"] = at
    if not getattr(db.session.execute(statement.values(**values)), "rowcount", 0):
        log.warning("billing push: lease lost to another pusher; its outcome stands")
    db.session.commit()


def _release(claim: _Claim) -> None:
    """Nothing to send: let the row go unchanged (SQLite: give the lease back)."""
    if claim.lease is None:
        db.session.rollback()
    else:
        _finish(claim, next_attempt_at=None)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST would arrive elsewhere without its body (or be re-sent as a GET): a failure."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post(url: str, body: bytes, secret: str, timeout: float, now: datetime) -> str | None:
    """POST one batch; None on a 2xx, else why not."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked at start (config._check_billing)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, secret),
            TIMESTAMP_HEADER: str(int(now.timestamp())),
            "User-Agent": "dispatch-billing-push/1",
        },
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(64 * 1024)  # drain a little so the answer is complete; its content is ignored
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return f"connection failed: {exc.reason}"
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, malformed answers
        return f"{type(exc).__name__}: {exc}"
    return None if 200 <= status < 300 else f"HTTP {status}"
