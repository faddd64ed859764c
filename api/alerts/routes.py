"""SLA alerts for the dispatch desk: one warning and at most one breach per clock."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.alerts.schemas import AlertPageSchema, AlertQueryArgsSchema, AlertSchema
from api.common.auth import current_actor
from api.common.schemas import page_body
from dispatch.services import sla

blp = Blueprint("api-alerts", __name__, url_prefix="/api/v1/alerts", description="SLA alerts")


@blp.route("")
class Alerts(MethodView):
    @blp.arguments(AlertQueryArgsSchema, location="query")
    @blp.response(200, AlertPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List alerts, newest first; ``status=open`` for those nobody acknowledged yet."""
        items, total = sla.list_alerts(
            actor=current_actor(),
            page=args["page"],
            page_size=args["page_size"],
            order_id=args.get("order_id"),
            status=args.get("status"),
        )
        return page_body(items, total, args)


@blp.route("/<int:alert_id>/acknowledge")
class AcknowledgeAlert(MethodView):
    @blp.response(200, AlertSchema)
    @blp.alt_response(404, description="Unknown alert")
    def post(self, alert_id: int) -> Any:
        """Acknowledge an alert; a second acknowledgement keeps the first time and user."""
        return sla.acknowledge_alert(alert_id, actor=current_actor())
