"""The dispatchers' pages: the order board, an order's detail with its actions, alerts and complaints.

The board lists orders newest first (the orders service's order, as the API lists them); the urgent ones
are a filter away (``sla=at_risk|breached``) and every row shows its running SLA clocks as live countdowns.
Its rows are refreshed every 10 s from ``/console/board/rows`` with the same query string. A page holds at
most 200 orders, like the API: a dispatcher works a filtered queue, not 5 000 rows at once.

What a page offers follows the services: the actions shown on an order are the workflow's
``allowed_actions`` for the signed-in user, and whatever is posted is checked again by the service.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, flash, render_template, request, url_for
from werkzeug.wrappers import Response

from api.attachments.routes import attachment_response
from api.console.session import actor, back, handle
from dispatch import workflow
from dispatch.actors import RECORD_COMPLAINTS
from dispatch.assignment.rules import MESSAGES as RULE_MESSAGES
from dispatch.clock import utcnow
from dispatch.errors import ValidationError
from dispatch.messaging.templates import CLOCK_LABELS
from dispatch.models import Order, OrderEvent
from dispatch.services import attachments, complaints, dispatching, orders, sla
from dispatch.timeutil import business_day, business_tz, to_local
from dispatch.vocabulary import (
    CANCEL_REASONS,
    COMPLAINT_CATEGORIES,
    COMPLAINT_CAUSES,
    ORDER_TYPE_LABELS,
    ORDER_TYPES,
    STATUS_LABELS,
    STATUSES,
    SUSPEND_REASONS,
)

PAGE_SIZES = (20, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
REFRESH_SECONDS = 10
CANDIDATE_LIMIT = 10
REJECTED_SHOWN = 30  # engineers a rule excludes, offered for a forced choice (fewest broken rules first)
COMPLAINT_DAYS = (1, 7, 30, 90)
LIVE_CLOCKS = ("running", "paused")

# --- labels (UI text) -----------------------------------------------------------------------------------

CLOCK_STATUS_LABELS = {
    "running": "计时中",
    "paused": "已暂停",
    "met": "达标",
    "breached": "超时",
    "cancelled": "已取消",
}
SLA_FILTER_LABELS = {"at_risk": "临近超时", "breached": "已超时"}
PRIORITY_LABELS = {"low": "低", "normal": "普通", "high": "高", "urgent": "紧急"}
PAY_MODE_LABELS = {"install_then_pay": "先装后付", "prepaid": "预付费"}
SUSPEND_REASON_LABELS = {
    "customer_unavailable": "客户联系不上",
    "customer_postponed": "客户要求延期",
    "no_resource": "无资源",
    "third_party": "第三方原因",
    "force_majeure": "不可抗力",
}
CANCEL_REASON_LABELS = {
    "customer_withdrew": "客户撤销",
    "duplicate": "重复工单",
    "provider": "我方原因",
    "other": "其他",
}
RETURN_REASON_LABELS = {
    "no_resource": "无资源",
    "wrong_address": "地址错误",
    "customer_refused": "客户拒装",
    "duplicate": "重复工单",
    "other": "其他",
}
CATEGORY_LABELS = {"backend_first_contact": "首问后端", "appointment": "约服", "escalated": "越级"}
CAUSE_LABELS = {"installation_service": "装维服务", "network": "网络", "other": "其他"}
ALERT_KIND_LABELS = {"warning": "预警", "breach": "超时"}
ALERT_STATUS_LABELS = {"open": "未确认", "acknowledged": "已确认", "all": "全部"}
ATTACHMENT_KIND_LABELS = {
    "id_card": "身份证",
    "before": "施工前",
    "after": "施工后",
    "ont_label": "光猫标签",
    "signature": "客户签名",
}
SMS_STATUS_LABELS = {
    "pending": "待发送",
    "deferred": "延后发送",
    "sent": "已发送",
    "delivered": "已送达",
    "undelivered": "未送达",
    "failed": "失败",
    "suppressed": "已退订",
}
TEMPLATE_LABELS = {
    "dispatch_engineer": "派单通知",
    "appointment_customer": "预约通知",
    "reschedule_customer": "改约通知",
    "reminder_customer": "上门提醒",
    "sla_warning": "时限预警",
    "sla_breach": "超时告警",
    "completion_customer": "竣工回访",
    "reschedule_request": "改约请求",
}
POSITION_LABELS = {"live": "实时位置", "home": "常驻地"}
FACTOR_LABELS = {
    "distance": "距离",
    "load": "当日负荷",
    "sla_urgency": "时限压力",
    "team_balance": "班组均衡",
}
CONTACT_OUTCOME_LABELS = {
    "reached": "已接通",
    "no_answer": "无人接听",
    "busy": "占线",
    "wrong_number": "号码错误",
}
ACTION_LABELS = {
    **{name: t.label for name, t in workflow.TRANSITIONS.items() if t.label},
    "intake": "受理建单",
    "attachment_added": "上传附件",
    "resources_reported": "上报资源",
    "sla_warning": "时限预警",
    "sla_breach": "时限超时",
    "customer_confirmed": "客户确认预约",
    "customer_reschedule_requested": "客户要求改约",
    "satisfaction_recorded": "满意度回复",
}
LABELS: dict[str, Any] = {
    "STATUS_LABELS": STATUS_LABELS,
    "ORDER_TYPE_LABELS": ORDER_TYPE_LABELS,
    "CLOCK_LABELS": CLOCK_LABELS,
    "CLOCK_STATUS_LABELS": CLOCK_STATUS_LABELS,
    "SLA_FILTER_LABELS": SLA_FILTER_LABELS,
    "PRIORITY_LABELS": PRIORITY_LABELS,
    "PAY_MODE_LABELS": PAY_MODE_LABELS,
    "SUSPEND_REASON_LABELS": SUSPEND_REASON_LABELS,
    "CANCEL_REASON_LABELS": CANCEL_REASON_LABELS,
    "RETURN_REASON_LABELS": RETURN_REASON_LABELS,
    "CATEGORY_LABELS": CATEGORY_LABELS,
    "CAUSE_LABELS": CAUSE_LABELS,
    "ALERT_KIND_LABELS": ALERT_KIND_LABELS,
    "ALERT_STATUS_LABELS": ALERT_STATUS_LABELS,
    "ATTACHMENT_KIND_LABELS": ATTACHMENT_KIND_LABELS,
    "SMS_STATUS_LABELS": SMS_STATUS_LABELS,
    "TEMPLATE_LABELS": TEMPLATE_LABELS,
    "POSITION_LABELS": POSITION_LABELS,
    "FACTOR_LABELS": FACTOR_LABELS,
    "ACTION_LABELS": ACTION_LABELS,
    "RULE_MESSAGES": RULE_MESSAGES,
}

# Payload keys a timeline leaves out: bookkeeping for the KPIs and the assignment audit, shown elsewhere.
HIDDEN_PAYLOAD_KEYS = frozenset(
    {
        "candidates",
        "weights",
        "team_id",
        "engineer_id",
        "previous_engineer_id",
        "clock_id",
        "attachment_id",
        "sha256",
        "size",
        "message_sid",
        "score",
        "due_at",
        "at",
        "customer",
        "address",
        "requested_window",
        "products",
        "external_id",
        "order_type",
        "pay_mode",
        "priority",
        "lat",
        "lng",
    }
)
PAYLOAD_SUMMARY_MAX = 160


# --- forms and queries ------------------------------------------------------------------------------------


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError("输入有误", errors={field: [message]})


def _text(form: Any, name: str, label: str, *, required: bool = False, max_length: int = 500) -> str | None:
    value = (form.get(name) or "").strip()
    if "\x00" in value:
        raise _invalid(label, "含有非法字符")
    if not value:
        if required:
            raise _invalid(label, "必填")
        return None
    if len(value) > max_length:
        raise _invalid(label, f"最多 {max_length} 个字符")
    return value


def _choice(
    form: Any, name: str, label: str, allowed: tuple[str, ...], *, required: bool = False
) -> str | None:
    value = (form.get(name) or "").strip()
    if not value:
        if required:
            raise _invalid(label, "必选")
        return None
    if value not in allowed:
        raise _invalid(label, "取值无效")
    return value


def _local_datetime(form: Any, name: str, label: str, *, required: bool = False) -> datetime | None:
    """A ``datetime-local`` field (``2026-11-25T14:30``), read in DISPATCH_TZ."""
    value = (form.get(name) or "").strip()
    if not value:
        if required:
            raise _invalid(label, "必填")
        return None
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        if not 1970 <= parsed.year <= 2999:
            break
        return parsed.replace(tzinfo=business_tz())
    raise _invalid(label, "时间格式无效")


def _digits(value: str) -> bool:
    """A short run of ASCII digits: ``"²".isdigit()`` holds but ``int("²")`` raises, and so does ``int()``
    of more than 4 300 digits."""
    return len(value) <= 12 and value.isascii() and value.isdigit()


def _positive_int(form: Any, name: str, label: str) -> int:
    value = (form.get(name) or "").strip()
    if not _digits(value) or not 0 < int(value) <= orders.MAX_ID:
        raise _invalid(label, "无效")
    return int(value)


@dataclass(frozen=True)
class BoardQuery:
    """The board's filters as the query string carries them (``status``: empty = every open status)."""

    status: str = ""
    order_type: str = ""
    district: str = ""
    engineer: str = ""
    sla: str = ""
    q: str = ""
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

    @classmethod
    def parse(cls, args: Any) -> BoardQuery:
        status = _choice(args, "status", "状态", ("all", *STATUSES)) or ""
        page_text = (args.get("page") or "1").strip()
        size_text = (args.get("page_size") or str(DEFAULT_PAGE_SIZE)).strip()
        if not _digits(page_text) or not 1 <= int(page_text) <= 100_000:
            raise _invalid("页码", "无效")
        if not _digits(size_text) or int(size_text) not in PAGE_SIZES:
            raise _invalid("每页条数", f"只能是 {', '.join(map(str, PAGE_SIZES))}")
        return cls(
            status=status,
            order_type=_choice(args, "order_type", "工单类型", ORDER_TYPES) or "",
            district=_text(args, "district", "区县", max_length=50) or "",
            engineer=_text(args, "engineer", "工程师工号", max_length=32) or "",
            sla=_choice(args, "sla", "时限", ("at_risk", "breached")) or "",
            q=_text(args, "q", "工单号", max_length=64) or "",
            page=int(page_text),
            page_size=int(size_text),
        )

    def filters(self) -> orders.OrderFilters:
        if self.status == "all":
            statuses: tuple[str, ...] = ()
        elif self.status:
            statuses = (self.status,)
        else:
            statuses = tuple(s for s in STATUSES if s not in ("completed", "cancelled"))
        return orders.OrderFilters(
            status=statuses,
            order_type=self.order_type or None,
            district=self.district or None,
            external_id=self.q or None,
            sla=self.sla or None,
            engineer_code=self.engineer or None,
        )

    def args(self, **changes: Any) -> dict[str, Any]:
        """The non-default query arguments (with ``changes``), for links to other pages of the board."""
        values = {f.name: getattr(self, f.name) for f in fields(self)} | changes  # asdict deep-copies
        return {k: v for k, v in values.items() if v != _QUERY_DEFAULTS[k]}

    def url(self, endpoint: str, **changes: Any) -> str:
        query = urlencode(self.args(**changes))
        return url_for(endpoint) + (f"?{query}" if query else "")


_QUERY_DEFAULTS = {f.name: getattr(BoardQuery(), f.name) for f in fields(BoardQuery)}


# --- view helpers ---------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str:
    return to_local(value).isoformat() if value is not None else ""


def _window(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    text = to_local(start).strftime("%m-%d %H:%M")
    if end is not None:
        local_end = to_local(end)
        same_day = local_end.date() == to_local(start).date()
        text += "–" + local_end.strftime("%H:%M" if same_day else "%m-%d %H:%M")
    return text


def _appointment_window(order: Order) -> str:
    return _window(order.appointment_start, order.appointment_end)


def _requested_window(order: Order) -> str:
    return _window(order.requested_start, order.requested_end)


def _payload_summary(event: OrderEvent) -> str:
    """The event's payload in a line: the facts a dispatcher reads, labelled; bookkeeping left out."""
    payload = event.payload or {}
    parts: list[str] = []
    for key, value in payload.items():
        if key in HIDDEN_PAYLOAD_KEYS or value in (None, "", [], {}):
            continue
        if key == "engineer_code":
            parts.append(f"工程师 {value}")
        elif key == "mode":
            parts.append("自动指派" if value == "auto" else "手动指派")
        elif key == "rank":
            parts.append(f"排名 {value}")
        elif key == "warnings" and isinstance(value, list):
            parts.append("提醒：" + "、".join(RULE_MESSAGES.get(str(v), str(v)) for v in value))
        elif key == "reason_code":
            label = {**SUSPEND_REASON_LABELS, **CANCEL_REASON_LABELS, **RETURN_REASON_LABELS}
            parts.append(f"原因 {label.get(str(value), value)}")
        elif key == "clock":
            parts.append(f"时限 {CLOCK_LABELS.get(str(value), value)}")
        elif key == "late_s" and isinstance(value, int | float):
            parts.append(f"超时 {int(value) // 60} 分钟")
        elif key == "kind":
            parts.append(ATTACHMENT_KIND_LABELS.get(str(value), str(value)))
        elif key == "outcome":
            parts.append(CONTACT_OUTCOME_LABELS.get(str(value), str(value)))
        elif key == "appointment" and isinstance(value, dict):
            parts.append("时段 " + _window(_parse_iso(value.get("start")), _parse_iso(value.get("end"))))
        elif key == "until":
            when = _parse_iso(value)
            parts.append("至 " + (to_local(when).strftime("%m-%d %H:%M") if when else str(value)))
        elif not isinstance(value, dict | list):
            parts.append(f"{key} {value}" if key not in ("reason", "note", "notes") else str(value))
    text = "；".join(parts)
    return text if len(text) <= PAYLOAD_SUMMARY_MAX else text[: PAYLOAD_SUMMARY_MAX - 1] + "…"


def _parse_iso(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _render(template: str, **context: Any) -> str:
    return render_template(template, **LABELS, **context)


def _board_page(query: BoardQuery) -> tuple[list[Order], int]:
    return orders.list_orders(query.filters(), page=query.page, page_size=query.page_size, actor=actor())


def _ranked_rejected(rejected: list[dispatching.Candidate]) -> list[dispatching.Candidate]:
    return sorted(rejected, key=lambda c: (len(c.violations), c.code))[:REJECTED_SHOWN]


# --- routes ---------------------------------------------------------------------------------------------


def board() -> str:
    """The order board: filters, a page of orders with their SLA countdowns, refreshed every 10 s."""
    query = BoardQuery.parse(request.args)
    items, total = _board_page(query)
    pages = max(1, -(-total // query.page_size))
    return _render(
        "console/board.html",
        query=query,
        items=items,
        total=total,
        pages=pages,
        districts=orders.district_names(actor=actor()),
        statuses=STATUSES,
        order_types=ORDER_TYPES,
        page_sizes=PAGE_SIZES,
        refresh_url=query.url("console.board_rows"),
        refresh_every=REFRESH_SECONDS,
    )


def board_rows() -> str:
    """The board's rows alone, for its 10-second refresh (same query string as the board)."""
    query = BoardQuery.parse(request.args)
    items, _ = _board_page(query)
    return _render("console/board_rows.html", items=items, query=query)


def order_detail(order_id: int) -> str:
    """One order: customer, resources, clocks, timeline, SMS, photos and the actions the user may take."""
    current = actor()
    order = orders.get_order(order_id, actor=current)
    allowed = set(workflow.allowed_actions(order, current))
    ranked: list[dispatching.Candidate] = []
    rejected: list[dispatching.Candidate] = []
    if allowed & {"assign", "reassign"}:
        found = dispatching.candidates(order.id, actor=current, limit=CANDIDATE_LIMIT, include_rejected=True)
        ranked = [c for c in found if c.score is not None]
        rejected = _ranked_rejected([c for c in found if c.score is None])
    events = orders.order_events(order)
    return _render(
        "console/order.html",
        order=order,
        allowed=allowed,
        ranked=ranked,
        rejected=rejected,
        events=[(e, _payload_summary(e)) for e in events],
        notifications=orders.order_notifications(order),
        photos=attachments.list_attachments(order.id, actor=current),
        suspend_reasons=SUSPEND_REASONS,
        cancel_reasons=CANCEL_REASONS,
        board_url=url_for("console.board"),
    )


def order_attachment(order_id: int, attachment_id: int) -> Response:
    """A photo of the order (ID card photos only for the roles the attachments service allows)."""
    attachment, path = attachments.get_attachment(order_id, attachment_id, actor=actor())
    return attachment_response(attachment, path)


def _detail(order_id: int) -> str:
    return back(url_for("console.order_detail", order_id=order_id))


def order_assign(order_id: int) -> Response:
    """Assign (or reassign) the order to the chosen engineer, or automatically to the best qualified one."""
    done: dict[str, Any] = {}

    def act() -> None:
        auto = request.form.get("auto") == "1"
        engineer_id = None if auto else _positive_int(request.form, "engineer_id", "工程师")
        order, warnings = dispatching.assign_order(order_id, engineer_id, auto=auto, actor=actor())
        done.update(order=order, warnings=warnings)

    response = handle(act, _detail(order_id), "派单成功")
    if done:
        engineer = done["order"].engineer
        if engineer is not None:
            flash(f"已派给 {engineer.name}（{engineer.code}）", "ok")
        if done["warnings"]:
            flash("派单提醒：" + "；".join(w["message"] for w in done["warnings"]), "warn")
    return response


def order_suspend(order_id: int) -> Response:
    """Suspend the order with a reason code, a note and optionally until when."""

    def act() -> None:
        form = request.form
        orders.suspend_order(
            order_id,
            reason_code=_choice(form, "reason_code", "挂起原因", SUSPEND_REASONS, required=True) or "",
            note=_text(form, "note", "备注", max_length=1000),
            until=_local_datetime(form, "until", "挂起至"),
            actor=actor(),
        )

    return handle(act, _detail(order_id), "工单已挂起")


def order_resume(order_id: int) -> Response:
    """Resume a suspended order in the status it had."""

    def act() -> None:
        orders.resume_order(
            order_id, note=_text(request.form, "note", "备注", max_length=1000), actor=actor()
        )

    return handle(act, _detail(order_id), "工单已解挂")


def order_cancel(order_id: int) -> Response:
    """Withdraw the order with a reason (and a reason code for the KPIs)."""

    def act() -> None:
        form = request.form
        orders.cancel_order(
            order_id,
            reason=_text(form, "reason", "撤单原因", required=True) or "",
            reason_code=_choice(form, "reason_code", "撤单类别", CANCEL_REASONS),
            actor=actor(),
        )

    return handle(act, _detail(order_id), "工单已撤单")


def alerts_page() -> str:
    """SLA alerts, open ones first by default, each with its order and an acknowledge button."""
    status = _choice(request.args, "status", "状态", ("open", "acknowledged", "all")) or "open"
    page_text = (request.args.get("page") or "1").strip()
    page = int(page_text) if _digits(page_text) and 1 <= int(page_text) <= 100_000 else 1
    items, total = sla.list_alerts(
        actor=actor(), page=page, page_size=DEFAULT_PAGE_SIZE, status=None if status == "all" else status
    )
    by_id = orders.orders_by_id((a.order_id for a in items), actor=actor())
    return _render(
        "console/alerts.html",
        items=[(a, by_id.get(a.order_id)) for a in items],
        total=total,
        status=status,
        page=page,
        pages=max(1, -(-total // DEFAULT_PAGE_SIZE)),
    )


def alert_acknowledge(alert_id: int) -> Response:
    """Acknowledge an alert (a second acknowledgement keeps the first)."""
    return handle(
        lambda: sla.acknowledge_alert(alert_id, actor=actor()), back(url_for("console.alerts")), "告警已确认"
    )


def complaints_page() -> str:
    """Complaints with filters (category, cause, recent days) and, for dispatchers, the entry form."""
    args = request.args
    category = _choice(args, "category", "类别", COMPLAINT_CATEGORIES)
    cause = _choice(args, "cause", "原因", COMPLAINT_CAUSES)
    days_text = (args.get("days") or "7").strip()
    days = int(days_text) if _digits(days_text) and int(days_text) in COMPLAINT_DAYS else 7
    page_text = (args.get("page") or "1").strip()
    page = int(page_text) if _digits(page_text) and 1 <= int(page_text) <= 100_000 else 1
    today = business_day(utcnow())
    current = actor()
    items, total = complaints.list_complaints(
        actor=current,
        page=page,
        page_size=DEFAULT_PAGE_SIZE,
        category=category,
        cause=cause,
        start=today - timedelta(days=days - 1),
        end=today,
    )
    return _render(
        "console/complaints.html",
        items=items,
        total=total,
        page=page,
        pages=max(1, -(-total // DEFAULT_PAGE_SIZE)),
        category=category or "",
        cause=cause or "",
        days=days,
        day_choices=COMPLAINT_DAYS,
        categories=COMPLAINT_CATEGORIES,
        causes=COMPLAINT_CAUSES,
        may_record=bool(current.principals & RECORD_COMPLAINTS),
        now_local=to_local(utcnow()).strftime("%Y-%m-%dT%H:%M"),
    )


def complaint_record() -> Response:
    """Record a complaint taken by phone at the dispatch desk (external id ``CONSOLE-<uuid>``)."""

    def act() -> None:
        form = request.form
        data = {
            "external_id": f"CONSOLE-{uuid.uuid4().hex}",
            "order_external_id": _text(form, "order_external_id", "工单号", max_length=64),
            "category": _choice(form, "category", "类别", COMPLAINT_CATEGORIES, required=True),
            "cause": _choice(form, "cause", "原因", COMPLAINT_CAUSES, required=True),
            "received_at": _local_datetime(form, "received_at", "受理时间", required=True),
            "text": _text(form, "text", "投诉内容", required=True, max_length=4000),
        }
        complaints.record_complaint(data, actor=actor())

    return handle(act, back(url_for("console.complaints")), "投诉已登记")


def register(blp: Blueprint) -> None:
    """Add this module's pages to the console blueprint."""
    blp.add_url_rule("/board", "board", board)
    blp.add_url_rule("/board/rows", "board_rows", board_rows)
    blp.add_url_rule("/orders/<int:order_id>", "order_detail", order_detail)
    blp.add_url_rule(
        "/orders/<int:order_id>/attachments/<int:attachment_id>", "order_attachment", order_attachment
    )
    blp.add_url_rule("/orders/<int:order_id>/assign", "order_assign", order_assign, methods=["POST"])
    blp.add_url_rule("/orders/<int:order_id>/suspend", "order_suspend", order_suspend, methods=["POST"])
    blp.add_url_rule("/orders/<int:order_id>/resume", "order_resume", order_resume, methods=["POST"])
    blp.add_url_rule("/orders/<int:order_id>/cancel", "order_cancel", order_cancel, methods=["POST"])
    blp.add_url_rule("/alerts", "alerts", alerts_page)
    blp.add_url_rule(
        "/alerts/<int:alert_id>/acknowledge", "alert_acknowledge", alert_acknowledge, methods=["POST"]
    )
    blp.add_url_rule("/complaints", "complaints", complaints_page)
    blp.add_url_rule("/complaints", "complaint_record", complaint_record, methods=["POST"])
    blp.add_app_template_filter(_iso, "iso_local")
    blp.add_app_template_filter(_appointment_window, "appointment_window")
    blp.add_app_template_filter(_requested_window, "requested_window")
