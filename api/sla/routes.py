"""SLA policies: admins change them; dispatchers and managers read them. Changes apply to clocks started
afterwards (running clocks keep their deadlines)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.sla.schemas import SlaPolicySchema, SlaPolicyUpdateSchema
from dispatch.services import sla

blp = Blueprint("api-sla-policies", __name__, url_prefix="/api/v1/sla-policies", description="SLA policies")


@blp.route("")
class SlaPolicies(MethodView):
    @blp.response(200, SlaPolicySchema(many=True))
    def get(self) -> Any:
        """List every policy: one per order type and clock."""
        return sla.list_policies(actor=current_actor())


@blp.route("/<order_type>/<clock>")
class SlaPolicyByKey(MethodView):
    @blp.arguments(SlaPolicyUpdateSchema)
    @blp.response(200, SlaPolicySchema)
    @blp.alt_response(404, description="Unknown order type or clock")
    def put(self, data: dict[str, Any], order_type: str, clock: str) -> Any:
        """Change one policy's target and warning threshold (for clocks started from now on)."""
        return sla.set_policy(
            order_type,
            clock,
            target_seconds=data["target_seconds"],
            warn_percent=data["warn_percent"],
            actor=current_actor(),
        )
