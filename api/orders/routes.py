"""Orders for dispatchers, the acceptance desk and managers."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.common.schemas import Decorated, page_body
from api.orders.schemas import (
    AcceptanceSchema,
    AssignedOrderSchema,
    AssignSchema,
    CancelSchema,
    CandidateQueryArgsSchema,
    CandidateSchema,
    OrderDetailSchema,
    OrderPageSchema,
    OrderQueryArgsSchema,
    OrderSchema,
    ResumeSchema,
    SuspendSchema,
)
from dispatch import workflow
from dispatch.services import dispatching, orders

blp = Blueprint("api-orders", __name__, url_prefix="/api/v1/orders", description="Work orders")

_CONFLICT = "Illegal transition for the order's current status (body carries `status`)"


@blp.route("")
class Orders(MethodView):
    @blp.arguments(OrderQueryArgsSchema, location="query")
    @blp.response(200, OrderPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List orders, newest first, with filters and pagination."""
        filters = orders.OrderFilters(
            status=tuple(args.get("status") or ()),
            order_type=args.get("order_type"),
            district=args.get("district"),
            engineer_id=args.get("engineer_id"),
            external_id=args.get("external_id"),
            sla=args.get("sla"),
        )
        items, total = orders.list_orders(
            filters, page=args["page"], page_size=args["page_size"], actor=current_actor()
        )
        return page_body(items, total, args)


@blp.route("/<int:order_id>")
class OrderById(MethodView):
    @blp.response(200, OrderDetailSchema)
    @blp.alt_response(404, description="Unknown or not visible")
    def get(self, order_id: int) -> Any:
        """One order with its event timeline, SLA clocks and SMS notifications."""
        actor = current_actor()
        order = orders.get_order(order_id, actor=actor)
        return Decorated(
            order,
            events=orders.order_events(order),
            notifications=orders.order_notifications(order),
            allowed_actions=workflow.allowed_actions(order, actor),
        )


@blp.route("/<int:order_id>/candidates")
class Candidates(MethodView):
    @blp.arguments(CandidateQueryArgsSchema, location="query")
    @blp.response(200, CandidateSchema(many=True))
    def get(self, args: dict[str, Any], order_id: int) -> Any:
        """Engineers who may take the order, best first, each with the factors of its score."""
        return dispatching.candidates(
            order_id, actor=current_actor(), limit=args["limit"], include_rejected=args["include_rejected"]
        )


@blp.route("/<int:order_id>/assign")
class Assign(MethodView):
    @blp.arguments(AssignSchema)
    @blp.response(200, AssignedOrderSchema)
    @blp.alt_response(
        409, description=_CONFLICT + "; the engineer is inactive; or (auto) no engineer qualifies"
    )
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Assign or reassign an engineer, or the best qualified one (``auto``); broken rules of a manual
        choice come back as ``warnings``."""
        order, warnings = dispatching.assign_order(
            order_id, data.get("engineer_id"), auto=bool(data.get("auto")), actor=current_actor()
        )
        return Decorated(order, warnings=warnings)


@blp.route("/<int:order_id>/cancel")
class Cancel(MethodView):
    @blp.arguments(CancelSchema)
    @blp.response(200, OrderSchema)
    @blp.alt_response(409, description=_CONFLICT)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Withdraw an open order."""
        return orders.cancel_order(
            order_id, reason=data["reason"], reason_code=data["reason_code"], actor=current_actor()
        )


@blp.route("/<int:order_id>/suspend")
class Suspend(MethodView):
    @blp.arguments(SuspendSchema)
    @blp.response(200, OrderSchema)
    @blp.alt_response(409, description=_CONFLICT)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Put an open order on hold with a reason code, optionally until a time."""
        return orders.suspend_order(
            order_id,
            reason_code=data["reason_code"],
            note=data["note"],
            until=data["until"],
            actor=current_actor(),
        )


@blp.route("/<int:order_id>/resume")
class Resume(MethodView):
    @blp.arguments(ResumeSchema)
    @blp.response(200, OrderSchema)
    @blp.alt_response(409, description=_CONFLICT)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Resume a suspended order in the status it had."""
        return orders.resume_order(order_id, note=data["note"], actor=current_actor())


@blp.route("/<int:order_id>/acceptance")
class Acceptance(MethodView):
    @blp.arguments(AcceptanceSchema)
    @blp.response(200, OrderSchema)
    @blp.alt_response(409, description=_CONFLICT)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """The acceptance desk's decision on a submitted install-then-pay order."""
        return orders.decide_acceptance(
            order_id, decision=data["decision"], note=data["note"], actor=current_actor()
        )
