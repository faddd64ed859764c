"""Admins' pages: engineers, SLA policies, SMS templates, users and API keys.

Each page reads through the same service as the API, so whoever the service lets read may look (dispatchers
and managers see engineers and policies read-only; the rest is admin-only, 403 otherwise), and every change
goes through the API's marshmallow schema and service. Bad input is flashed and the form re-rendered with what
was typed; a new API key is shown once, on the response to the POST that made it, and never again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import time
from typing import Any

import marshmallow as ma
from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from api.console.session import actor, handle
from api.engineers.schemas import EngineerPatchSchema, EngineerSchema
from api.sla.schemas import SlaPolicyUpdateSchema
from api.sms_templates.schemas import SmsTemplateUpdateSchema
from dispatch.actors import MANAGE_ENGINEERS
from dispatch.errors import DispatchError, ValidationError
from dispatch.messaging.templates import CLOCK_LABELS, FIELDS, MAX_PARTS
from dispatch.models import Engineer, EngineerShift
from dispatch.services import auth, engineers, sla, sms_templates
from dispatch.services.engineers import DEFAULT_SHIFTS
from dispatch.vocabulary import API_KEY_SCOPES, ORDER_TYPE_LABELS, ORDER_TYPES, ROLES

Page = str | tuple[str, int] | tuple[str, int, dict[str, str]] | Response

PAGE_SIZE = 50
WEEKDAYS = {1: "周一", 2: "周二", 3: "周三", 4: "周四", 5: "周五", 6: "周六", 7: "周日"}
SCOPE_LABELS = {"intake": "工单受理（10000 号）", "billing": "计费（BOSS）"}
TEMPLATE_LABELS = {
    "dispatch_engineer": "派单通知（工程师）",
    "appointment_customer": "预约确认（客户）",
    "reschedule_customer": "改约通知（客户）",
    "reminder_customer": "上门提醒（客户）",
    "sla_warning": "时限预警（工程师、班长、受理台）",
    "sla_breach": "超时告警（工程师、班长、受理台）",
    "completion_customer": "竣工与满意度回访（客户）",
    "reschedule_request": "客户改约请求（调度）",
}
# target units of the SLA form: (label, seconds)
UNITS = {"h": ("小时", 3600), "min": ("分钟", 60), "s": ("秒", 1)}
FIELD_LABELS = {
    "code": "工号",
    "name": "名称",
    "phone": "电话",
    "team": "班组",
    "skills": "技能",
    "districts": "区县",
    "home": "常驻位置",
    "lat": "纬度",
    "lng": "经度",
    "daily_capacity": "每日容量",
    "shifts": "班次",
    "start": "开始",
    "end": "结束",
    "weekday": "星期",
    "active": "启用",
    "target_seconds": "目标时长",
    "warn_percent": "预警比例",
    "body": "短信内容",
    "username": "用户名",
    "password": "密码",
    "role": "角色",
    "engineer_code": "工程师工号",
    "scope": "权限范围",
    "_schema": "",
}
# marshmallow's commonest messages, in the console's language (others are shown as they are)
MESSAGES = {
    "Missing data for required field.": "必填",
    "Field may not be null.": "必填",
    "Not a valid integer.": "须为整数",
    "Not a valid number.": "须为数字",
    "Not a valid time.": "时间格式应为 时:分",
    "String does not match expected pattern.": "只能用字母、数字、- 和 _（1–32 位）",
    "Shorter than minimum length 1.": "必填",
    "A shift must end after it starts.": "下班须晚于上班",
    "Not a phone number.": "不是电话号码",
    "Not a valid Chinese mobile number.": "不是有效的中国大陆手机号",
}
PATTERNS = (
    (re.compile(r"Length must be between (\d+) and (\d+)\."), "长度须为 {0}–{1} 个字符"),
    (re.compile(r"Longer than maximum length (\d+)\."), "最多 {0} 个字符"),
    (
        re.compile(r"Must be greater than or equal to (\S+) and less than or equal to (\S+)\."),
        "须在 {0} 到 {1} 之间",
    ),
    (re.compile(r"Must be one of: (.*)\."), "须为以下之一：{0}"),
)

# --- helpers -------------------------------------------------------------------------------------------


def _may(allowed: frozenset[str]) -> bool:
    """Whether to show the forms: the same permission set the service enforces (display only)."""
    return bool(actor().principals & allowed)


def _say(message: str) -> str:
    """marshmallow's English message in the console's language, where it is a common one."""
    if message in MESSAGES:
        return MESSAGES[message]
    for pattern, template in PATTERNS:
        if found := pattern.fullmatch(message):
            return template.format(*found.groups())
    return message


def _flatten(errors: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    if isinstance(errors, Mapping):
        return [item for key, value in errors.items() for item in _flatten(value, (*path, str(key)))]
    if isinstance(errors, list | tuple):
        if all(isinstance(e, str) for e in errors):
            return [(path, "；".join(_say(e) for e in errors))]
        return [item for e in errors for item in _flatten(e, path)]
    return [(path, _say(str(errors)))]


def _field_text(errors: Any, labels: Mapping[str, str] | None = None) -> str:
    """``{"shifts": {"0": {"end": [...]}}}`` → ``班次 周一 结束：…``, one clause per field."""
    names = {**FIELD_LABELS, **(labels or {})}
    clauses = []
    for path, message in _flatten(errors):
        where = " ".join(filter(None, (names.get(p, p) for p in path)))
        clauses.append(f"{where}：{message}" if where else message)
    return "；".join(clauses)


def _invalid(exc: ma.ValidationError, labels: Mapping[str, str] | None = None) -> None:
    flash("输入有误：" + _field_text(exc.messages, labels), "error")


def _refused(exc: DispatchError) -> None:
    head = (
        "输入有误" if isinstance(exc, ValidationError) and exc.message == exc.default_message else exc.message
    )
    detail = f"：{_field_text(exc.errors)}" if exc.errors else ""
    flash(f"{head}{detail}", "error")


def _int_or_raw(raw: str) -> int | str:
    """An integer if the text is one; else the text itself, for the schema to refuse with its message."""
    try:
        return int(raw.strip())
    except ValueError:
        return raw


def _page_arg() -> int:
    page = request.args.get("page", default=1, type=int) or 1
    return max(1, min(page, 10_000))


def _weekday_runs(days: Iterable[int]) -> str:
    ordered = sorted(set(days))
    if ordered == list(WEEKDAYS):
        return "每天"
    runs: list[list[int]] = []
    for day in ordered:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    texts = []
    for run in runs:
        if len(run) >= 3:
            texts.append(f"{WEEKDAYS[run[0]]}至{WEEKDAYS[run[-1]]}")
        else:
            texts.extend(WEEKDAYS[d] for d in run)
    return "、".join(texts)


def shift_summary(shifts: Iterable[EngineerShift]) -> str:
    """``周一至周五 08:30–17:30；周六、周日 09:00–18:00``: days grouped by their hours."""
    groups: dict[tuple[time, time], list[int]] = {}
    for shift in shifts:
        groups.setdefault((shift.start_time, shift.end_time), []).append(shift.weekday)
    parts = [
        f"{_weekday_runs(days)} {start:%H:%M}–{end:%H:%M}"
        for (start, end), days in sorted(groups.items(), key=lambda item: (min(item[1]), item[0]))
    ]
    return "；".join(parts) or "无班次"


def duration_text(seconds: int) -> str:
    """``5400`` → ``1小时30分``; ``0`` → ``0分``."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (
        (f"{hours}小时" if hours else "")
        + (f"{minutes}分" if minutes else "")
        + (f"{secs}秒" if secs else "")
    )
    return text or "0分"


def _best_unit(seconds: int) -> tuple[int, str]:
    for unit, (_, size) in UNITS.items():
        if seconds and seconds % size == 0:
            return seconds // size, unit
    return seconds, "min" if seconds == 0 else "s"


# --- engineers -----------------------------------------------------------------------------------------


def _engineer_values(engineer: Engineer | None) -> dict[str, Any]:
    """What the engineer form shows: an engineer's fields, or a new engineer's defaults."""
    if engineer is None:
        shifts = {d: {"on": False, "start": "08:00", "end": "20:00"} for d in WEEKDAYS}
        for weekday, start, end in DEFAULT_SHIFTS:
            shifts[weekday] = {"on": True, "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}
        return {
            "code": "",
            "name": "",
            "phone": "",
            "team": "",
            "skills": set(ORDER_TYPES),
            "districts": set(),
            "daily_capacity": "6",
            "active": True,
            "home_lat": "",
            "home_lng": "",
            "shifts": shifts,
        }
    shifts = {d: {"on": False, "start": "08:00", "end": "20:00"} for d in WEEKDAYS}
    for shift in reversed(engineer.shifts):  # the form has one shift a day: the day's first one
        shifts[shift.weekday] = {
            "on": True,
            "start": f"{shift.start_time:%H:%M}",
            "end": f"{shift.end_time:%H:%M}",
        }
    return {
        "code": engineer.code,
        "name": engineer.name,
        "phone": engineer.phone,
        "team": engineer.team.name if engineer.team else "",
        "skills": set(engineer.skills),
        "districts": {d.name for d in engineer.districts},
        "daily_capacity": str(engineer.daily_capacity),
        "active": engineer.active,
        "home_lat": "" if engineer.home_lat is None else str(engineer.home_lat),
        "home_lng": "" if engineer.home_lng is None else str(engineer.home_lng),
        "shifts": shifts,
    }


def _submitted_values(form: MultiDict[str, str]) -> dict[str, Any]:
    """The engineer form as typed (to validate, and to show again when it is refused)."""
    return {
        "code": form.get("code", "").strip(),
        "name": form.get("name", "").strip(),
        "phone": form.get("phone", "").strip(),
        "team": form.get("team", "").strip(),
        "skills": set(form.getlist("skills")),
        "districts": set(form.getlist("districts")),
        "daily_capacity": form.get("daily_capacity", "").strip(),
        "active": form.get("active") == "on",
        "home_lat": form.get("home_lat", "").strip(),
        "home_lng": form.get("home_lng", "").strip(),
        "shifts": {
            d: {
                "on": form.get(f"shift_{d}_on") == "on",
                "start": form.get(f"shift_{d}_start", "").strip(),
                "end": form.get(f"shift_{d}_end", "").strip(),
            }
            for d in WEEKDAYS
        },
    }


def _working(values: dict[str, Any]) -> dict[int, tuple[str, str]]:
    return {d: (s["start"], s["end"]) for d, s in values["shifts"].items() if s["on"]}


def _engineer_body(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The API's JSON body for the form's values, and the labels of its shift indexes (``"0"`` → 周一)."""
    on_days = [d for d in WEEKDAYS if values["shifts"][d]["on"]]
    body: dict[str, Any] = {
        "code": values["code"],
        "name": values["name"],
        "phone": values["phone"],
        "team": values["team"] or None,
        "skills": sorted(values["skills"]),
        "districts": sorted(values["districts"]),
        "daily_capacity": values["daily_capacity"],
        "active": values["active"],
        "home": {"lat": values["home_lat"], "lng": values["home_lng"]}
        if values["home_lat"] or values["home_lng"]
        else None,
        "shifts": [
            {"weekday": d, "start": values["shifts"][d]["start"], "end": values["shifts"][d]["end"]}
            for d in on_days
        ],
    }
    return body, {str(i): WEEKDAYS[d] for i, d in enumerate(on_days)}


def _engineer_form(values: dict[str, Any], engineer: Engineer | None, status: int = 200) -> tuple[str, int]:
    current = actor()
    html = render_template(
        "console/admin_engineer_form.html",
        values=values,
        engineer=engineer,
        editable=_may(MANAGE_ENGINEERS),
        order_types=ORDER_TYPES,
        districts=engineers.list_districts(actor=current),
        teams=engineers.list_teams(actor=current),
        weekdays=WEEKDAYS,
        several_a_day=engineer is not None
        and len({s.weekday for s in engineer.shifts}) < len(engineer.shifts),
        back_to=url_for("console.admin_engineers"),
    )
    return html, status


def _save_engineer(engineer: Engineer | None) -> Page:
    values = _submitted_values(request.form)
    body, shift_labels = _engineer_body(values)
    if engineer is not None and _working(values) == _working(_engineer_values(engineer)):
        # Unchanged in the form: keep the rows as they are (the API may have set two shifts on a day).
        del body["shifts"]
    try:
        data = (EngineerSchema() if engineer is None else EngineerPatchSchema()).load(body)
    except ma.ValidationError as exc:
        _invalid(exc, shift_labels)
        return _engineer_form(values, engineer, 422)
    try:
        if engineer is None:
            saved = engineers.create_engineer(data, actor=actor())
        else:
            saved = engineers.update_engineer(engineer.id, data, actor=actor())
    except DispatchError as exc:
        _refused(exc)
        return _engineer_form(values, engineer, exc.http_status)
    flash(f"已{'创建' if engineer is None else '保存'}装维人员 {saved.code} {saved.name}", "ok")
    return redirect(url_for("console.admin_engineers"))


def admin_engineers() -> str:
    """Engineers with their team, skills, districts, capacity and shifts; filter by team or status."""
    team = request.args.get("team", "").strip() or None
    active = {"1": True, "0": False}.get(request.args.get("active", ""))
    page = _page_arg()
    current = actor()
    rows, total = engineers.list_engineers(
        actor=current, page=page, page_size=PAGE_SIZE, team=team, active=active
    )
    return render_template(
        "console/admin_engineers.html",
        rows=[(e, shift_summary(e.shifts)) for e in rows],
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        team=team or "",
        active=request.args.get("active", ""),
        teams=engineers.list_teams(actor=current),
        editable=_may(MANAGE_ENGINEERS),
    )


def admin_engineer_new() -> Page:
    """A new engineer: the form, and creating it."""
    if request.method == "POST":
        return _save_engineer(None)
    return _engineer_form(_engineer_values(None), None)


def admin_engineer_edit(engineer_id: int) -> Page:
    """One engineer: the form with their fields, and saving it."""
    engineer = engineers.get_engineer(engineer_id, actor=actor())
    if request.method == "POST":
        return _save_engineer(engineer)
    return _engineer_form(_engineer_values(engineer), engineer)


# --- SLA policies --------------------------------------------------------------------------------------


def _sla_page(status: int = 200, entered: dict[str, Any] | None = None) -> tuple[str, int]:
    policies = sla.list_policies(actor=actor())
    rows = []
    for policy in policies:
        value, unit = _best_unit(policy.target_seconds)
        rows.append(
            {
                "policy": policy,
                "anchor": f"sla-{policy.order_type}-{policy.clock}",
                "target": duration_text(policy.target_seconds),
                "value": value,
                "unit": unit,
                "warn": policy.warn_percent,
            }
        )
        if entered and entered["anchor"] == rows[-1]["anchor"]:
            rows[-1].update(value=entered["value"], unit=entered["unit"], warn=entered["warn"])
    html = render_template(
        "console/admin_sla.html",
        rows=rows,
        units=UNITS,
        clock_labels=CLOCK_LABELS,
        editable=_may(sla.MANAGE_POLICIES),
    )
    return html, status


def admin_sla() -> tuple[str, int]:
    """SLA policies: each order type's clocks with their target and warning threshold."""
    return _sla_page()


def admin_sla_update(order_type: str, clock: str) -> Page:
    """Change one policy's target and warning threshold (clocks started from now on)."""
    raw_value = request.form.get("target_value", "")
    unit = request.form.get("target_unit", "min")
    raw_warn = request.form.get("warn_percent", "")
    value = _int_or_raw(raw_value)
    size = UNITS.get(unit, ("", 0))[1]
    try:
        if not size:
            raise ma.ValidationError({"target_seconds": ["单位无效"]})
        data = SlaPolicyUpdateSchema().load(
            {
                "target_seconds": value * size if isinstance(value, int) else value,
                "warn_percent": _int_or_raw(raw_warn),
            }
        )
    except ma.ValidationError as exc:
        _invalid(exc)
        entered = {"anchor": f"sla-{order_type}-{clock}", "value": raw_value, "unit": unit, "warn": raw_warn}
        return _sla_page(422, entered)
    label = f"{ORDER_TYPE_LABELS.get(order_type, order_type)} {CLOCK_LABELS.get(clock, clock)}"
    return handle(
        lambda: sla.set_policy(
            order_type,
            clock,
            target_seconds=data["target_seconds"],
            warn_percent=data["warn_percent"],
            actor=actor(),
        ),
        url_for("console.admin_sla") + f"#sla-{order_type}-{clock}",
        f"已更新 {label} 时限：{duration_text(data['target_seconds'])}，{data['warn_percent']}% 预警"
        "（对此后开始的时限生效）",
    )


# --- SMS templates -------------------------------------------------------------------------------------


def _templates_page(status: int = 200, entered: tuple[str, str] | None = None) -> tuple[str, int]:
    html = render_template(
        "console/admin_templates.html",
        templates=sms_templates.list_templates(actor=actor()),
        labels=TEMPLATE_LABELS,
        fields=FIELDS,
        max_parts=MAX_PARTS,
        entered=dict([entered]) if entered else {},
        editable=_may(sms_templates.MANAGE_TEMPLATES),
    )
    return html, status


def admin_templates() -> tuple[str, int]:
    """SMS templates: the text in force, the default, and the parts the sample rendering takes."""
    return _templates_page()


def admin_template_update(key: str) -> Page:
    """Replace one template's text (at most two SMS parts with the sample data)."""
    text = request.form.get("body", "").replace("\r\n", "\n")
    try:
        data = SmsTemplateUpdateSchema().load({"body": text})
    except ma.ValidationError as exc:
        _invalid(exc)
        return _templates_page(422, (key, text))
    done = url_for("console.admin_templates") + f"#tpl-{key}"
    label = TEMPLATE_LABELS.get(key, key)
    return handle(
        lambda: sms_templates.set_template(key, data["body"], actor=actor()),
        done,
        f"已保存短信模板「{label}」",
    )


def admin_template_reset(key: str) -> Response:
    """Restore one template's default text."""
    done = url_for("console.admin_templates") + f"#tpl-{key}"
    label = TEMPLATE_LABELS.get(key, key)
    return handle(
        lambda: sms_templates.set_template(key, None, actor=actor()), done, f"已恢复「{label}」的默认内容"
    )


# --- users and API keys --------------------------------------------------------------------------------


def admin_users() -> str:
    """Console and PDA users, and the system API keys (prefixes only)."""
    current = actor()
    users = auth.list_users(actor=current)
    keys = auth.list_api_keys(actor=current)
    staff, _ = engineers.list_engineers(actor=current, page=1, page_size=200, active=True)
    linked = {u.engineer_id for u in users if u.engineer_id is not None}
    return render_template(
        "console/admin_users.html",
        users=users,
        keys=keys,
        roles=ROLES,
        scopes=API_KEY_SCOPES,
        scope_labels=SCOPE_LABELS,
        unlinked=[e for e in staff if e.id not in linked],
    )


def admin_user_create() -> Response:
    """Create a console or PDA login (an engineer login names its engineer's code)."""
    username = request.form.get("username", "").strip()
    role = request.form.get("role", "")
    password = request.form.get("password", "")
    code = request.form.get("engineer_code", "").strip() or None
    return handle(
        lambda: auth.create_user(username, role=role, password=password, engineer_code=code, actor=actor()),
        url_for("console.admin_users"),
        f"已创建用户 {username}",
    )


def admin_user_active(user_id: int) -> Response:
    """Deactivate a user (their sessions end) or reactivate them."""
    active = request.form.get("active") == "1"
    return handle(
        lambda: auth.set_user_active(user_id, active, actor=actor()),
        url_for("console.admin_users"),
        "已启用该用户" if active else "已停用该用户，其登录已全部失效",
    )


def admin_api_key_create() -> Page:
    """Create a system API key and show it, this once: only its hash is kept."""
    name = request.form.get("name", "").strip()
    scopes = request.form.getlist("scopes")
    try:
        raw, key = auth.create_api_key(name, scopes, actor=actor())
    except DispatchError as exc:
        _refused(exc)
        return redirect(url_for("console.admin_users"))
    html = render_template("console/admin_api_key_created.html", raw=raw, key=key, scope_labels=SCOPE_LABELS)
    # Rendered from the POST itself (no redirect to a page that could show it again), and never cached.
    return html, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"}


def admin_api_key_revoke(key_id: int) -> Response:
    """Revoke a system API key: refused from the next request on."""
    return handle(
        lambda: auth.revoke_api_key(key_id, actor=actor()),
        url_for("console.admin_users"),
        "已吊销该 API 密钥",
    )


# --- registration --------------------------------------------------------------------------------------

ROUTES: tuple[tuple[str, Callable[..., Any], tuple[str, ...]], ...] = (
    ("/admin/engineers", admin_engineers, ("GET",)),
    ("/admin/engineers/new", admin_engineer_new, ("GET", "POST")),
    ("/admin/engineers/<int:engineer_id>", admin_engineer_edit, ("GET", "POST")),
    ("/admin/sla", admin_sla, ("GET",)),
    ("/admin/sla/<order_type>/<clock>", admin_sla_update, ("POST",)),
    ("/admin/templates", admin_templates, ("GET",)),
    ("/admin/templates/<key>", admin_template_update, ("POST",)),
    ("/admin/templates/<key>/reset", admin_template_reset, ("POST",)),
    ("/admin/users", admin_users, ("GET",)),
    ("/admin/users/new", admin_user_create, ("POST",)),
    ("/admin/users/<int:user_id>/active", admin_user_active, ("POST",)),
    ("/admin/api-keys", admin_api_key_create, ("POST",)),
    ("/admin/api-keys/<int:key_id>/revoke", admin_api_key_revoke, ("POST",)),
)


def register(blp: Blueprint) -> None:
    """Add this module's pages to the console blueprint."""
    for rule, view, methods in ROUTES:
        blp.add_url_rule(rule, view.__name__, view, methods=list(methods))
