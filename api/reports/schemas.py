from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from dispatch.models.reporting import GROUPINGS

FORMATS = ("json", "csv", "xlsx")


class KpiQueryArgsSchema(ma.Schema):
    from_ = fields.Date(required=True, data_key="from", metadata={"description": "first business day"})
    to = fields.Date(required=True, metadata={"description": "last business day (inclusive)"})
    group_by = fields.String(load_default="order_type", validate=validate.OneOf(GROUPINGS))
    format = fields.String(load_default="json", validate=validate.OneOf(FORMATS))

    @ma.validates_schema
    def _range(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("from_") and data.get("to") and data["to"] < data["from_"]:
            raise ma.ValidationError("Must not be before from.", "to")


FIGURE = "{numerator, denominator, value, target, met}"


class KpiGroupSchema(ma.Schema):
    key = fields.String(metadata={"description": "'' (whole city), district, team id or engineer id"})
    name = fields.String()
    completion = fields.List(
        fields.Dict(),
        metadata={
            "description": f"per order type: received, excluded, completed, rate and on_time_rate {FIGURE}"
        },
    )
    complaints = fields.List(
        fields.Dict(), metadata={"description": f"per category: count, per_day {FIGURE}; escalated by cause"}
    )
    sla = fields.List(
        fields.Dict(), metadata={"description": f"per clock: met, breached, compliance {FIGURE}"}
    )
    appointment_kept = fields.Dict(metadata={"description": FIGURE})
    first_time_fix = fields.Dict(metadata={"description": FIGURE})
    satisfaction = fields.Dict(metadata={"description": FIGURE})


class KpiReportSchema(ma.Schema):
    from_ = fields.String(data_key="from", attribute="from")
    to = fields.String()
    days = fields.Integer()
    group_by = fields.String()
    generated_at = fields.String()
    targets = fields.Dict()
    groups = fields.List(fields.Nested(KpiGroupSchema))
