"""SMS notifications (the outbox's SMS rows with their delivery status) for the dispatch desk."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.common.schemas import page_body
from api.notifications.schemas import NotificationPageSchema, NotificationQueryArgsSchema
from dispatch.services import notifications

blp = Blueprint(
    "api-notifications", __name__, url_prefix="/api/v1/notifications", description="SMS notifications"
)


@blp.route("")
class Notifications(MethodView):
    @blp.arguments(NotificationQueryArgsSchema, location="query")
    @blp.response(200, NotificationPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List SMS messages, newest first, optionally of one order."""
        items, total = notifications.list_notifications(
            actor=current_actor(),
            page=args["page"],
            page_size=args["page_size"],
            order_id=args.get("order_id"),
        )
        return page_body(items, total, args)
