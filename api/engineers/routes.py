"""Engineers: admins manage them; dispatchers and managers read them."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.common.schemas import page_body
from api.engineers.schemas import (
    EngineerPageSchema,
    EngineerPatchSchema,
    EngineerQueryArgsSchema,
    EngineerSchema,
)
from dispatch.services import engineers

blp = Blueprint("api-engineers", __name__, url_prefix="/api/v1/engineers", description="Engineers")


@blp.route("")
class Engineers(MethodView):
    @blp.arguments(EngineerQueryArgsSchema, location="query")
    @blp.response(200, EngineerPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List engineers by code."""
        items, total = engineers.list_engineers(
            actor=current_actor(),
            page=args["page"],
            page_size=args["page_size"],
            team=args.get("team"),
            active=args.get("active"),
        )
        return page_body(items, total, args)

    @blp.arguments(EngineerSchema)
    @blp.response(201, EngineerSchema)
    @blp.alt_response(409, description="Code already exists")
    def post(self, data: dict[str, Any]) -> Any:
        """Create an engineer (shifts default to every day 08:00–20:00)."""
        return engineers.create_engineer(data, actor=current_actor())


@blp.route("/<int:engineer_id>")
class EngineerById(MethodView):
    @blp.response(200, EngineerSchema)
    def get(self, engineer_id: int) -> Any:
        """One engineer."""
        return engineers.get_engineer(engineer_id, actor=current_actor())

    @blp.arguments(EngineerPatchSchema())
    @blp.response(200, EngineerSchema)
    def patch(self, data: dict[str, Any], engineer_id: int) -> Any:
        """Change some of an engineer's fields; ``active: false`` takes them off dispatch."""
        return engineers.update_engineer(engineer_id, data, actor=current_actor())
