"""Day plans: dispatchers run the planner for a day and districts, read the plan, accept or discard it."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.common.schemas import Decorated
from api.plans.schemas import (
    AcceptResultSchema,
    PlanListSchema,
    PlanQueryArgsSchema,
    PlanRequestSchema,
    PlanSchema,
)
from dispatch.models import DayPlan
from dispatch.services import planning

blp = Blueprint("api-plans", __name__, url_prefix="/api/v1/plans", description="Day plans")

_STATUS = "The plan is no longer proposed (body carries `status`)"


def _detail(plan: DayPlan) -> Decorated:
    view = planning.describe(plan)
    return Decorated(plan, districts=view["districts"], routes=view["routes"], unplanned=view["unplanned"])


@blp.route("")
class Plans(MethodView):
    @blp.arguments(PlanQueryArgsSchema, location="query")
    @blp.response(200, PlanListSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List day plans, newest first."""
        return {"items": planning.list_plans(args.get("day"), actor=current_actor())}

    @blp.arguments(PlanRequestSchema)
    @blp.response(201, PlanSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Plan a day for some districts: each open order that fits gets an engineer, a place, an ETA."""
        plan = planning.propose_plan(
            data["day"],
            data["district_ids"],
            actor=current_actor(),
            time_limit_seconds=data.get("time_limit_seconds"),
        )
        return _detail(plan)


@blp.route("/<int:plan_id>")
class PlanById(MethodView):
    @blp.response(200, PlanSchema)
    @blp.alt_response(404, description="Unknown plan")
    def get(self, plan_id: int) -> Any:
        """One plan per engineer: visits in order with ETAs, travel before and after, unplanned orders."""
        return _detail(planning.get_plan(plan_id, actor=current_actor()))


@blp.route("/<int:plan_id>/accept")
class AcceptPlan(MethodView):
    @blp.response(200, AcceptResultSchema)
    @blp.alt_response(404, description="Unknown plan")
    @blp.alt_response(409, description=_STATUS)
    def post(self, plan_id: int) -> dict[str, Any]:
        """Accept a proposed plan: orders are assigned through the workflow; changed orders are skipped."""
        plan, result = planning.accept_plan(plan_id, actor=current_actor())
        return {"plan": plan, **result}


@blp.route("/<int:plan_id>/discard")
class DiscardPlan(MethodView):
    @blp.response(200, PlanSchema)
    @blp.alt_response(404, description="Unknown plan")
    @blp.alt_response(409, description=_STATUS)
    def post(self, plan_id: int) -> Any:
        """Discard a proposed plan; the orders stay as they are."""
        return _detail(planning.discard_plan(plan_id, actor=current_actor()))
