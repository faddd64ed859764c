"""Bodies of the PDA's order endpoints, and the order as the PDA sees it (OrderSchema plus its checklist)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from api.common.schemas import LocalDateTime, PageArgsSchema, Text, WindowSchema, page_schema
from api.orders.schemas import OrderSchema, WarningSchema
from dispatch.vocabulary import CONTACT_OUTCOMES, RESCHEDULE_REASONS, RETURN_REASONS, SUSPEND_REASONS

_AT = {"description": "the device's time of the action (ISO 8601 with offset)"}


def _at() -> LocalDateTime:
    return LocalDateTime(load_default=None, allow_none=True, metadata=_AT)


def _lat(**kwargs: object) -> fields.Float:
    return fields.Float(validate=validate.Range(min=-90, max=90), **kwargs)  # type: ignore[arg-type]


def _lng(**kwargs: object) -> fields.Float:
    return fields.Float(validate=validate.Range(min=-180, max=180), **kwargs)  # type: ignore[arg-type]


_ACCURACY = validate.Range(min=0, max=100_000)


class CheckInResultSchema(ma.Schema):
    distance_m = fields.Float(allow_none=True, metadata={"description": "null: the address has no position"})
    inside_radius = fields.Boolean(allow_none=True)
    radius_m = fields.Float()
    poor_accuracy = fields.Boolean()


class MobileOrderSchema(OrderSchema):
    checklist = fields.List(fields.String(), metadata={"description": "completion checklist of its type"})
    missing = fields.List(fields.String(), metadata={"description": "checklist items still missing"})
    allowed_actions = fields.List(fields.String())


class MobileOrderResultSchema(MobileOrderSchema):
    warnings = fields.List(fields.Nested(WarningSchema))
    check_in = fields.Nested(CheckInResultSchema, allow_none=True)


MobileOrderPageSchema = page_schema(MobileOrderSchema, "MobileOrderPage")


class MobileOrderQueryArgsSchema(PageArgsSchema):
    page_size = fields.Integer(load_default=200, validate=validate.Range(min=1, max=200))


class DeviceTimeSchema(ma.Schema):
    at = _at()


class ContactSchema(ma.Schema):
    outcome = fields.String(required=True, validate=validate.OneOf(CONTACT_OUTCOMES))
    called_at = LocalDateTime(required=True)
    appointment = fields.Nested(WindowSchema, load_default=None, allow_none=True)
    reason = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(RESCHEDULE_REASONS),
        metadata={"description": "a reschedule's cause (required when the order already has a window)"},
    )


class CheckInSchema(ma.Schema):
    lat = _lat(required=True)
    lng = _lng(required=True)
    accuracy_m = fields.Float(required=True, validate=_ACCURACY)
    at = LocalDateTime(required=True, metadata=_AT)


class ResourcesSchema(ma.Schema):
    box_id = Text(required=True, validate=validate.Length(min=1, max=64))
    port = Text(required=True, validate=validate.Length(min=1, max=32))
    ont_sn = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))
    loid = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))
    optical_power_dbm = fields.Float(
        load_default=None, allow_none=True, validate=validate.Range(min=-60, max=10)
    )
    at = _at()


class CompleteSchema(ma.Schema):
    at = _at()
    notes = Text(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    cause_code = Text(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))


class ReturnSchema(ma.Schema):
    reason_code = fields.String(required=True, validate=validate.OneOf(RETURN_REASONS))
    note = Text(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    at = _at()


class MobileSuspendSchema(ma.Schema):
    reason_code = fields.String(required=True, validate=validate.OneOf(SUSPEND_REASONS))
    until = LocalDateTime(load_default=None, allow_none=True)
    note = Text(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    at = _at()


class LocationSchema(ma.Schema):
    lat = _lat(required=True)
    lng = _lng(required=True)
    accuracy_m = fields.Float(load_default=None, allow_none=True, validate=_ACCURACY)
    at = LocalDateTime(required=True, metadata=_AT)


class MobilePositionSchema(ma.Schema):
    engineer_id = fields.Integer()
    lat = fields.Float(allow_none=True)
    lng = fields.Float(allow_none=True)
    accuracy_m = fields.Float(allow_none=True)
    at = LocalDateTime(allow_none=True)
    device_time_rejected = fields.Boolean()
