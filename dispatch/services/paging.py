"""One page of a query and the total it comes from (CONTRACT §3: lists are paginated, with the total)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from dispatch.extensions import db


def page_of(query: sa.Select[Any], *order_by: Any, page: int, page_size: int) -> tuple[list[Any], int]:
    """The rows of ``query`` on page ``page`` (1-based) in ``order_by`` order, and how many rows there are."""
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = db.session.scalars(query.order_by(*order_by).limit(page_size).offset((page - 1) * page_size))
    return list(rows.unique()), total
