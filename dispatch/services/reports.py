"""KPI reports for managers: the figures of DOMAIN.md ("KPIs") against the operator's targets."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

import sqlalchemy as sa

from dispatch.actors import READ_REPORTS, Actor, require
from dispatch.clock import utcnow
from dispatch.errors import ValidationError
from dispatch.extensions import db
from dispatch.models import Engineer, Team
from dispatch.models.reporting import GROUPINGS
from dispatch.reporting import kpi, rollup
from dispatch.timeutil import to_local

MAX_DAYS = 366
UNASSIGNED = "未分配"


def kpi_report(*, actor: Actor, start: date, end: date, group_by: str = "order_type") -> dict[str, Any]:
    """Every KPI for the business days [start, end], per ``group_by`` (``order_type``: the whole city,
    split by order type; ``district``, ``team`` or ``engineer``: one group each), with targets."""
    require(actor, READ_REPORTS, "read KPI reports")
    if group_by not in GROUPINGS:
        raise ValidationError(errors={"group_by": [f"Must be one of: {', '.join(GROUPINGS)}."]})
    if end < start:
        raise ValidationError(errors={"to": ["Must not be before from."]})
    days = (end - start).days + 1
    if days > MAX_DAYS:
        raise ValidationError(errors={"to": [f"A report spans at most {MAX_DAYS} days."]})
    groups: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for row in rollup.totals(group_by, start, end):
        if row.value:
            groups[row.key][(row.order_type, row.metric)] = int(row.value)
    targets = rollup.targets()
    names = _names(group_by, groups)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "days": days,
        "group_by": group_by,
        "generated_at": to_local(utcnow()).isoformat(),
        "targets": {
            "completion_rate": dict(targets.completion),
            "complaints_per_day": dict(targets.complaints_per_day),
            "escalated_installation_or_network": targets.escalated,
        },
        "groups": [
            {"key": key, "name": names.get(key, key), **kpi.figures(totals, days=days, targets=targets)}
            for key, totals in sorted(groups.items(), key=lambda item: _sort_key(group_by, item[0]))
        ],
    }


def _sort_key(group_by: str, key: str) -> tuple[int, Any]:
    if group_by in ("team", "engineer"):
        return (0, int(key)) if key != "0" else (1, 0)  # unassigned last
    return (0, key) if key else (1, "")


def _names(group_by: str, groups: dict[str, Any]) -> dict[str, str]:
    """Display names of the groups' keys: districts are their own names; teams and engineers by id."""
    if group_by == "order_type":
        return {"": "全部"}
    if group_by == "district":
        return {"": UNASSIGNED}
    ids = [int(key) for key in groups if key != "0"]
    names = {"0": UNASSIGNED}
    if group_by == "team":
        for team_id, name in db.session.execute(sa.select(Team.id, Team.name).where(Team.id.in_(ids))):
            names[str(team_id)] = name
    else:
        rows = db.session.execute(
            sa.select(Engineer.id, Engineer.code, Engineer.name).where(Engineer.id.in_(ids))
        )
        for engineer_id, code, name in rows:
            names[str(engineer_id)] = f"{name} ({code})"
    return names
