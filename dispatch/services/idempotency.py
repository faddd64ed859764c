"""Idempotency-Key storage: the first response to a key is kept and replayed; another body gets 409."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from dispatch.clock import utcnow
from dispatch.errors import Conflict, IdempotencyConflict
from dispatch.extensions import db
from dispatch.models import IdempotencyRecord

# A claim older than this whose request never finished (its process died) may be taken over.
STALE_AFTER = timedelta(seconds=60)


def claim(
    principal: str, key: str, *, method: str, path: str, fingerprint: str
) -> tuple[int | None, tuple[int, Any] | None]:
    """Claim ``key`` for this request → ``(record_id, None)``, or ``(None, (status, body))`` to replay."""
    for _ in range(2):
        record = db.session.scalar(
            sa.select(IdempotencyRecord).where(
                IdempotencyRecord.principal == principal, IdempotencyRecord.key == key
            )
        )
        now = utcnow()
        if record is not None:
            if record.fingerprint != fingerprint:
                raise IdempotencyConflict()
            if record.response_status is not None:
                return None, (record.response_status, record.response_body)
            if now - record.created_at < STALE_AFTER:
                raise Conflict("A request with this Idempotency-Key is still in progress; retry shortly")
            record.created_at = now
            db.session.commit()
            return record.id, None
        record = IdempotencyRecord(
            principal=principal, key=key, method=method, path=path, fingerprint=fingerprint, created_at=now
        )
        db.session.add(record)
        try:
            db.session.commit()
        except IntegrityError:  # a concurrent request with the same key won the insert
            db.session.rollback()
            continue
        return record.id, None
    raise Conflict("A request with this Idempotency-Key is still in progress; retry shortly")


def complete(record_id: int, status: int, body: Any) -> None:
    """Keep the response of a claimed key."""
    db.session.rollback()  # whatever the request left uncommitted is not ours to commit
    db.session.execute(
        sa.update(IdempotencyRecord)
        .where(IdempotencyRecord.id == record_id)
        .values(response_status=status, response_body=body)
    )
    db.session.commit()


def release(record_id: int) -> None:
    """Forget a claim whose request failed, so that a retry runs again."""
    db.session.rollback()
    db.session.execute(sa.delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))
    db.session.commit()


def purge_expired(*, now: Any, ttl_seconds: int) -> int:
    """Scheduler job: drop keys older than the retention period."""
    result = db.session.execute(
        sa.delete(IdempotencyRecord).where(
            IdempotencyRecord.created_at < now - timedelta(seconds=ttl_seconds)
        )
    )
    db.session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
