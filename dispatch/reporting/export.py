"""A KPI report as one flat table, for CSV and XLSX (openpyxl) downloads."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from dispatch.reporting import kpi
from dispatch.vocabulary import ORDER_TYPE_LABELS

COLUMNS = (
    "group_by",
    "group_key",
    "group_name",
    "kpi",
    "item",
    "numerator",
    "denominator",
    "value",
    "target",
    "met",
)


def rows(report: dict[str, Any]) -> Iterator[list[Any]]:
    """One row per figure: which group, which KPI and item, numerator, denominator, value, target, met."""
    for group in report["groups"]:
        head = [report["group_by"], group["key"], group["name"]]
        for name, item, figure in kpi.flat(group):
            label = ORDER_TYPE_LABELS.get(item)
            yield [*head, name, f"{item} {label}" if label else item, *_cells(figure)]


def _met(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "no")


def _cells(figure: dict[str, Any]) -> list[Any]:
    value = figure["value"]
    return [
        figure["numerator"],
        "" if figure["denominator"] is None else figure["denominator"],
        "" if value is None else round(value, 6),
        "" if figure["target"] is None else figure["target"],
        _met(figure["met"]),
    ]


def to_csv(report: dict[str, Any]) -> bytes:
    """UTF-8 with a byte-order mark, so that Excel shows the Chinese names."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows(report))
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(report: dict[str, Any]) -> bytes:
    """One sheet of figures (the CSV's table) and one of the report's period and targets."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "KPI"
    sheet.append(list(COLUMNS))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows(report):
        sheet.append(row)
    sheet.freeze_panes = "A2"
    about = book.create_sheet("Report")
    for name in ("from", "to", "days", "group_by", "generated_at"):
        about.append([name, report[name]])
    for name, value in report["targets"].items():
        if isinstance(value, dict):
            for item, target in value.items():
                about.append([f"target {name}", item, target])
        else:
            about.append([f"target {name}", "", value])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
