from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate
from webargs.fields import DelimitedList

from api.common.schemas import MAX_ID, LocalDateTime, PageArgsSchema, Text, page_schema
from dispatch.vocabulary import CANCEL_REASONS, ORDER_TYPES, STATUSES, SUSPEND_REASONS


class EngineerRefSchema(ma.Schema):
    id = fields.Integer()
    code = fields.String()
    name = fields.String()


class CustomerOutSchema(ma.Schema):
    id = fields.Integer()
    name = fields.String()
    phone = fields.String()


class AddressOutSchema(ma.Schema):
    text = fields.String()
    district = fields.String(attribute="district_name")
    lat = fields.Float(allow_none=True)
    lng = fields.Float(allow_none=True)
    location_source = fields.String()


class ClockSchema(ma.Schema):
    clock = fields.String()
    status = fields.String()
    started_at = LocalDateTime()
    due_at = LocalDateTime(allow_none=True)
    stopped_at = LocalDateTime(allow_none=True)
    breached_at = LocalDateTime(allow_none=True)


# Built once: instantiating a field or a schema (which copies its declared fields) costs more than dumping
# with it, and every order in every list goes through these. Neither keeps state between dumps.
_LOCAL = LocalDateTime()
_CLOCKS = ClockSchema(many=True)


def _window(start: Any, end: Any) -> dict[str, Any] | None:
    if start is None:
        return None
    return {"start": _LOCAL._serialize(start, None, None), "end": _LOCAL._serialize(end, None, None)}


class OrderSchema(ma.Schema):
    id = fields.Integer()
    external_id = fields.String()
    order_type = fields.String()
    pay_mode = fields.String()
    priority = fields.String()
    status = fields.String()
    customer = fields.Nested(CustomerOutSchema)
    address = fields.Nested(AddressOutSchema)
    engineer = fields.Nested(EngineerRefSchema, allow_none=True)
    appointment = fields.Method("_appointment", metadata={"description": "null or {start, end}"})
    requested_window = fields.Method("_requested", metadata={"description": "null or {start, end}"})
    products = fields.List(fields.String())
    notes = fields.String(allow_none=True)
    suspend_reason = fields.String(allow_none=True)
    suspended_until = LocalDateTime(allow_none=True)
    return_reason = fields.String(allow_none=True)
    cancel_reason = fields.String(allow_none=True)
    resources = fields.Method("_resources")
    created_at = LocalDateTime()
    updated_at = LocalDateTime()
    completed_at = LocalDateTime(allow_none=True)
    version = fields.Integer()
    sla = fields.Method(
        "_sla", metadata={"description": "the SLA clocks: [{clock, status, started_at, due_at, ...}]"}
    )

    def _appointment(self, order: Any) -> dict[str, Any] | None:
        return _window(order.appointment_start, order.appointment_end)

    def _requested(self, order: Any) -> dict[str, Any] | None:
        return _window(order.requested_start, order.requested_end)

    def _sla(self, order: Any) -> list[dict[str, Any]]:
        return _CLOCKS.dump(getattr(order, "sla_clocks", []))

    def _resources(self, order: Any) -> dict[str, Any]:
        return {
            "box_id": order.box_id,
            "port": order.port,
            "ont_sn": order.ont_sn,
            "loid": order.loid,
            "optical_power_dbm": order.optical_power_dbm,
        }


class EventSchema(ma.Schema):
    id = fields.Integer()
    action = fields.String()
    from_status = fields.String(allow_none=True)
    to_status = fields.String(allow_none=True)
    actor_type = fields.String()
    actor_id = fields.Integer(allow_none=True)
    actor_name = fields.String()
    source = fields.String()
    occurred_at = LocalDateTime()
    device_time = LocalDateTime(allow_none=True)
    payload = fields.Dict()


class NotificationSchema(ma.Schema):
    id = fields.Integer()
    order_id = fields.Integer(allow_none=True)
    to = fields.String(attribute="recipient", allow_none=True)
    template = fields.String(allow_none=True)
    body = fields.String(allow_none=True)
    status = fields.String()
    provider_sid = fields.String(allow_none=True)
    created_at = LocalDateTime()
    sent_at = LocalDateTime(allow_none=True)


class OrderDetailSchema(OrderSchema):
    events = fields.List(fields.Nested(EventSchema))
    notifications = fields.List(fields.Nested(NotificationSchema))
    allowed_actions = fields.List(fields.String())


class WarningSchema(ma.Schema):
    code = fields.String()
    message = fields.String()


class AssignedOrderSchema(OrderSchema):
    warnings = fields.List(fields.Nested(WarningSchema))


OrderPageSchema = page_schema(OrderSchema, "OrderPage")


class OrderQueryArgsSchema(PageArgsSchema):
    status = DelimitedList(fields.String(validate=validate.OneOf(STATUSES)), load_default=list)
    order_type = fields.String(validate=validate.OneOf(ORDER_TYPES))
    district = Text(validate=validate.Length(min=1, max=50))
    engineer_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    external_id = Text(validate=validate.Length(min=1, max=64))
    sla = fields.String(
        validate=validate.OneOf(("at_risk", "breached")),
        metadata={
            "description": "at_risk: past a warning, not yet due; breached: an open order with a breach"
        },
    )


class AssignSchema(ma.Schema):
    engineer_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
    auto = fields.Boolean()

    @ma.validates_schema
    def _one_of(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("engineer_id" in data) == bool(data.get("auto")):
            raise ma.ValidationError("Give either engineer_id or auto: true.", "engineer_id")


class CandidateQueryArgsSchema(ma.Schema):
    limit = fields.Integer(load_default=10, validate=validate.Range(min=1, max=50))
    include_rejected = fields.Boolean(
        load_default=False,
        metadata={"description": "also list engineers a hard rule excludes, with the rules they break"},
    )


class CandidateEngineerSchema(ma.Schema):
    id = fields.Integer()
    code = fields.String()
    name = fields.String()


class CandidateSchema(ma.Schema):
    engineer = fields.Nested(CandidateEngineerSchema)
    score = fields.Float(
        allow_none=True, metadata={"description": "0..1, higher is better; null: rejected by a rule"}
    )
    distance_km = fields.Float(
        allow_none=True, metadata={"description": "geodesic, from the live or home position"}
    )
    position = fields.String(allow_none=True, metadata={"description": "live, home, or null (unknown)"})
    reasons = fields.Dict(
        metadata={
            "description": "per factor (distance, load, sla_urgency, team_balance): value, weight, facts"
        }
    )
    violations = fields.List(fields.String(), metadata={"description": "hard rules broken (rejected ones)"})


class CancelSchema(ma.Schema):
    reason = Text(required=True, validate=validate.Length(min=1, max=500))
    # customer_withdrew takes the order out of the completion-rate denominator (DOMAIN.md "KPIs");
    # default: customer_withdrew from the hotline's key, other from a dispatcher.
    reason_code = fields.String(load_default=None, validate=validate.OneOf(CANCEL_REASONS))


class SuspendSchema(ma.Schema):
    reason_code = fields.String(required=True, validate=validate.OneOf(SUSPEND_REASONS))
    note = Text(load_default=None, allow_none=True, validate=validate.Length(max=1000))
    until = LocalDateTime(load_default=None, allow_none=True)


class ResumeSchema(ma.Schema):
    note = Text(load_default=None, allow_none=True, validate=validate.Length(max=1000))


class AcceptanceSchema(ma.Schema):
    decision = fields.String(required=True, validate=validate.OneOf(("approve", "reject")))
    note = Text(load_default=None, allow_none=True, validate=validate.Length(max=1000))
