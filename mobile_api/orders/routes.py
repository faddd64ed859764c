"""The engineer's orders on the PDA: list, detail and the field actions (CONTRACT §5 "Mobile / PDA")."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.common.schemas import Decorated, page_body
from dispatch.services import field
from mobile_api.orders.schemas import (
    CheckInSchema,
    CompleteSchema,
    ContactSchema,
    DeviceTimeSchema,
    LocationSchema,
    MobileOrderPageSchema,
    MobileOrderQueryArgsSchema,
    MobileOrderResultSchema,
    MobileOrderSchema,
    MobilePositionSchema,
    MobileSuspendSchema,
    ResourcesSchema,
    ReturnSchema,
)

blp = Blueprint("mobile-orders", __name__, url_prefix="/mobile/v1", description="The engineer's orders (PDA)")

_NOT_FOUND = "Unknown, or not this engineer's order"
_CONFLICT = "Illegal for the order's current status (body carries `status`), or a precondition is missing"
_INVALID = "Invalid body (per-field `errors`)"


def _out(view: field.FieldOrder) -> Decorated:
    return Decorated(
        view.order,
        checklist=list(view.checklist),
        missing=view.missing,
        allowed_actions=view.allowed_actions,
        warnings=view.warnings,
        check_in=view.check_in,
    )


def _mutation(schema: Any, *, required: bool = True) -> Any:
    """The decorators every order mutation shares: its body, the order it returns, its errors."""

    def wrap(view: Any) -> Any:
        for decorator in (
            blp.alt_response(422, description=_INVALID),
            blp.alt_response(409, description=_CONFLICT),
            blp.alt_response(404, description=_NOT_FOUND),
            blp.response(200, MobileOrderResultSchema),
            blp.arguments(schema, required=required),
        ):
            view = decorator(view)
        return view

    return wrap


@blp.route("/orders")
class MyOrders(MethodView):
    @blp.arguments(MobileOrderQueryArgsSchema, location="query")
    @blp.response(200, MobileOrderPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The engineer's open orders, soonest first, with what the app needs offline."""
        views, total = field.my_orders(current_actor(), page=args["page"], page_size=args["page_size"])
        return page_body([_out(v) for v in views], total, args)


@blp.route("/orders/<int:order_id>")
class MyOrder(MethodView):
    @blp.response(200, MobileOrderSchema)
    @blp.alt_response(404, description=_NOT_FOUND)
    def get(self, order_id: int) -> Any:
        """One of the engineer's orders with its SLA clocks, checklist and what is still missing."""
        return _out(field.field_order(order_id, actor=current_actor()))


@blp.route("/orders/<int:order_id>/take")
class Take(MethodView):
    @_mutation(DeviceTimeSchema, required=False)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Take a dispatched order."""
        return _out(field.take_order(order_id, at=data["at"], actor=current_actor()))


@blp.route("/orders/<int:order_id>/contacts")
class Contacts(MethodView):
    @_mutation(ContactSchema)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Log a call to the customer; reached with a window appoints (or reschedules) the visit."""
        return _out(
            field.record_contact(
                order_id,
                outcome=data["outcome"],
                called_at=data["called_at"],
                appointment=data["appointment"],
                reason=data["reason"],
                actor=current_actor(),
            )
        )


@blp.route("/orders/<int:order_id>/check-in")
class CheckIn(MethodView):
    @_mutation(CheckInSchema)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Check in at the site; the response carries the distance to the address and the radius verdict."""
        return _out(field.check_in(order_id, **data, actor=current_actor()))


@blp.route("/orders/<int:order_id>/resources")
class Resources(MethodView):
    @_mutation(ResourcesSchema)
    def put(self, data: dict[str, Any], order_id: int) -> Any:
        """Report the terminal resources (末梢资源) and the optical power; out-of-range power is warned."""
        return _out(field.report_resources(order_id, **data, actor=current_actor()))


@blp.route("/orders/<int:order_id>/submit")
class Submit(MethodView):
    @_mutation(DeviceTimeSchema, required=False)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Submit an install-then-pay order to the acceptance desk."""
        return _out(field.submit_for_acceptance(order_id, at=data["at"], actor=current_actor()))


@blp.route("/orders/<int:order_id>/complete")
class Complete(MethodView):
    @_mutation(CompleteSchema)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Complete the order; a 409 or 422 names what is still missing."""
        return _out(field.complete_order(order_id, **data, actor=current_actor()))


@blp.route("/orders/<int:order_id>/return")
class Return(MethodView):
    @_mutation(ReturnSchema)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Return the order to dispatch with a reason code."""
        return _out(field.return_order(order_id, **data, actor=current_actor()))


@blp.route("/orders/<int:order_id>/suspend")
class Suspend(MethodView):
    @_mutation(MobileSuspendSchema)
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Suspend the order with a reason code, optionally until a time."""
        return _out(field.suspend_order(order_id, **data, actor=current_actor()))


@blp.route("/location")
class Location(MethodView):
    @blp.arguments(LocationSchema)
    @blp.response(200, MobilePositionSchema)
    @blp.alt_response(422, description=_INVALID)
    def post(self, data: dict[str, Any]) -> Any:
        """Report the PDA's position (the live position used to rank engineers)."""
        return field.report_location(**data, actor=current_actor())
