from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from api.common.schemas import MAX_ID, LocalDateTime
from api.orders.schemas import EngineerRefSchema
from dispatch.models.planning import PLAN_STATUSES
from dispatch.services.planning import MAX_DISTRICTS, MAX_TIME_LIMIT_SECONDS


class PlanRequestSchema(ma.Schema):
    day = fields.Date(required=True, metadata={"description": "The business day (DISPATCH_TZ), YYYY-MM-DD"})
    district_ids = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID)),
        required=True,
        validate=validate.Length(min=1, max=MAX_DISTRICTS),
    )
    time_limit_seconds = fields.Float(
        allow_nan=False,
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_TIME_LIMIT_SECONDS),
        metadata={"description": "The solver's time limit (default PLAN_TIME_LIMIT_SECONDS)"},
    )


class PlanQueryArgsSchema(ma.Schema):
    day = fields.Date(metadata={"description": "Only this day's plans (else the latest 50)"})


class DistrictRefSchema(ma.Schema):
    id = fields.Integer()
    name = fields.String()


class PlanWindowSchema(ma.Schema):
    start = LocalDateTime()
    end = LocalDateTime()


class PlanVisitSchema(ma.Schema):
    sequence = fields.Integer()
    order_id = fields.Integer()
    external_id = fields.String(allow_none=True)
    order_type = fields.String(allow_none=True)
    status = fields.String(allow_none=True, metadata={"description": "The order's status now"})
    address = fields.String(allow_none=True)
    window = fields.Nested(PlanWindowSchema, metadata={"description": "The window the planner kept to"})
    open_end = fields.Boolean(metadata={"description": "The window runs to the end of the day"})
    eta = LocalDateTime(metadata={"description": "Planned service start"})
    arrival = LocalDateTime()
    leg_m = fields.Integer(metadata={"description": "Metres from the previous stop (or the start)"})
    pinned = fields.Boolean(metadata={"description": "Already with this engineer: kept where it is"})
    engineer_before = fields.Nested(EngineerRefSchema, allow_none=True)


class PlanRouteSchema(ma.Schema):
    engineer = fields.Nested(EngineerRefSchema)
    start = fields.String(metadata={"description": "Where the route starts: live, home or district"})
    shift = fields.Nested(PlanWindowSchema)
    capacity = fields.Integer(metadata={"description": "Orders the engineer may still take that day"})
    travel_before_m = fields.Integer()
    travel_after_m = fields.Integer()
    visits = fields.List(fields.Nested(PlanVisitSchema))


class UnplannedSchema(ma.Schema):
    order_id = fields.Integer()
    external_id = fields.String()
    order_type = fields.String(allow_none=True)
    address = fields.String(allow_none=True)
    reason = fields.String()
    message = fields.String()


class AcceptedItemSchema(ma.Schema):
    order_id = fields.Integer()
    external_id = fields.String()
    engineer_id = fields.Integer()
    eta = fields.String()
    warnings = fields.List(fields.String())
    reason = fields.String()
    message = fields.String()


class PlanSummarySchema(ma.Schema):
    id = fields.Integer()
    day = fields.Date()
    district_ids = fields.List(fields.Integer())
    status = fields.String(validate=validate.OneOf(PLAN_STATUSES))
    proposed_by = fields.String()
    proposed_at = LocalDateTime()
    decided_by = fields.String(allow_none=True)
    decided_at = LocalDateTime(allow_none=True)
    speed_kmh = fields.Float()
    time_limit_seconds = fields.Float()
    solve_seconds = fields.Float()
    orders_count = fields.Integer()
    planned_count = fields.Integer()
    travel_before_m = fields.Integer()
    travel_after_m = fields.Integer()


class PlanSchema(PlanSummarySchema):
    districts = fields.List(fields.Nested(DistrictRefSchema))
    routes = fields.List(fields.Nested(PlanRouteSchema))
    unplanned = fields.List(fields.Nested(UnplannedSchema))
    result = fields.Dict(allow_none=True, metadata={"description": "What accepting did"})


class PlanListSchema(ma.Schema):
    items = fields.List(fields.Nested(PlanSummarySchema), required=True)


class AcceptResultSchema(ma.Schema):
    plan = fields.Nested(PlanSummarySchema)
    assigned = fields.List(fields.Nested(AcceptedItemSchema))
    unchanged = fields.List(fields.Nested(AcceptedItemSchema))
    skipped = fields.List(fields.Nested(AcceptedItemSchema))
