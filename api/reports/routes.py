"""KPI reports (managers, admins): JSON, or a CSV / XLSX download of the same figures."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.auth import current_actor
from api.reports.schemas import KpiQueryArgsSchema, KpiReportSchema
from dispatch.reporting import export
from dispatch.services import reports

blp = Blueprint("api-reports", __name__, url_prefix="/api/v1/reports", description="KPI reports")

_DOWNLOADS = {
    "csv": ("text/csv; charset=utf-8", export.to_csv),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", export.to_xlsx),
}


@blp.route("/kpi")
class KpiReport(MethodView):
    @blp.arguments(KpiQueryArgsSchema, location="query")
    @blp.response(200, KpiReportSchema, description="JSON; with format=csv or xlsx, that file instead")
    def get(self, args: dict[str, Any]) -> Any:
        """Completion rates, complaints per day, SLA compliance, appointments kept, first-time fix and
        satisfaction for a period, against the operator's targets."""
        report = reports.kpi_report(
            actor=current_actor(), start=args["from_"], end=args["to"], group_by=args["group_by"]
        )
        if args["format"] == "json":
            return report
        mimetype, render = _DOWNLOADS[args["format"]]
        name = f"kpi-{report['from']}-{report['to']}-{report['group_by']}.{args['format']}"
        return Response(
            render(report),
            mimetype=mimetype.split(";")[0],
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Content-Type": mimetype},
        )
