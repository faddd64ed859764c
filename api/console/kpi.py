"""The managers' KPI dashboard: a period's figures against the operator's targets, charts and exports.

The figures are :func:`dispatch.services.reports.kpi_report`'s (formulas: shared/DOMAIN.md "KPIs"). The
charts are drawn on the server (api/console/charts.py) from the whole city's report; with a grouping the
page adds a table with one row per district, team or engineer. The CSV and XLSX downloads are the API's
files (dispatch/reporting/export.py) for the same period and grouping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from flask import Blueprint, abort, render_template, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from api.console.charts import Bar, bar_chart, nice_scale, number, percent
from api.console.session import actor
from dispatch.clock import utcnow
from dispatch.errors import ValidationError
from dispatch.messaging.templates import CLOCK_LABELS
from dispatch.models.reporting import GROUPINGS
from dispatch.reporting import export, kpi
from dispatch.services import reports
from dispatch.timeutil import business_day
from dispatch.vocabulary import ORDER_TYPE_LABELS, ORDER_TYPES

GROUP_LABELS = {
    "order_type": "全市（按工单类型）",
    "district": "按区县",
    "team": "按班组",
    "engineer": "按装维经理",
}
BREAKDOWN_TITLES = {"district": "区县", "team": "班组", "engineer": "装维经理"}
CATEGORY_LABELS = {"backend_first_contact": "首问后端", "appointment": "约服", "escalated": "越级"}
KPI_LABELS = {
    "completion_rate": "竣工率",
    "completion_on_time_rate": "及时竣工率",
    "complaints_per_day": "日均投诉",
    "escalated_installation_or_network": "越级投诉（装维/网络）",
    "sla_compliance": "时限达标率",
    "appointment_kept": "预约履约率",
    "first_time_fix": "一次修复率",
    "satisfaction": "满意度",
}
FIELD_LABELS = {"from": "开始日期", "to": "结束日期", "group_by": "分组"}
DOWNLOADS = {
    "csv": ("text/csv; charset=utf-8", export.to_csv),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", export.to_xlsx),
}


@dataclass(frozen=True)
class Query:
    start: date
    end: date
    group_by: str

    def args(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "group_by": self.group_by}


@dataclass(frozen=True)
class FigureRow:
    """One line of the figures table: which KPI and item, its value, how it was counted, target, met."""

    kpi: str
    item: str
    value: str
    detail: str
    target: str
    met: bool | None


def default_period() -> tuple[date, date]:
    """The current month up to today, in DISPATCH_TZ."""
    today = business_day(utcnow())
    return today.replace(day=1), today


def parse_query(args: Mapping[str, str]) -> Query:
    """The form's period and grouping; empty dates mean this month so far. Bad input is a 422 per field."""
    first, last = default_period()
    errors: dict[str, list[str]] = {}
    days: dict[str, date] = {}
    for name, default in (("from", first), ("to", last)):
        raw = (args.get(name) or "").strip()
        try:
            days[name] = date.fromisoformat(raw) if raw else default
        except ValueError:
            errors[name] = [f"「{raw}」不是有效日期，应为 YYYY-MM-DD"]
    group_by = (args.get("group_by") or "order_type").strip()
    if group_by not in GROUPINGS:
        errors["group_by"] = ["应为工单类型、区县、班组或装维经理"]
    if not errors:
        if days["to"] < days["from"]:
            errors["to"] = ["结束日期不能早于开始日期"]
        elif (days["to"] - days["from"]).days + 1 > reports.MAX_DAYS:
            errors["to"] = [f"统计期最长 {reports.MAX_DAYS} 天"]
    if errors:
        raise ValidationError("查询条件有误", errors=errors)
    return Query(days["from"], days["to"], group_by)


def _form_values(args: Mapping[str, str]) -> dict[str, str]:
    first, last = default_period()
    return {
        "from": args.get("from") or first.isoformat(),
        "to": args.get("to") or last.isoformat(),
        "group_by": args.get("group_by") or "order_type",
    }


def _describe(exc: ValidationError) -> list[str]:
    if not exc.errors:
        return [exc.message]
    return [
        f"{FIELD_LABELS.get(field, field)}：{'；'.join(map(str, messages))}"
        for field, messages in dict(exc.errors).items()
    ]


# --- charts and tables from a report group ----------------------------------------------------------


def _target_text(kpi_name: str, target: float | None) -> str:
    if target is None:
        return ""
    if kpi_name in ("complaints_per_day",):
        return f"≤ {number(target)} 件/日"
    if kpi_name == "escalated_installation_or_network":
        return f"≤ {number(target)} 件"
    return f"≥ {percent(target, 0)}"


def _ratio_detail(figure: Mapping[str, Any]) -> str:
    if figure.get("denominator") is None:
        return ""
    return f"{figure['numerator']}/{figure['denominator']}"


def completion_chart(group: Mapping[str, Any] | None) -> Markup:
    """Completion and on-time rate per order type, each against its target."""
    bars = []
    for entry in (group or {}).get("completion", []):
        label = ORDER_TYPE_LABELS.get(entry["order_type"], entry["order_type"])
        for key, series in (("rate", "竣工率"), ("on_time_rate", "及时率")):
            figure = entry[key]
            bars.append(
                Bar(
                    label=label,
                    series=series,
                    value=figure["value"],
                    text=percent(figure["value"]),
                    detail=_ratio_detail(figure),
                    target=figure["target"],
                    target_text=_target_text("completion_rate", figure["target"]),
                    met=figure["met"],
                )
            )
    return bar_chart(bars, title="各类工单竣工率与目标", chart_id="chart-completion")


def complaints_chart(group: Mapping[str, Any] | None, days: int) -> Markup:
    """Complaints per day per category against ≤ 60 and ≤ 8; escalated ones by installation or network
    against 0. Each row has its own scale: one axis for 60 and 8 would hide the smaller."""
    bars = []
    for entry in (group or {}).get("complaints", []):
        figure = entry["per_day"]
        bars.append(
            Bar(
                label=CATEGORY_LABELS.get(entry["category"], entry["category"]),
                series="日均",
                value=figure["value"],
                text=f"{number(figure['value'])} 件/日",
                detail=f"{entry['count']} 件 / {days} 天",
                target=figure["target"],
                target_text=_target_text("complaints_per_day", figure["target"]),
                met=figure["met"],
                scale=nice_scale(figure["value"], figure["target"]),
            )
        )
        if entry["category"] == "escalated":
            targeted = entry["installation_or_network"]
            bars.append(
                Bar(
                    label="越级（装维/网络）",
                    series="合计",
                    value=float(targeted["count"]),
                    text=f"{targeted['count']} 件",
                    target=float(targeted["target"]),
                    target_text=_target_text("escalated_installation_or_network", targeted["target"]),
                    met=targeted["met"],
                    scale=nice_scale(targeted["count"], targeted["target"], minimum=5),
                )
            )
    return bar_chart(bars, title="投诉量与目标", chart_id="chart-complaints")


def sla_chart(group: Mapping[str, Any] | None) -> Markup:
    """SLA compliance per clock (met ÷ met + breached)."""
    bars = [
        Bar(
            label=f"{CLOCK_LABELS.get(entry['clock'], entry['clock'])}时限",
            value=entry["compliance"]["value"],
            text=percent(entry["compliance"]["value"]),
            detail=f"达标 {entry['met']} / 超时 {entry['breached']}",
            met=entry["compliance"]["met"],
        )
        for entry in (group or {}).get("sla", [])
    ]
    return bar_chart(bars, title="各环节时限达标率", chart_id="chart-sla")


def service_chart(group: Mapping[str, Any] | None) -> Markup:
    """Appointments kept, first-time fix and satisfaction."""
    bars = []
    for name in ("appointment_kept", "first_time_fix", "satisfaction"):
        figure = (group or {}).get(name)
        if figure is None:
            continue
        bars.append(
            Bar(
                label=KPI_LABELS[name],
                value=figure["value"],
                text=percent(figure["value"]),
                detail=_ratio_detail(figure),
                target=figure["target"],
                target_text=_target_text(name, figure["target"]),
                met=figure["met"],
            )
        )
    return bar_chart(bars, title="预约履约、一次修复与满意度", chart_id="chart-service")


def _item_label(kpi_name: str, item: str) -> str:
    if kpi_name.startswith("completion"):
        return ORDER_TYPE_LABELS.get(item, item)
    if kpi_name == "complaints_per_day":
        return CATEGORY_LABELS.get(item, item)
    if kpi_name == "sla_compliance":
        return CLOCK_LABELS.get(item, item)
    return item


def _value_text(kpi_name: str, value: float | None) -> str:
    if kpi_name == "complaints_per_day":
        return "—" if value is None else f"{number(value)} 件/日"
    if kpi_name == "escalated_installation_or_network":
        return "—" if value is None else f"{number(value)} 件"
    return percent(value)


def figure_rows(group: Mapping[str, Any] | None, days: int) -> list[FigureRow]:
    """Every figure of a group, as the exports list them (dispatch.reporting.kpi.flat), in words."""
    if group is None:
        return []
    rows = []
    for name, item, figure in kpi.flat(group):
        detail = _ratio_detail(figure)
        if name == "complaints_per_day":
            detail = f"{figure['numerator']} 件 / {days} 天"
        rows.append(
            FigureRow(
                kpi=KPI_LABELS.get(name, name),
                item=_item_label(name, item),
                value=_value_text(name, figure["value"]),
                detail=detail,
                target=_target_text(name, figure["target"]) or "—",
                met=figure["met"] if figure["value"] is not None else None,
            )
        )
    return rows


@dataclass(frozen=True)
class Cell:
    text: str
    title: str = ""
    met: bool | None = None


def breakdown(report: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, list[Cell]]]]:
    """The grouped report as a table: headings, then per group its name and cells."""
    groups = report["groups"]
    present = {entry["order_type"] for group in groups for entry in group["completion"]}
    types = [t for t in ORDER_TYPES if t in present]
    headings = [
        "受理量",
        *(f"{ORDER_TYPE_LABELS[t]}竣工率" for t in types),
        "预约履约率",
        "一次修复率",
        "满意度",
        "投诉",
        "越级（装维/网络）",
    ]
    rows = []
    for group in groups:
        by_type = {entry["order_type"]: entry for entry in group["completion"]}
        cells = [Cell(str(sum(entry["received"] for entry in group["completion"])))]
        for order_type in types:
            entry = by_type.get(order_type)
            if entry is None:
                cells.append(Cell("—"))
                continue
            rate = entry["rate"]
            cells.append(Cell(percent(rate["value"]), _ratio_detail(rate), rate["met"]))
        for name in ("appointment_kept", "first_time_fix", "satisfaction"):
            figure = group[name]
            cells.append(Cell(percent(figure["value"]), _ratio_detail(figure), figure["met"]))
        complaints = group["complaints"]
        cells.append(Cell(str(sum(entry["count"] for entry in complaints))))
        escalated = next(
            (e["installation_or_network"] for e in complaints if e["category"] == "escalated"), None
        )
        if escalated is None:
            cells.append(Cell("—"))
        else:
            cells.append(Cell(str(escalated["count"]), "目标 0 件", escalated["met"]))
        rows.append((group["name"], cells))
    return headings, rows


# --- routes -----------------------------------------------------------------------------------------


def kpi_dashboard() -> Any:
    """The KPI dashboard for a period (default: this month so far) and a grouping."""
    form = _form_values(request.args)
    try:
        query = parse_query(request.args)
        overview = reports.kpi_report(actor=actor(), start=query.start, end=query.end, group_by="order_type")
        grouped = None
        if query.group_by != "order_type":
            grouped = reports.kpi_report(
                actor=actor(), start=query.start, end=query.end, group_by=query.group_by
            )
    except ValidationError as exc:
        page = render_template(
            "console/kpi.html", form=form, errors=_describe(exc), group_labels=GROUP_LABELS, report=None
        )
        return page, 422
    group = overview["groups"][0] if overview["groups"] else None
    return render_template(
        "console/kpi.html",
        form=form,
        errors=[],
        group_labels=GROUP_LABELS,
        report=overview,
        group=group,
        charts={
            "completion": completion_chart(group),
            "complaints": complaints_chart(group, overview["days"]),
            "sla": sla_chart(group),
            "service": service_chart(group),
        },
        figures=figure_rows(group, overview["days"]),
        grouped=grouped,
        breakdown=breakdown(grouped) if grouped is not None else None,
        breakdown_title=BREAKDOWN_TITLES.get(query.group_by, ""),
        exports={fmt: url_for("console.kpi_export", fmt=fmt, **query.args()) for fmt in DOWNLOADS},
    )


def kpi_export(fmt: str) -> Response:
    """The report of the dashboard's period and grouping as a CSV or XLSX download (the API's files)."""
    if fmt not in DOWNLOADS:
        abort(404)
    query = parse_query(request.args)
    report = reports.kpi_report(actor=actor(), start=query.start, end=query.end, group_by=query.group_by)
    mimetype, render = DOWNLOADS[fmt]
    name = f"kpi-{report['from']}-{report['to']}-{report['group_by']}.{fmt}"
    return Response(
        render(report),
        mimetype=mimetype.split(";")[0],
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Content-Type": mimetype},
    )


def register(blp: Blueprint) -> None:
    """Add this module's pages to the console blueprint."""
    blp.add_url_rule("/kpi", "kpi", kpi_dashboard)
    blp.add_url_rule("/kpi/export/<fmt>", "kpi_export", kpi_export)
