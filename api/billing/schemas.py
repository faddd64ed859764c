from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from dispatch.services.billing import MAX_LIMIT

MAX_SEQ = 2**63 - 1  # seq is a BIGINT: a larger cursor would be a database error, not a 422


class BillingEventsArgsSchema(ma.Schema):
    after = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=MAX_SEQ),
        metadata={"description": "the `next_after` of the previous page (0 to start)"},
    )
    limit = fields.Integer(load_default=500, validate=validate.Range(min=1, max=MAX_LIMIT))


class BillingEventSchema(ma.Schema):
    seq = fields.Integer(required=True, metadata={"description": "dense, strictly increasing"})
    id = fields.Integer(required=True, metadata={"description": "stable event id (dedupe on it or on seq)"})
    type = fields.String(required=True)
    occurred_at = fields.String(required=True, metadata={"description": "ISO 8601 in DISPATCH_TZ"})
    payload = fields.Dict(required=True)


class BillingEventsPageSchema(ma.Schema):
    events = fields.List(fields.Nested(BillingEventSchema), required=True)
    next_after = fields.Integer(required=True, metadata={"description": "ask `after=` this next time"})
