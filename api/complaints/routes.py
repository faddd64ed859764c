"""Complaints (投诉) for dispatchers, managers and admins; the hotline records them through intake."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.common.schemas import page_body
from api.complaints.schemas import ComplaintPageSchema, ComplaintQueryArgsSchema, ComplaintSchema
from dispatch.services import complaints

blp = Blueprint("api-complaints", __name__, url_prefix="/api/v1/complaints", description="Complaints")


@blp.route("")
class Complaints(MethodView):
    @blp.arguments(ComplaintQueryArgsSchema, location="query")
    @blp.response(200, ComplaintPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List complaints, newest first; filters: category, cause, order, engineer, team, district, days."""
        items, total = complaints.list_complaints(
            actor=current_actor(),
            page=args["page"],
            page_size=args["page_size"],
            category=args.get("category"),
            cause=args.get("cause"),
            order_id=args.get("order_id"),
            engineer_id=args.get("engineer_id"),
            team_id=args.get("team_id"),
            district=args.get("district"),
            start=args.get("from_"),
            end=args.get("to"),
        )
        return page_body(items, total, args)


@blp.route("/<int:complaint_id>")
class ComplaintDetail(MethodView):
    @blp.response(200, ComplaintSchema)
    @blp.alt_response(404, description="Unknown complaint")
    def get(self, complaint_id: int) -> Any:
        """One complaint."""
        return complaints.get_complaint(complaint_id, actor=current_actor())
