from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from api.common.schemas import MAX_ID, LocalDateTime, PageArgsSchema, page_schema
from api.orders.schemas import EngineerRefSchema
from dispatch.vocabulary import COMPLAINT_CATEGORIES, COMPLAINT_CAUSES


class TeamRefSchema(ma.Schema):
    id = fields.Integer()
    name = fields.String()


class ComplaintSchema(ma.Schema):
    id = fields.Integer()
    external_id = fields.String()
    order_id = fields.Integer(allow_none=True)
    order_external_id = fields.String(allow_none=True)
    category = fields.String(metadata={"description": "backend_first_contact, appointment or escalated"})
    cause = fields.String(metadata={"description": "installation_service, network or other"})
    received_at = LocalDateTime()
    text = fields.String()
    engineer = fields.Nested(EngineerRefSchema, allow_none=True)
    team = fields.Nested(TeamRefSchema, allow_none=True)
    district = fields.String(allow_none=True)
    order_type = fields.String(allow_none=True)
    created_at = LocalDateTime()


ComplaintPageSchema = page_schema(ComplaintSchema, "ComplaintPage")


class ComplaintQueryArgsSchema(PageArgsSchema):
    category = fields.String(validate=validate.OneOf(COMPLAINT_CATEGORIES))
    cause = fields.String(validate=validate.OneOf(COMPLAINT_CAUSES))
    order_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    engineer_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    team_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    district = fields.String(validate=validate.Length(min=1, max=50))
    from_ = fields.Date(data_key="from", metadata={"description": "first business day (inclusive)"})
    to = fields.Date(metadata={"description": "last business day (inclusive)"})

    @ma.validates_schema
    def _range(self, data: dict[str, object], **kwargs: object) -> None:
        start, end = data.get("from_"), data.get("to")
        if start is not None and end is not None and end < start:  # type: ignore[operator]
            raise ma.ValidationError("Must not be before from.", "to")
