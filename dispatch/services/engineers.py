"""Engineers and teams: admins create and edit them, dispatchers and managers read them."""

from __future__ import annotations

from datetime import time
from typing import Any

import sqlalchemy as sa

from dispatch.actors import MANAGE_ENGINEERS, READ_ENGINEERS, Actor, require
from dispatch.clock import utcnow
from dispatch.errors import Conflict, NotFound, ValidationError
from dispatch.extensions import db
from dispatch.models import District, Engineer, EngineerLeave, EngineerShift, EngineerSkill, Team
from dispatch.services.paging import page_of

MAX_ID = 2**31 - 1  # ids are INTEGER columns: a larger one is unknown, not a database error
DEFAULT_SHIFTS = tuple((weekday, time(8, 0), time(20, 0)) for weekday in range(1, 8))


def list_engineers(
    *, actor: Actor, page: int, page_size: int, team: str | None = None, active: bool | None = None
) -> tuple[list[Engineer], int]:
    """A page of engineers ordered by code, and the total."""
    require(actor, READ_ENGINEERS | {"system"}, "read engineers")
    query = sa.select(Engineer)
    if team:
        query = query.join(Team, Engineer.team_id == Team.id).where(Team.name == team)
    if active is not None:
        query = query.where(Engineer.active.is_(active))
    return page_of(query, Engineer.code, page=page, page_size=page_size)


def list_districts(*, actor: Actor) -> list[District]:
    """Every district by name: the ones an engineer may cover."""
    require(actor, READ_ENGINEERS | {"system"}, "read districts")
    return list(db.session.scalars(sa.select(District).order_by(District.name)))


def list_teams(*, actor: Actor) -> list[Team]:
    """Every team by name."""
    require(actor, READ_ENGINEERS | {"system"}, "read teams")
    return list(db.session.scalars(sa.select(Team).order_by(Team.name)))


def get_engineer(engineer_id: int, *, actor: Actor) -> Engineer:
    """One engineer."""
    require(actor, READ_ENGINEERS | {"system"}, "read engineers")
    engineer = db.session.get(Engineer, engineer_id) if 0 < engineer_id <= MAX_ID else None
    if engineer is None:
        raise NotFound(f"Engineer {engineer_id} not found")
    return engineer


def create_engineer(data: dict[str, Any], *, actor: Actor) -> Engineer:
    """Create an engineer; the team is created on first use, districts must exist."""
    require(actor, MANAGE_ENGINEERS | {"system"}, "create engineers")
    if db.session.scalar(sa.select(Engineer.id).where(Engineer.code == data["code"])) is not None:
        raise Conflict(f"Engineer code {data['code']} already exists")
    now = utcnow()
    engineer = Engineer(created_at=now, updated_at=now, active=data.get("active", True))
    _apply(engineer, {"shifts": None, **data})
    db.session.add(engineer)  # after _apply: a refused engineer is never pending in the session
    db.session.commit()
    return engineer


def update_engineer(engineer_id: int, data: dict[str, Any], *, actor: Actor) -> Engineer:
    """Change some of an engineer's fields (PATCH semantics); ``active: false`` takes them off dispatch."""
    require(actor, MANAGE_ENGINEERS | {"system"}, "edit engineers")
    engineer = db.session.get(Engineer, engineer_id) if 0 < engineer_id <= MAX_ID else None
    if engineer is None:
        raise NotFound(f"Engineer {engineer_id} not found")
    if "code" in data and data["code"] != engineer.code:
        taken = db.session.scalar(sa.select(Engineer.id).where(Engineer.code == data["code"]))
        if taken is not None:
            raise Conflict(f"Engineer code {data['code']} already exists")
    _apply(engineer, data)
    engineer.updated_at = utcnow()
    db.session.commit()
    return engineer


def _apply(engineer: Engineer, data: dict[str, Any]) -> None:
    # Everything that can refuse the change runs before anything changes (no half-edited engineer is left).
    districts = _districts(data["districts"]) if "districts" in data else None
    for field in ("code", "name", "phone", "daily_capacity", "active"):
        if field in data:
            setattr(engineer, field, data[field])
    if "home" in data:
        home = data["home"] or {}
        engineer.home_lat, engineer.home_lng = home.get("lat"), home.get("lng")
    if "team" in data:
        engineer.team = _team(data["team"]) if data["team"] else None
    if "skills" in data:
        engineer.skill_rows = [EngineerSkill(order_type=s) for s in sorted(set(data["skills"]))]
    if districts is not None:
        engineer.districts = districts
    if "shifts" in data:
        shifts = data["shifts"]
        rows = (
            [(s["weekday"], s["start"], s["end"]) for s in shifts]
            if shifts is not None
            else list(DEFAULT_SHIFTS)
        )
        engineer.shifts = [EngineerShift(weekday=w, start_time=a, end_time=b) for w, a, b in rows]
    if "leave" in data:
        engineer.leaves = [
            EngineerLeave(start_date=v["start"], end_date=v["end"], reason=v.get("reason"))
            for v in sorted(data["leave"], key=lambda v: (v["start"], v["end"]))
        ]


def _team(name: str) -> Team:
    team = db.session.scalar(sa.select(Team).where(Team.name == name))
    if team is None:
        team = Team(name=name)
        db.session.add(team)
    return team


def _districts(names: list[str]) -> list[District]:
    found = list(db.session.scalars(sa.select(District).where(District.name.in_(set(names)))))
    unknown = sorted(set(names) - {d.name for d in found})
    if unknown:
        raise ValidationError(errors={"districts": [f"Unknown district: {', '.join(unknown)}."]})
    return found
