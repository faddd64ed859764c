"""The acceptance desk (集中受理): the queue of install-then-pay orders, review, approve or reject.

The queue is oldest first with each order's 10-minute acceptance countdown and refreshes itself every
10 seconds (only the table: a note being typed on the review page is never replaced). ID photos are
personal data: the photo route streams a file only after the attachments service's check (the desk, admins
and the order's engineer; a dispatcher gets 403).
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, render_template, request, url_for
from werkzeug.wrappers import Response

from api.attachments.routes import attachment_response
from api.console.session import actor, back, handle
from dispatch.services import acceptance, attachments, orders
from dispatch.timeutil import to_local

ATTACHMENT_LABELS = {
    "id_card": "身份证照片",
    "before": "施工前照片",
    "after": "施工后照片",
    "ont_label": "光猫标签",
    "signature": "客户签名",
}
DECISION_DONE = {"approve": "已受理通过", "reject": "已驳回，工单退回装维经理"}


def _iso(value: datetime) -> str:
    """A UTC instant as ISO 8601 in DISPATCH_TZ (what console.js's countdowns parse)."""
    return to_local(value).isoformat()


def desk() -> str:
    """The acceptance queue: pending install-then-pay orders, oldest first, with their countdowns."""
    who = actor()
    return render_template(
        "console/desk.html",
        items=acceptance.acceptance_queue(actor=who),
        may_decide=acceptance.may_decide(who),
        labels=ATTACHMENT_LABELS,
        iso=_iso,
    )


def desk_queue() -> str:
    """The queue's table rows alone, for the page's 10-second refresh."""
    who = actor()
    return render_template(
        "console/desk_rows.html",
        items=acceptance.acceptance_queue(actor=who),
        may_decide=acceptance.may_decide(who),
        labels=ATTACHMENT_LABELS,
        iso=_iso,
    )


def desk_order(order_id: int) -> str:
    """One submitted order: customer, resources, photos and the approve / reject forms."""
    who = actor()
    return render_template(
        "console/desk_order.html",
        item=acceptance.desk_order(order_id, actor=who),
        may_decide=acceptance.may_decide(who),
        labels=ATTACHMENT_LABELS,
        iso=_iso,
    )


def desk_decide(order_id: int) -> Response:
    """Approve or reject a submitted order with an optional note, then back to the queue."""
    decision = request.form.get("decision", "")
    note = request.form.get("note", "").strip() or None
    external_id = request.form.get("external_id", "") or str(order_id)
    return handle(
        lambda: orders.decide_acceptance(order_id, decision=decision, note=note, actor=actor()),
        back(url_for("console.desk")),
        f"工单 {external_id} {DECISION_DONE.get(decision, '')}",
    )


def desk_photo(order_id: int, attachment_id: int) -> Response:
    """An attachment's file (ID photos only for the desk, admins and the engineer), shown inline."""
    attachment, path = attachments.get_attachment(order_id, attachment_id, actor=actor())
    response = attachment_response(attachment, path)
    response.headers["Content-Disposition"] = response.headers["Content-Disposition"].replace(
        "attachment", "inline", 1
    )
    return response


def register(blp: Blueprint) -> None:
    """Add this module's pages to the console blueprint."""
    blp.add_url_rule("/desk", "desk", desk)
    blp.add_url_rule("/desk/queue", "desk_queue", desk_queue)
    blp.add_url_rule("/desk/<int:order_id>", "desk_order", desk_order)
    blp.add_url_rule("/desk/<int:order_id>/decision", "desk_decide", desk_decide, methods=["POST"])
    blp.add_url_rule("/desk/<int:order_id>/attachments/<int:attachment_id>", "desk_photo", desk_photo)
