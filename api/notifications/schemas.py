from __future__ import annotations

from marshmallow import fields, validate

from api.common.schemas import MAX_ID, PageArgsSchema, page_schema
from api.orders.schemas import NotificationSchema

NotificationPageSchema = page_schema(NotificationSchema, "NotificationPage")


class NotificationQueryArgsSchema(PageArgsSchema):
    order_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))
