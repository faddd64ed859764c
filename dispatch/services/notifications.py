"""The SMS messages of the outbox, as the dispatch desk sees them (CONTRACT §5 "Alerts and notifications")."""

from __future__ import annotations

import sqlalchemy as sa

from dispatch.actors import Actor, require
from dispatch.models import OutboxMessage
from dispatch.services.paging import page_of

READ_NOTIFICATIONS = frozenset({"dispatcher", "admin", "system"})


def list_notifications(
    *, actor: Actor, page: int, page_size: int, order_id: int | None = None
) -> tuple[list[OutboxMessage], int]:
    """A page of SMS outbox rows (any delivery status), newest first, and the total; other outbox kinds
    (billing events, ...) are not notifications."""
    require(actor, READ_NOTIFICATIONS, "read notifications")
    query = sa.select(OutboxMessage).where(OutboxMessage.kind == "sms")
    if order_id is not None:
        query = query.where(OutboxMessage.order_id == order_id)
    newest_first = (OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
    return page_of(query, *newest_first, page=page, page_size=page_size)
