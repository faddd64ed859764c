from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate, validates, validates_schema

from api.common.schemas import LocalDateTime, Text, WindowSchema
from dispatch.phones import InvalidPhone, normalise_cn_mobile
from dispatch.vocabulary import COMPLAINT_CATEGORIES, COMPLAINT_CAUSES, ORDER_TYPES, PAY_MODES, PRIORITIES

# Patterns valid in Python and in ECMA 262 (they are published in /openapi.json): Python's ``$`` also matches
# before a final newline, hence ``(?!\n)``.
EXTERNAL_ID = validate.Regexp(
    r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$(?!\n)", error="1–64 letters, digits or . _ : -"
)
NOT_BLANK = validate.Regexp(r"^[\s\S]*\S", error="Must not be blank.")


class IntakeCustomerSchema(ma.Schema):
    name = fields.String(required=True, validate=[validate.Length(min=1, max=100), NOT_BLANK])
    phone = fields.String(required=True, validate=validate.Length(min=1, max=32))

    @validates("phone")
    def _phone(self, value: str, **kwargs: Any) -> None:
        try:
            normalise_cn_mobile(value)
        except InvalidPhone as exc:
            raise ma.ValidationError(str(exc)) from None

    @ma.post_load
    def _normalise(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["phone"] = normalise_cn_mobile(data["phone"])
        data["name"] = data["name"].strip()
        return data


class IntakeAddressSchema(ma.Schema):
    text = fields.String(required=True, validate=[validate.Length(min=1, max=500), NOT_BLANK])
    district = fields.String(required=True, validate=[validate.Length(min=1, max=50), NOT_BLANK])
    lat = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-90, max=90))
    lng = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=-180, max=180))

    @validates_schema
    def _both_or_neither(self, data: dict[str, Any], **kwargs: Any) -> None:
        if (data.get("lat") is None) != (data.get("lng") is None):
            raise ma.ValidationError("Give both lat and lng, or neither.", "lat")


class OrderIntakeSchema(ma.Schema):
    external_id = fields.String(required=True, validate=EXTERNAL_ID)
    order_type = fields.String(required=True, validate=validate.OneOf(ORDER_TYPES))
    pay_mode = fields.String(required=True, validate=validate.OneOf(PAY_MODES))
    priority = fields.String(load_default="normal", validate=validate.OneOf(PRIORITIES))
    customer = fields.Nested(IntakeCustomerSchema, required=True)
    address = fields.Nested(IntakeAddressSchema, required=True)
    requested_window = fields.Nested(WindowSchema, load_default=None, allow_none=True)
    products = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        load_default=list,
        validate=validate.Length(max=20),
    )
    notes = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class ComplaintIntakeSchema(ma.Schema):
    external_id = fields.String(required=True, validate=EXTERNAL_ID)
    order_external_id = fields.String(load_default=None, allow_none=True, validate=EXTERNAL_ID)
    category = fields.String(required=True, validate=validate.OneOf(COMPLAINT_CATEGORIES))
    cause = fields.String(required=True, validate=validate.OneOf(COMPLAINT_CAUSES))
    received_at = LocalDateTime(required=True)
    text = Text(required=True, validate=[validate.Length(min=1, max=4000), NOT_BLANK])
