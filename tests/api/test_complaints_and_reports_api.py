"""Complaints intake and lists, KPI reports in three formats, and the billing events they cause."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from openpyxl import load_workbook

from dispatch.extensions import db
from dispatch.models import BillingEvent, Complaint, KpiDelta
from dispatch.reporting import export
from tests.conftest import bearer, intake_payload

Factory = Callable[..., Any]


def complaint_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "external_id": "C-20261125-0001",
        "order_external_id": None,
        "category": "appointment",
        "cause": "installation_service",
        "received_at": "2026-11-25T08:30:00+08:00",
        "text": "工程师未按约上门",
    }
    body.update(overrides)
    return body


@pytest.fixture
def hotline(api_key: Factory) -> dict[str, str]:
    return bearer(api_key("intake"))


def number(cell: str) -> Any:
    try:
        return float(cell)
    except ValueError:
        return cell


def counts() -> tuple[int, int, int]:
    return (
        db.session.scalar(sa.select(sa.func.count()).select_from(Complaint)) or 0,
        db.session.scalar(sa.select(sa.func.count()).select_from(KpiDelta)) or 0,
        db.session.scalar(sa.select(sa.func.count()).select_from(BillingEvent)) or 0,
    )


def test_a_complaint_is_recorded_once_linked_to_the_order_engineer_and_team(
    client: FlaskClient, hotline: dict[str, str], make_engineer: Factory, token: Factory
) -> None:
    engineer = make_engineer()
    order = client.post("/api/v1/intake/orders", json=intake_payload(), headers=hotline).get_json()
    desk = bearer(token("dispatcher"))
    assert (
        client.post(
            f"/api/v1/orders/{order['id']}/assign", json={"engineer_id": engineer.id}, headers=desk
        ).status_code
        == 200
    )

    body = complaint_body(order_external_id=order["external_id"])
    first = client.post("/api/v1/intake/complaints", json=body, headers=hotline)
    assert first.status_code == 201, first.get_json()
    created = first.get_json()
    assert created["engineer"]["id"] == engineer.id and created["team"]["id"] == engineer.team_id
    assert (created["order_id"], created["district"], created["order_type"]) == (
        order["id"],
        "五华区",
        "broadband_install",
    )
    assert created["received_at"] == "2026-11-25T08:30:00+08:00"

    replay = client.post("/api/v1/intake/complaints", json=body, headers=hotline)
    assert replay.status_code == 200 and replay.get_json()["id"] == created["id"]
    before = counts()
    conflict = client.post("/api/v1/intake/complaints", json={**body, "text": "另一件事"}, headers=hotline)
    assert conflict.status_code == 409
    assert counts() == before  # one complaint, one delta, one billing event

    event = db.session.scalars(sa.select(BillingEvent).where(BillingEvent.type == "complaint.recorded")).one()
    assert event.payload["complaint"]["external_id"] == body["external_id"]
    assert event.payload["engineer"]["code"] == engineer.code
    assert event.payload["team"]["id"] == engineer.team_id

    manager = bearer(token("manager"))
    listed = client.get(f"/api/v1/complaints?engineer_id={engineer.id}&category=appointment", headers=manager)
    assert listed.status_code == 200 and listed.get_json()["total"] == 1
    assert client.get("/api/v1/complaints?category=escalated", headers=manager).get_json()["total"] == 0
    in_day = client.get("/api/v1/complaints?from=2026-11-25&to=2026-11-25", headers=manager).get_json()
    assert in_day["total"] == 1
    assert client.get("/api/v1/complaints?from=2026-11-26", headers=manager).get_json()["total"] == 0
    detail = client.get(f"/api/v1/complaints/{created['id']}", headers=manager)
    assert detail.status_code == 200 and detail.get_json()["text"] == body["text"]
    assert client.get("/api/v1/complaints/999999", headers=manager).status_code == 404


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"category": "rude"}, "category"),
        ({"cause": "weather"}, "cause"),
        ({"received_at": "2026-11-25T10:00:00"}, "received_at"),  # no offset
        ({"received_at": "2031-01-01T10:00:00+08:00"}, "received_at"),  # in the future
        ({"text": "   "}, "text"),
        ({"external_id": ""}, "external_id"),
        ({"order_external_id": "NO-SUCH-ORDER"}, "order_external_id"),
    ],
)
def test_a_bad_complaint_is_a_422_and_writes_nothing(
    client: FlaskClient, hotline: dict[str, str], overrides: dict[str, Any], field: str
) -> None:
    before = counts()
    response = client.post("/api/v1/intake/complaints", json=complaint_body(**overrides), headers=hotline)
    assert response.status_code == 422, response.get_json()
    assert field in str(response.get_json()["errors"])
    assert counts() == before


@pytest.mark.postgres
def test_concurrent_retries_of_one_complaint_record_it_once(pg_app: Any, api_key: Factory) -> None:
    headers = bearer(api_key("intake"))
    db.session.commit()
    results: list[tuple[int, int]] = []

    def post() -> None:
        with pg_app.test_client() as client:
            response = client.post("/api/v1/intake/complaints", json=complaint_body(), headers=headers)
            results.append((response.status_code, response.get_json()["id"]))

    threads = [threading.Thread(target=post) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for status, _ in results} <= {200, 201}
    assert len({complaint_id for _, complaint_id in results}) == 1
    assert sorted(status for status, _ in results).count(201) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Complaint)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(BillingEvent)) == 1


def test_the_kpi_report_in_json_csv_and_xlsx_carries_the_same_figures(
    client: FlaskClient, hotline: dict[str, str], token: Factory
) -> None:
    for _ in range(4):
        client.post("/api/v1/intake/orders", json=intake_payload(order_type="iptv_install"), headers=hotline)
    client.post(
        "/api/v1/intake/complaints",
        json=complaint_body(category="escalated", cause="network"),
        headers=hotline,
    )
    manager = bearer(token("manager"))
    query = "/api/v1/reports/kpi?from=2026-11-25&to=2026-11-25"

    report = client.get(query, headers=manager)
    assert report.status_code == 200, report.get_json()
    body = report.get_json()
    assert (body["from"], body["to"], body["days"], body["group_by"]) == (
        "2026-11-25",
        "2026-11-25",
        1,
        "order_type",
    )
    group = body["groups"][0]
    iptv = next(e for e in group["completion"] if e["order_type"] == "iptv_install")
    assert (iptv["received"], iptv["completed"]) == (4, 0)
    assert iptv["rate"] == {"numerator": 0, "denominator": 4, "value": 0.0, "target": 1.0, "met": False}
    escalated = next(e for e in group["complaints"] if e["category"] == "escalated")
    assert escalated["installation_or_network"] == {"count": 1, "target": 0, "met": False}
    assert body["targets"]["complaints_per_day"] == {"backend_first_contact": 60, "appointment": 8}

    as_csv = client.get(query + "&format=csv", headers=manager)
    assert as_csv.status_code == 200
    assert as_csv.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["Content-Disposition"]
    text = as_csv.data.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert tuple(rows[0]) == export.COLUMNS
    rate = next(r for r in rows if r[3] == "completion_rate" and r[4].startswith("iptv_install"))
    assert rate[5:] == ["0", "4", "0.0", "1.0", "no"]

    as_xlsx = client.get(query + "&format=xlsx", headers=manager)
    assert as_xlsx.status_code == 200
    sheet = load_workbook(io.BytesIO(as_xlsx.data))["KPI"]
    cells = [[number("" if c is None else str(c)) for c in row] for row in sheet.iter_rows(values_only=True)]
    assert cells == [[number(c) for c in row] for row in rows]  # the same table


def test_a_report_grouped_by_district_names_each_district(
    client: FlaskClient, hotline: dict[str, str], token: Factory
) -> None:
    client.post("/api/v1/intake/orders", json=intake_payload(), headers=hotline)
    other = intake_payload(
        address={"text": "昆明市盘龙区北京路1号", "district": "盘龙区", "lat": 25.06, "lng": 102.72}
    )
    client.post("/api/v1/intake/orders", json=other, headers=hotline)
    body = client.get(
        "/api/v1/reports/kpi?from=2026-11-25&to=2026-11-25&group_by=district", headers=bearer(token("admin"))
    ).get_json()
    assert sorted(g["name"] for g in body["groups"]) == ["五华区", "盘龙区"]


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-11-30&to=2026-11-01",
        "from=2026-11-01",
        "to=2026-11-01",
        "from=2026-13-01&to=2026-11-30",
        "from=2026-11-01&to=2026-11-30&group_by=city",
        "from=2026-11-01&to=2026-11-30&format=pdf",
        "from=2020-01-01&to=2026-11-30",
    ],
)
def test_bad_report_arguments_are_a_422(client: FlaskClient, token: Factory, query: str) -> None:
    response = client.get(f"/api/v1/reports/kpi?{query}", headers=bearer(token("manager")))
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["errors"]
