"""The billing feed: BOSS reads events by cursor (CONTRACT "Billing feed")."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.billing.schemas import BillingEventsArgsSchema, BillingEventsPageSchema
from api.common.auth import current_actor
from dispatch.services import billing

blp = Blueprint("api-billing", __name__, url_prefix="/api/v1/billing", description="Billing feed (BOSS)")


@blp.route("/events")
class BillingEvents(MethodView):
    @blp.arguments(BillingEventsArgsSchema, location="query")
    @blp.response(200, BillingEventsPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Events after the cursor ``after`` in ``seq`` order; ask again with ``after=next_after``."""
        result = billing.read_events(args["after"], args["limit"], actor=current_actor())
        return {"events": result.events, "next_after": result.next_after}
