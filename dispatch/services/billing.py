"""The billing feed as BOSS reads it (CONTRACT "Billing feed"): only an API key with scope ``billing``."""

from __future__ import annotations

from dispatch.actors import Actor, require
from dispatch.billing import feed
from dispatch.clock import utcnow

READ_BILLING_FEED = frozenset({"billing"})
MAX_LIMIT = 1000


def read_events(after: int, limit: int, *, actor: Actor) -> feed.Page:
    """The numbered events after the cursor ``after``, at most ``limit``, in ``seq`` order."""
    require(actor, READ_BILLING_FEED, "read the billing feed")
    # Number first, so a consumer sees what committed a moment ago without waiting for the scheduler's
    # tick; numbering is serialised under its own lock, so concurrent readers cannot interleave it.
    feed.number_pending(utcnow())
    return feed.page(after, min(limit, MAX_LIMIT))
