"""Hotline intake (I受理): orders arrive here from the 10000 hotline's system (API key, scope ``intake``)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.common.limits import intake_limit
from api.complaints.schemas import ComplaintSchema
from api.intake.schemas import ComplaintIntakeSchema, OrderIntakeSchema
from api.orders.schemas import OrderSchema
from dispatch.services import complaints, intake

blp = Blueprint("api-intake", __name__, url_prefix="/api/v1/intake", description="Hotline intake")
# One instance for every request: webargs instantiates a schema *class* (and its nested schemas) per request;
# marshmallow schemas keep no state between loads.
INTAKE_SCHEMA = OrderIntakeSchema()


@blp.route("/orders")
class IntakeOrders(MethodView):
    decorators = [intake_limit]

    @blp.arguments(INTAKE_SCHEMA)
    @blp.response(201, OrderSchema)
    @blp.alt_response(200, schema=OrderSchema, description="Replay: the order created by the first request")
    @blp.alt_response(409, description="external_id already used for a different order")
    @blp.alt_response(429, description="INTAKE_RATE_LIMIT reached for this API key")
    def post(self, data: dict[str, Any]) -> Any:
        """Create an order; idempotent on ``external_id``."""
        order, created = intake.receive_order(data, actor=current_actor())
        return (order.view() if isinstance(order, intake.Written) else order), (201 if created else 200)


@blp.route("/complaints")
class IntakeComplaints(MethodView):
    decorators = [intake_limit]

    @blp.arguments(ComplaintIntakeSchema)
    @blp.response(201, ComplaintSchema)
    @blp.alt_response(200, schema=ComplaintSchema, description="Replay: the complaint recorded first")
    @blp.alt_response(409, description="external_id already used for a different complaint")
    @blp.alt_response(429, description="INTAKE_RATE_LIMIT reached for this API key")
    def post(self, data: dict[str, Any]) -> Any:
        """Record a complaint about an order (or none); idempotent on ``external_id``."""
        complaint, created = complaints.record_complaint(data, actor=current_actor())
        return complaint, (201 if created else 200)
