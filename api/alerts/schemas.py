from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from api.common.schemas import MAX_ID, LocalDateTime, PageArgsSchema, page_schema
from dispatch.services.sla import ALERT_STATUSES


class AlertSchema(ma.Schema):
    id = fields.Integer()
    order_id = fields.Integer()
    kind = fields.String(metadata={"description": "warning or breach"})
    clock = fields.String()
    created_at = LocalDateTime()
    acknowledged_at = LocalDateTime(allow_none=True)
    acknowledged_by = fields.Integer(allow_none=True, metadata={"description": "the user who acknowledged"})


AlertPageSchema = page_schema(AlertSchema, "AlertPage")


class AlertQueryArgsSchema(PageArgsSchema):
    order_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    status = fields.String(validate=validate.OneOf(ALERT_STATUSES))
