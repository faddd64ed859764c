from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate


class SegmentsSchema(ma.Schema):
    encoding = fields.String(metadata={"description": "GSM-7 or UCS-2 (any Chinese character)"})
    units = fields.Integer(metadata={"description": "septets (GSM-7) or UTF-16 code units (UCS-2)"})
    parts = fields.Integer()


class SmsTemplateSchema(ma.Schema):
    key = fields.String()
    body = fields.String(metadata={"description": "the text in force, with {field} placeholders"})
    default = fields.String()
    customized = fields.Boolean()
    sample = fields.String(metadata={"description": "the body rendered with sample data"})
    segments = fields.Nested(SegmentsSchema, metadata={"description": "what the sample takes"})


class SmsTemplateUpdateSchema(ma.Schema):
    body = fields.String(
        required=True,
        allow_none=True,
        validate=validate.Length(min=1, max=1000),
        metadata={"description": "the new text; null restores the default"},
    )
