from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from api.common.schemas import LocalDateTime
from dispatch.services.sla import MAX_TARGET_SECONDS, WARN_PERCENT_RANGE


class SlaPolicySchema(ma.Schema):
    order_type = fields.String()
    clock = fields.String()
    target_seconds = fields.Integer(
        metadata={"description": "seconds from the clock's start; arrival: grace after the window start"}
    )
    warn_percent = fields.Integer(metadata={"description": "warning at this share of the target"})
    updated_at = LocalDateTime(allow_none=True, metadata={"description": "null until an admin changes it"})


class SlaPolicyUpdateSchema(ma.Schema):
    target_seconds = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=0, max=MAX_TARGET_SECONDS)
    )
    warn_percent = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=WARN_PERCENT_RANGE[0], max=WARN_PERCENT_RANGE[1]),
    )
