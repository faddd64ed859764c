"""SMS templates for admins: read them with their sample rendering, change or reset one."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from dispatch.actors import Actor, require
from dispatch.clock import utcnow
from dispatch.errors import NotFound, ValidationError
from dispatch.extensions import db
from dispatch.messaging import segments
from dispatch.messaging.templates import (
    DEFAULTS,
    FIELDS,
    MAX_PARTS,
    SAMPLE,
    TemplateError,
    describe,
    fields_of,
)
from dispatch.models import SmsTemplate

MANAGE_TEMPLATES = frozenset({"admin", "system"})
READ_TEMPLATES = frozenset({"admin", "dispatcher", "system"})


def list_templates(*, actor: Actor) -> list[dict[str, Any]]:
    """Every template with its text in force, its default and the parts its sample rendering takes."""
    require(actor, READ_TEMPLATES, "read SMS templates")
    custom = {row.key: row.body for row in db.session.scalars(sa.select(SmsTemplate))}
    return [describe(key, custom.get(key, default)) for key, default in DEFAULTS.items()]


def set_template(key: str, body: str | None, *, actor: Actor) -> dict[str, Any]:
    """Replace a template's text (admins); ``None`` restores the default. 422 for unknown fields or a text
    that takes more than two parts with the sample data."""
    require(actor, MANAGE_TEMPLATES, "edit SMS templates")
    if key not in DEFAULTS:
        raise NotFound(f"No SMS template {key!r}", templates=list(DEFAULTS))
    row = db.session.get(SmsTemplate, key)
    if body is None:
        if row is not None:
            db.session.delete(row)
        db.session.commit()
        return describe(key, DEFAULTS[key])
    try:
        unknown = fields_of(body) - set(FIELDS)
    except TemplateError as exc:
        raise ValidationError(errors={"body": [str(exc)]}) from None
    if unknown:
        raise ValidationError(
            errors={"body": [f"Unknown field(s): {', '.join(sorted(unknown))}; known: {', '.join(FIELDS)}."]}
        )
    parts = segments.count(body.format_map(SAMPLE)).parts
    if parts > MAX_PARTS:
        raise ValidationError(
            errors={"body": [f"With sample data this takes {parts} SMS parts; at most {MAX_PARTS}."]}
        )
    if row is None:
        row = SmsTemplate(key=key)
        db.session.add(row)
    row.body = body
    row.updated_at = utcnow()
    row.updated_by = actor.id if actor.kind == "user" else None
    db.session.commit()
    return describe(key, body)
