"""Day planning in the console: choose a day and districts, run the planner, read the plan, accept or discard.

The planner runs inside the POST (a few seconds: the solver's time limit), then the browser is redirected to
the plan's page, so a reload never plans again.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from api.console.session import actor, handle
from dispatch.clock import utcnow
from dispatch.errors import ValidationError
from dispatch.services import planning
from dispatch.timeutil import business_day

STATUS_LABELS = {"proposed": "待确认", "accepted": "已采纳", "discarded": "已放弃"}
START_LABELS = {"live": "实时位置", "home": "住址", "district": "区县中心"}
TIME_LIMITS = (2, 5, 10, 30)
OUTCOME_LABELS = {"assigned": "已派单", "unchanged": "保持不变", "skipped": "已跳过"}


def _km(metres: int | None) -> str:
    return f"{(metres or 0) / 1000:.1f}"


def _render(template: str, **context: Any) -> str:
    return render_template(
        template,
        PLAN_STATUS_LABELS=STATUS_LABELS,
        START_LABELS=START_LABELS,
        OUTCOME_LABELS=OUTCOME_LABELS,
        km=_km,
        **context,
    )


def plans_page() -> str:
    """The planner's form (day, districts, time limit) and the day's plans."""
    who = actor()
    today = business_day(utcnow())
    raw = request.args.get("day", "")
    try:
        day = date.fromisoformat(raw) if raw else today + timedelta(days=1)
    except ValueError:
        day = today + timedelta(days=1)
    return _render(
        "console/plans.html",
        day=day,
        today=today,
        districts=planning.districts(actor=who),
        plans=planning.list_plans(day, actor=who),
        time_limits=TIME_LIMITS,
        default_limit=planning.plan_settings().time_limit_seconds,
    )


def _form() -> tuple[date, list[int], float | None]:
    form = request.form
    try:
        day = date.fromisoformat(form.get("day", ""))
    except ValueError:
        raise ValidationError(errors={"日期": ["请选择日期"]}) from None
    try:
        ids = [int(v) for v in form.getlist("district_id")]
    except ValueError:
        raise ValidationError(errors={"区县": ["无效的区县"]}) from None
    raw = form.get("time_limit_seconds", "")
    try:
        limit = float(raw) if raw else None
    except ValueError:
        raise ValidationError(errors={"计算时限": ["请填写秒数"]}) from None
    return day, ids, limit


def plan_propose() -> Response:
    """Run the planner for the chosen day and districts, then show the plan."""
    made: dict[str, Any] = {}

    def act() -> None:
        day, ids, limit = _form()
        made["plan"] = planning.propose_plan(day, ids, actor=actor(), time_limit_seconds=limit)

    response = handle(act, url_for("console.plans", day=request.form.get("day", "")), "日计划已生成")
    if "plan" in made:
        return redirect(url_for("console.plan_detail", plan_id=made["plan"].id))
    return response


def plan_detail(plan_id: int) -> str:
    """One plan: each engineer's visits in order with ETAs and windows, travel before → after, unplanned."""
    plan = planning.get_plan(plan_id, actor=actor())
    return _render("console/plan.html", view=planning.describe(plan), plan=plan)


def plan_accept(plan_id: int) -> Response:
    """Accept the plan: its orders are assigned through the workflow (changed orders are skipped)."""
    done: dict[str, Any] = {}

    def act() -> None:
        _, result = planning.accept_plan(plan_id, actor=actor())
        done.update(result)

    target = url_for("console.plan_detail", plan_id=plan_id)
    response = handle(act, target, "日计划已采纳")
    if done:
        counts = {k: len(v) for k, v in done.items()}
        summary = "派单 {assigned} 单，保持不变 {unchanged} 单，跳过 {skipped} 单".format(**counts)
        flash(summary, "warn" if done["skipped"] else "ok")
    return response


def plan_discard(plan_id: int) -> Response:
    """Discard the plan; the orders stay as they are."""
    return handle(
        lambda: planning.discard_plan(plan_id, actor=actor()),
        url_for("console.plan_detail", plan_id=plan_id),
        "日计划已放弃",
    )


def register(blp: Blueprint) -> None:
    """Add this module's pages to the console blueprint."""
    blp.add_url_rule("/plans", "plans", plans_page)
    blp.add_url_rule("/plans", "plan_propose", plan_propose, methods=["POST"])
    blp.add_url_rule("/plans/<int:plan_id>", "plan_detail", plan_detail)
    blp.add_url_rule("/plans/<int:plan_id>/accept", "plan_accept", plan_accept, methods=["POST"])
    blp.add_url_rule("/plans/<int:plan_id>/discard", "plan_discard", plan_discard, methods=["POST"])
