"""The console's acceptance desk and KPI dashboard, through the Flask test client with a signed-in session."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openpyxl import load_workbook

from api.intake.schemas import ComplaintIntakeSchema
from dispatch import workflow
from dispatch.clock import FakeClock, utcnow
from dispatch.extensions import db
from dispatch.models import Order, OrderEvent
from dispatch.reporting import export
from dispatch.services import attachments, complaints
from tests.conftest import INTAKE_ACTOR
from tests.services.test_workflow import DISPATCHER, engineer_actor, kinds, satisfy_checklist

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
Factory = Callable[..., Any]


def console_client(app: Flask, user: Any) -> tuple[FlaskClient, str]:
    """A test client signed in through the login form as ``user``; returns it and the session's CSRF token."""
    client = app.test_client()
    form = client.get("/console/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert match, form
    response = client.post(
        "/console/login",
        data={"username": user.username, "password": "password123", "csrf_token": match.group(1)},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    with client.session_transaction() as session:  # signing in starts a new session with a new token
        csrf = str(session["csrf"])
    return client, csrf


def status_of(order_id: int) -> str:
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    assert order is not None
    return order.status


@pytest.fixture
def signed_in(app: Flask, make_user: Factory) -> Callable[[str], tuple[FlaskClient, str]]:
    return lambda role: console_client(app, make_user(role))


@pytest.fixture
def submit_order(
    app: Flask, clock: FakeClock, make_order: Factory, make_engineer: Factory, make_user: Factory
) -> Callable[..., Order]:
    """An install-then-pay order the engineer submitted to the desk (a real ID photo file stored)."""

    def factory(**overrides: Any) -> Order:
        engineer = make_engineer()
        user = make_user("engineer", engineer=engineer)
        actor = engineer_actor(engineer, user.id)
        order = make_order(**overrides)
        now = utcnow()
        window = {"start": now + timedelta(hours=2), "end": now + timedelta(hours=4)}
        workflow.apply(order, "assign", DISPATCHER, now=now, params={"engineer_id": engineer.id})
        workflow.apply(order, "take", actor, now=now)
        workflow.apply(order, "appoint", actor, now=now, params={"appointment": window})
        workflow.apply(order, "check_in", actor, now=now)
        order.box_id, order.port, order.ont_sn, order.loid, order.optical_power_dbm = (
            "WH-FXH-012",
            "7",
            "ZTEG12345678",
            "LOID-0001",
            -18.5,
        )
        db.session.commit()
        attachments.add_attachment(order.id, "id_card", PNG + str(order.id).encode(), None, actor=actor)
        workflow.apply(order, "submit", actor, now=utcnow(), attachment_kinds=kinds(order))
        db.session.commit()
        clock.advance(minutes=1)
        return order

    return factory


# --- the acceptance desk --------------------------------------------------------------------------------


def test_the_desk_lists_pending_orders_oldest_first_with_countdown_and_id_photo(
    signed_in: Any, submit_order: Any, make_order: Factory
) -> None:
    first = submit_order(customer={"name": "李四", "phone": "13912345678"}, products=["broadband_500m"])
    second = submit_order()
    not_pending = make_order()
    client, _ = signed_in("acceptance")

    response = client.get("/console/desk")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "受理台" in html
    assert html.index(first.external_id) < html.index(second.external_id)  # oldest first
    assert not_pending.external_id not in html
    for text in ("李四", "13912345678", "人民中路1号", "broadband_500m", "WH-FXH-012", "ZTEG12345678"):
        assert text in html
    assert "LOID-0001" in html and "-18.5 dBm" in html
    countdowns = re.findall(r'class="countdown" data-due="([^"]+)" data-started="([^"]+)"', html)
    assert len(countdowns) == 2
    assert countdowns[0] == ("2026-11-25T09:10:00+08:00", "2026-11-25T09:00:00+08:00")  # the 10-minute clock
    assert 'data-refresh="/console/desk/queue" data-every="10"' in html
    photo = first.attachments[0]
    assert f'href="/console/desk/{first.id}/attachments/{photo.id}"' in html

    rows = client.get("/console/desk/queue")
    assert rows.status_code == 200
    assert first.external_id in rows.get_data(as_text=True)
    assert "<html" not in rows.get_data(as_text=True)  # only the rows, for the refresh


def test_the_desk_streams_the_id_photo_to_the_desk_but_not_to_a_dispatcher(
    signed_in: Any, submit_order: Any
) -> None:
    order = submit_order()
    photo = order.attachments[0]
    url = f"/console/desk/{order.id}/attachments/{photo.id}"

    desk, _ = signed_in("acceptance")
    response = desk.get(url)
    assert response.status_code == 200
    assert response.mimetype == "image/png" and response.data.startswith(PNG)
    assert response.headers["Content-Disposition"].startswith("inline")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response.headers["Cache-Control"]
    admin, _ = signed_in("admin")
    assert admin.get(url).status_code == 200

    dispatcher, _ = signed_in("dispatcher")
    assert dispatcher.get(url).status_code == 403  # personal data
    queue = dispatcher.get("/console/desk").get_data(as_text=True)
    assert order.external_id in queue and url not in queue  # the dispatcher sees the order, not the photo
    assert url not in dispatcher.get(f"/console/desk/{order.id}").get_data(as_text=True)
    assert desk.get(f"/console/desk/{order.id}/attachments/999999").status_code == 404


def test_a_manager_is_refused_the_desk(signed_in: Any, submit_order: Any) -> None:
    order = submit_order()
    manager, csrf = signed_in("manager")
    assert manager.get("/console/desk").status_code == 403
    assert manager.get(f"/console/desk/{order.id}").status_code == 403
    response = manager.post(
        f"/console/desk/{order.id}/decision", data={"decision": "approve", "csrf_token": csrf}
    )
    assert response.status_code == 302  # the console flashes the 403 and goes back
    assert status_of(order.id) == "pending_acceptance"
    assert "manager may not approve" in manager.get("/console/kpi").get_data(as_text=True)  # the flash


def test_approving_moves_the_order_on_and_flashes_back_to_the_queue(
    signed_in: Any, submit_order: Any
) -> None:
    order = submit_order()
    client, csrf = signed_in("acceptance")
    response = client.post(
        f"/console/desk/{order.id}/decision",
        data={
            "decision": "approve",
            "note": "证件核验通过",
            "external_id": order.external_id,
            "csrf_token": csrf,
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/console/desk")
    assert status_of(order.id) == "in_progress"
    page = client.get("/console/desk").get_data(as_text=True)
    assert f"工单 {order.external_id} 已受理通过" in page
    assert f'data-order-id="{order.id}"' not in page
    event = db.session.scalars(
        db.select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id.desc())
    ).first()
    assert event is not None and (event.action, event.source) == ("approve", "console")
    assert event.payload["note"] == "证件核验通过"


def test_rejecting_sends_the_order_back_on_site_with_the_note(signed_in: Any, submit_order: Any) -> None:
    order = submit_order()
    client, csrf = signed_in("dispatcher")  # the workflow lets dispatchers decide too
    client.post(
        f"/console/desk/{order.id}/decision",
        data={"decision": "reject", "note": "身份证照片模糊", "csrf_token": csrf},
    )
    assert status_of(order.id) == "on_site"
    detail = client.get(f"/console/desk/{order.id}").get_data(as_text=True)
    assert "身份证照片模糊" in detail and "受理驳回" in detail
    assert 'name="decision" value="reject"' not in detail  # no longer pending: no forms


def test_a_reject_without_a_note_is_accepted_by_the_service(signed_in: Any, submit_order: Any) -> None:
    """The workflow does not require a note (the page's form does, in the browser)."""
    order = submit_order()
    client, csrf = signed_in("acceptance")
    assert 'name="note" rows="2" maxlength="500" required' in client.get(
        f"/console/desk/{order.id}"
    ).get_data(as_text=True)
    client.post(f"/console/desk/{order.id}/decision", data={"decision": "reject", "csrf_token": csrf})
    assert status_of(order.id) == "on_site"


def test_an_admin_sees_the_desk_but_may_not_decide(signed_in: Any, submit_order: Any) -> None:
    order = submit_order()
    client, csrf = signed_in("admin")
    page = client.get("/console/desk").get_data(as_text=True)
    assert order.external_id in page and "当前角色只能查看" in page
    assert 'name="decision" value="approve"' not in page
    client.post(f"/console/desk/{order.id}/decision", data={"decision": "approve", "csrf_token": csrf})
    assert status_of(order.id) == "pending_acceptance"
    assert "admin may not approve" in client.get("/console/desk").get_data(as_text=True)


def test_deciding_twice_flashes_the_conflict(signed_in: Any, submit_order: Any) -> None:
    order = submit_order()
    client, csrf = signed_in("acceptance")
    for _ in range(2):
        client.post(f"/console/desk/{order.id}/decision", data={"decision": "approve", "csrf_token": csrf})
    page = client.get("/console/desk").get_data(as_text=True)
    assert 'class="flash error"' in page and "in_progress" in page
    assert status_of(order.id) == "in_progress"


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_decision_without_the_csrf_token_is_400_and_changes_nothing(
    signed_in: Any, submit_order: Any, token: str | None
) -> None:
    order = submit_order()
    client, _ = signed_in("acceptance")
    data = {"decision": "approve"} | ({"csrf_token": token} if token else {})
    response = client.post(f"/console/desk/{order.id}/decision", data=data)
    assert response.status_code == 400
    assert status_of(order.id) == "pending_acceptance"


def test_an_unknown_decision_is_flashed_as_invalid(signed_in: Any, submit_order: Any) -> None:
    order = submit_order()
    client, csrf = signed_in("acceptance")
    client.post(f"/console/desk/{order.id}/decision", data={"decision": "maybe", "csrf_token": csrf})
    assert "decision" in client.get("/console/desk").get_data(as_text=True)
    assert status_of(order.id) == "pending_acceptance"


def test_the_desk_needs_a_signed_in_user(app: Flask) -> None:
    response = app.test_client().get("/console/desk")
    assert response.status_code == 302 and "/console/login" in response.headers["Location"]


# --- the KPI dashboard ----------------------------------------------------------------------------------


def complete(clock: FakeClock, order: Order, engineer: Any) -> None:
    """A prepaid order through assignment, visit and completion, a second per step."""
    eng = engineer_actor(engineer)
    satisfy_checklist(order)
    window = {"start": clock.now() + timedelta(hours=2), "end": clock.now() + timedelta(hours=4)}
    for action, actor, params in (
        ("assign", DISPATCHER, {"engineer_id": engineer.id}),
        ("take", eng, {}),
        ("appoint", eng, {"appointment": window}),
        ("check_in", eng, {}),
        ("start_work", eng, {}),
        ("complete", eng, {}),
    ):
        workflow.apply(
            order, action, actor, now=clock.advance(seconds=1), params=params, attachment_kinds=kinds(order)
        )
    db.session.commit()


def complaint(category: str, cause: str, n: int) -> None:
    body = {
        "external_id": f"C-console-{n}",
        "category": category,
        "cause": cause,
        "received_at": utcnow().isoformat(),
        "text": "客户投诉",
    }
    complaints.record_complaint(ComplaintIntakeSchema().load(body), actor=INTAKE_ACTOR)


@pytest.fixture
def known_month(app: Flask, clock: FakeClock, make_order: Factory, make_engineer: Factory) -> None:
    """On 2026-11-25: 5 opportunity orders (4 completed: 80 %, met), 2 IPTV (none: 0 %, not met), one in
    盘龙区; 2 appointment complaints and one escalated network complaint."""
    engineer = make_engineer()
    for _ in range(4):
        complete(clock, make_order(order_type="opportunity", pay_mode="prepaid"), engineer)
    make_order(order_type="opportunity", pay_mode="prepaid")
    make_order(order_type="iptv_install")
    make_order(
        order_type="iptv_install",
        address={"text": "昆明市盘龙区北京路1号", "district": "盘龙区", "lat": 25.06, "lng": 102.72},
    )
    complaint("appointment", "installation_service", 1)
    complaint("appointment", "other", 2)
    complaint("escalated", "network", 3)


def bar_titles(html: str, chart_id: str) -> list[str]:
    chart = re.search(rf'<svg[^>]* id="{chart_id}">(.*?)</svg>', html, re.S)
    assert chart, chart_id
    return re.findall(r'<g class="bar [^"]*"[^>]*><title>([^<]*)</title>', chart.group(1))


def test_the_dashboard_shows_this_month_by_default_with_figures_against_targets(
    signed_in: Any, known_month: None
) -> None:
    client, _ = signed_in("manager")
    response = client.get("/console/kpi")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'name="from" value="2026-11-01"' in html and 'name="to" value="2026-11-25"' in html
    assert "统计期 2026-11-01 至 2026-11-25（25 天）" in html

    completion = bar_titles(html, "chart-completion")
    assert "商机单 竣工率：80.0%（4/5）；目标 ≥ 80%；达标" in completion
    assert "IPTV+ 竣工率：0.0%（0/2）；目标 ≥ 100%；未达标" in completion
    assert "商机单 及时率：80.0%（4/5）；目标 ≥ 80%；达标" in completion
    assert re.search(
        r'<g class="bar met-yes" data-label="商机单" data-series="竣工率" data-value="0.8"', html
    )
    assert re.search(r'<g class="bar met-no" data-label="IPTV\+" data-series="竣工率" data-value="0.0"', html)
    assert html.count('class="target"') >= 4  # the target marks

    complaints_ = bar_titles(html, "chart-complaints")
    assert "约服 日均：0.08 件/日（2 件 / 25 天）；目标 ≤ 8 件/日；达标" in complaints_
    assert "首问后端 日均：0 件/日（0 件 / 25 天）；目标 ≤ 60 件/日；达标" in complaints_
    assert "越级（装维/网络） 合计：1 件；目标 ≤ 0 件；未达标" in complaints_
    sla = bar_titles(html, "chart-sla")
    assert any(title.startswith("竣工时限") for title in sla)
    assert bar_titles(html, "chart-service")[0].startswith("预约履约率：100.0%（4/4）")
    assert '<td class="met-no">0.0%</td>' in html  # the figures table marks IPTV+ as not met
    assert "按区县明细" not in html


def test_grouped_by_district_the_dashboard_lists_each_district(signed_in: Any, known_month: None) -> None:
    client, _ = signed_in("admin")
    html = client.get("/console/kpi?from=2026-11-25&to=2026-11-25&group_by=district").get_data(as_text=True)
    assert "按区县明细" in html
    # the complaints without an order count under 未分配 (unassigned), last
    assert re.findall(r'<tr data-group="([^"]+)">', html) == ["五华区", "盘龙区", "未分配"]
    assert '<option value="district" selected>' in html
    assert "/console/kpi/export/csv?from=2026-11-25&amp;to=2026-11-25&amp;group_by=district" in html


def test_the_exports_are_the_reports_csv_and_xlsx(signed_in: Any, known_month: None) -> None:
    client, _ = signed_in("manager")
    query = "?from=2026-11-25&to=2026-11-25&group_by=district"
    as_csv = client.get("/console/kpi/export/csv" + query)
    assert as_csv.status_code == 200
    assert as_csv.headers["Content-Type"].startswith("text/csv")
    assert (
        as_csv.headers["Content-Disposition"]
        == 'attachment; filename="kpi-2026-11-25-2026-11-25-district.csv"'
    )
    rows = list(csv.reader(io.StringIO(as_csv.data.decode("utf-8").lstrip("\ufeff"))))
    assert tuple(rows[0]) == export.COLUMNS
    assert {row[2] for row in rows[1:]} == {"五华区", "盘龙区", "未分配"}
    iptv = next(r for r in rows if r[2] == "盘龙区" and r[3] == "completion_rate")
    assert iptv[4].startswith("iptv_install") and iptv[5:] == ["0", "1", "0.0", "1.0", "no"]

    as_xlsx = client.get("/console/kpi/export/xlsx" + query)
    assert as_xlsx.status_code == 200
    assert as_xlsx.headers["Content-Disposition"].endswith('district.xlsx"')
    sheet = load_workbook(io.BytesIO(as_xlsx.data))["KPI"]
    table = list(sheet.iter_rows(values_only=True))
    assert list(table[0]) == list(export.COLUMNS)
    assert len(table) == len(rows)
    assert client.get("/console/kpi/export/pdf" + query).status_code == 404


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-13-01&to=2026-11-30", "开始日期：「2026-13-01」不是有效日期"),
        ("from=2026-11-01&to=yesterday", "结束日期：「yesterday」不是有效日期"),
        ("from=2026-11-30&to=2026-11-01", "结束日期：结束日期不能早于开始日期"),
        ("from=2025-01-01&to=2026-11-01", "统计期最长 366 天"),
        ("group_by=city", "分组："),
    ],
)
def test_bad_dates_give_a_clear_error_not_a_server_error(signed_in: Any, query: str, message: str) -> None:
    client, _ = signed_in("manager")
    response = client.get(f"/console/kpi?{query}")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert message in html and 'role="alert"' in html
    assert 'name="from"' in html  # the form is shown again to correct
    assert client.get(f"/console/kpi/export/csv?{query}").status_code == 422


def test_only_managers_and_admins_see_the_dashboard(signed_in: Any) -> None:
    for role in ("dispatcher", "acceptance"):
        client, _ = signed_in(role)
        assert client.get("/console/kpi").status_code == 403
        assert client.get("/console/kpi/export/csv").status_code == 403
    client, _ = signed_in("manager")
    html = client.get("/console/kpi").get_data(as_text=True)
    assert "该统计期内没有数据" in html  # an empty month renders, with empty charts
