"""Closing a business day: the ``kpi.daily`` billing events per engineer and team, once per day.

Contractor teams are settled on these figures (DOMAIN.md "Who uses it"), so each closed day is written
exactly once, whichever scheduler gets there: the close row is claimed first (``INSERT ... ON CONFLICT DO
NOTHING``, the loser waits for the winner's commit and finds it taken), and its events carry dedupe keys.
Figures are as of the close; later changes to that day (a late completion of an order received then) stay
visible in the reports, and the close is a snapshot, stamped ``as_of``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from dispatch.billing import events as billing_events
from dispatch.billing import feed
from dispatch.extensions import db
from dispatch.models import KpiDayClose
from dispatch.reporting import kpi, rollup
from dispatch.timeutil import business_day, local_day_bounds, to_local

_CLOSES: sa.Table = KpiDayClose.__table__  # type: ignore[assignment]


def close_days(now: datetime) -> int:
    """Close every day from ``KPI_CLOSE_LOOKBACK_DAYS`` ago to yesterday not closed yet; return how many."""
    today = business_day(now)
    lookback = int(current_app.config.get("KPI_CLOSE_LOOKBACK_DAYS", 3))
    closed = 0
    for offset in range(lookback, 0, -1):
        if close_day(today - timedelta(days=offset), now):
            closed += 1
    return closed


def close_day(day: date, now: datetime) -> bool:
    """Write ``day``'s ``kpi.daily`` events and commit; False if it was closed already."""
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    claimed = db.session.execute(
        insert(_CLOSES)
        .values(day=day, closed_at=now)
        .on_conflict_do_nothing(index_elements=[_CLOSES.c.day])
        .returning(_CLOSES.c.day)
    ).first()
    if claimed is None:
        db.session.rollback()
        return False
    targets = rollup.targets()
    occurred_at = min(now, local_day_bounds(day)[1])
    for scope in ("engineer", "team"):
        groups: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
        for row in rollup.totals(scope, day, day):
            if row.value and row.key != "0":
                groups[row.key][(row.order_type, row.metric)] = int(row.value)
        for key, totals in sorted(groups.items(), key=lambda item: int(item[0])):
            figures = kpi.figures(totals, days=1, targets=targets)
            ref = (
                billing_events.engineer_ref(int(key))
                if scope == "engineer"
                else billing_events.team_ref(int(key))
            )
            feed.record(
                "kpi.daily",
                dedupe_key=f"kpi.daily:{day.isoformat()}:{scope}:{key}",
                occurred_at=occurred_at,
                now=now,
                payload={
                    "day": day.isoformat(),
                    "scope": scope,
                    scope: ref,
                    "as_of": to_local(now).isoformat(),
                    "figures": _figures(figures),
                },
            )
    db.session.commit()
    return True


def _figures(figures: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, item, figure in kpi.flat(figures):
        out[f"{name}.{item}" if item else name] = {
            k: figure.get(k) for k in ("numerator", "denominator", "value", "target", "met")
        }
    return out
