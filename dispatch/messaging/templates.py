"""SMS templates: Chinese text as data, editable by admins, rendered with the order's data at send time.

A template is a ``str.format`` text over the fields of :data:`FIELDS` only. Every rendered message is kept
within two SMS parts (:mod:`dispatch.messaging.segments`): the address is shortened first, and a text still
too long is cut with an ellipsis, so a message is never refused for its length at send time; an admin's
template must fit two parts with realistic sample data, or it is refused (422).
"""

from __future__ import annotations

import string
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from dispatch.clock import utcnow
from dispatch.extensions import db
from dispatch.messaging import segments
from dispatch.models import Engineer, Order, OrderEvent, OutboxMessage, SlaClock, SmsTemplate
from dispatch.timeutil import to_local
from dispatch.vocabulary import ORDER_TYPE_LABELS

MAX_PARTS = 2

CLOCK_LABELS = {
    "take": "接单",
    "contact": "首次联系",
    "arrival": "上门",
    "acceptance": "受理",
    "completion": "竣工",
}

# Field → what it holds (shown to admins editing templates).
FIELDS: dict[str, str] = {
    "external_id": "工单号",
    "order_type": "工单类型",
    "district": "区县",
    "address": "地址",
    "customer_name": "客户姓名",
    "engineer_name": "工程师姓名",
    "engineer_code": "工号",
    "engineer_phone": "工程师电话",
    "window": "预约时段",
    "take_deadline": "接单时限",
    "clock": "时限名称",
    "due_time": "到期时间",
    "minutes_left": "剩余分钟",
    "eta": "预计到达时间（日计划，HH:MM；无计划时为空）",
    "eta_note": "预计到达说明（如“，预计10:30左右到达”；无计划时为空）",
}

DEFAULTS: dict[str, str] = {
    "dispatch_engineer": (
        "【装维派单】工单{external_id}（{order_type}）{district}{address}，请于{take_deadline}前接单。"
    ),
    "appointment_customer": (
        "【中国电信】您好，装维工程师{engineer_name}（工号{engineer_code}，"
        "电话{engineer_phone}）将于{window}上门服务{eta_note}。确认请回复1，改约请回复2。"
    ),
    "reschedule_customer": (
        "【中国电信】您的上门时间已改为{window}，工程师{engineer_name}"
        "（工号{engineer_code}，电话{engineer_phone}）。确认请回复1，改约请回复2。"
    ),
    "reminder_customer": (
        "【中国电信】温馨提醒：工程师{engineer_name}（电话{engineer_phone}）"
        "将于{window}上门，请保持电话畅通。"
    ),
    "sla_warning": (
        "【时限预警】工单{external_id}的{clock}时限{due_time}到期，剩余约{minutes_left}分钟，请尽快处理。"
    ),
    "sla_breach": (
        "【超时告警】工单{external_id}（{district}）{clock}已超时，工程师{engineer_name}（{engineer_code}）。"
    ),
    "completion_customer": (
        "【中国电信】您的{order_type}业务已竣工，感谢支持！请为本次服务打分：回复1-5（5为非常满意）。回TD退订"
    ),
    "reschedule_request": (
        "【改约请求】工单{external_id}客户{customer_name}回复希望改约，请尽快联系客户重新预约。"
    ),
}

SAMPLE: dict[str, str] = {
    "external_id": "10000-20261125-000123",
    "order_type": "宽带新装",
    "district": "五华区",
    "address": "昆明市五华区人民中路1号附2号",
    "customer_name": "欧阳明轩",
    "engineer_name": "李建国",
    "engineer_code": "E0123",
    "engineer_phone": "13800138000",
    "window": "11月26日 09:00-12:00",
    "take_deadline": "11月25日 09:15",
    "clock": "首次联系",
    "due_time": "11月25日 10:00",
    "minutes_left": "15",
    "eta": "10:30",
    "eta_note": "，预计10:30左右到达",
}


class TemplateError(ValueError):
    """A template that cannot be rendered (unknown template or field)."""


class ObsoleteMessage(TemplateError):
    """The message no longer applies (a reminder for an appointment that moved): suppress, don't send."""


def fields_of(body: str) -> set[str]:
    """The ``{field}`` names a template uses; TemplateError on broken braces or formats."""
    try:
        parsed = list(string.Formatter().parse(body))
    except ValueError as exc:
        raise TemplateError(str(exc)) from None
    names = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"only plain {{field}} placeholders are allowed, not {{{name}}}")
        names.add(name)
    return names


def fit(body: str, context: dict[str, str]) -> str:
    """``body`` rendered with ``context``, shortened to at most :data:`MAX_PARTS` SMS parts."""
    text = body.format_map(context)
    address = context.get("address", "")
    while segments.count(text).parts > MAX_PARTS and len(address) > 4:
        address = address[: max(4, len(address) - 8)]
        text = body.format_map({**context, "address": address + "…"})
    while segments.count(text).parts > MAX_PARTS:
        text = text[:-2] + "…"
    return text


def body_of(key: str) -> str:
    """The template text in force: the admin's version, else the built-in default."""
    row = db.session.get(SmsTemplate, key)
    if row is not None:
        return row.body
    if key not in DEFAULTS:
        raise TemplateError(f"unknown SMS template {key!r}")
    return DEFAULTS[key]


def _window(start: Any, end: Any) -> str:
    if not start or not end:
        return ""
    first = to_local(datetime.fromisoformat(start) if isinstance(start, str) else start)
    last = to_local(datetime.fromisoformat(end) if isinstance(end, str) else end)
    return f"{first.month}月{first.day}日 {first:%H:%M}-{last:%H:%M}"


def _moment(value: Any) -> str:
    if not value:
        return ""
    when = to_local(datetime.fromisoformat(value) if isinstance(value, str) else value)
    return f"{when.month}月{when.day}日 {when:%H:%M}"


def _eta(order: Order) -> dict[str, str]:
    """The accepted day plan's ETA, while it still fits: inside the appointment window, if there is one."""
    eta = order.planned_eta
    if eta is None:
        return {}
    start, end = order.appointment_start, order.appointment_end
    if start is not None and end is not None and not start <= eta <= end:
        return {}  # rescheduled since the plan: the planned time no longer holds
    when = to_local(eta).strftime("%H:%M")
    return {"eta": when, "eta_note": f"，预计{when}左右到达"}


def context_for(message: OutboxMessage, now: datetime) -> dict[str, str]:
    """The fields of ``message``'s template from its order (as it is now) and its payload (as it was)."""
    payload = message.payload or {}
    context = dict.fromkeys(FIELDS, "")
    order = db.session.get(Order, message.order_id) if message.order_id is not None else None
    if order is not None:
        context.update(
            external_id=order.external_id,
            order_type=ORDER_TYPE_LABELS.get(order.order_type, order.order_type),
            district=order.address.district_name,
            address=order.address.text,
            customer_name=order.customer.name,
            window=_window(order.appointment_start, order.appointment_end),
        )
        take = db.session.scalar(
            sa.select(SlaClock.due_at)
            .where(SlaClock.order_id == order.id, SlaClock.clock == "take")
            .order_by(SlaClock.id.desc())
            .limit(1)
        )
        context["take_deadline"] = _moment(take)
    if order is not None:
        context.update(_eta(order))
    engineer_id = payload.get("engineer_id") or (order.engineer_id if order is not None else None)
    engineer = db.session.get(Engineer, engineer_id) if engineer_id else None
    if engineer is not None:
        phone = engineer.phone.removeprefix("+86")
        context.update(engineer_name=engineer.name, engineer_code=engineer.code, engineer_phone=phone)
    if payload.get("window_start"):
        context["window"] = _window(payload["window_start"], payload.get("window_end"))
    if payload.get("clock"):
        context["clock"] = CLOCK_LABELS.get(payload["clock"], payload["clock"])
    if payload.get("due_at"):
        due = datetime.fromisoformat(payload["due_at"])
        context["due_time"] = _moment(due)
        context["minutes_left"] = str(max(0, int((due - now).total_seconds() // 60)))
    return context


def _check_reminder(message: OutboxMessage) -> None:
    """A reminder stands only while its appointment does: the order still appointed, and no later
    appointment or reschedule since the one that scheduled it."""
    order = db.session.get(Order, message.order_id)
    latest = db.session.scalar(
        sa.select(sa.func.max(OrderEvent.id)).where(
            OrderEvent.order_id == message.order_id, OrderEvent.action.in_(("appoint", "reschedule"))
        )
    )
    if order is None or order.status != "appointed" or latest != (message.payload or {}).get("event_id"):
        raise ObsoleteMessage("the appointment this reminder was for has changed or passed")


def render_message(message: OutboxMessage, now: datetime | None = None) -> str:
    """The text of an outbox SMS, rendered now; ObsoleteMessage for a reminder whose appointment moved."""
    now = now or utcnow()
    if message.template == "reminder_customer" and message.order_id is not None:
        _check_reminder(message)
    body = body_of(message.template or "")
    unknown = fields_of(body) - set(FIELDS)
    if unknown:
        raise TemplateError(f"unknown field(s) {', '.join(sorted(unknown))}")
    return fit(body, context_for(message, now))


def describe(key: str, body: str) -> dict[str, Any]:
    """A template as admins see it: its text, default, and what its sample rendering takes."""
    sample = fit(body, SAMPLE)
    counted = segments.count(sample)
    return {
        "key": key,
        "body": body,
        "default": DEFAULTS[key],
        "customized": body != DEFAULTS[key],
        "sample": sample,
        "segments": {"encoding": counted.encoding, "units": counted.units, "parts": counted.parts},
    }
