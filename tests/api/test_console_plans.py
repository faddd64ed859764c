"""The day-plan pages through the test client: the form, the plan page, accept, discard (POST → redirect)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from dispatch.extensions import db
from dispatch.models import DayPlan, District, Order
from tests.api.test_console_board import sign_in

DAY = "2026-11-26"


@pytest.fixture
def console(client: FlaskClient, make_user: Any) -> Any:
    """``console("dispatcher")`` signs the test client in as a fresh user of that role → CSRF token."""
    return lambda role: sign_in(client, make_user(role))


@pytest.fixture
def district_id(app: Any) -> int:
    found = db.session.scalar(sa.select(District.id).where(District.name == "五华区"))
    assert found is not None
    return found


def _propose(client: FlaskClient, csrf: str, district_id: int) -> str:
    response = client.post(
        "/console/plans",
        data={"csrf_token": csrf, "day": DAY, "district_id": str(district_id), "time_limit_seconds": "0.5"},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert "/console/plans/" in location
    return location


def test_a_dispatcher_plans_reads_and_accepts(
    client: FlaskClient, console: Any, district_id: int, make_engineer: Any, make_order: Any
) -> None:
    engineer = make_engineer()
    orders = [make_order() for _ in range(2)]
    csrf = console("dispatcher")
    form = client.get("/console/plans").get_data(as_text=True)
    assert "生成日计划" in form and "五华区" in form and 'href="/console/plans"' in form
    location = _propose(client, csrf, district_id)
    page = client.get(location).get_data(as_text=True)
    assert engineer.name in page and "采纳并派单" in page and "待确认" in page
    for order in orders:
        assert order.external_id in page
    assert "09:00-12:00" in page
    plan_id = int(location.rstrip("/").rsplit("/", 1)[1])
    accepted = client.post(f"/console/plans/{plan_id}/accept", data={"csrf_token": csrf})
    assert accepted.status_code == 302
    page = client.get(accepted.headers["Location"]).get_data(as_text=True)
    assert "日计划已采纳" in page and "派单 2 单" in page and "采纳结果" in page
    db.session.expire_all()
    for order in orders:
        fresh = db.session.get(Order, order.id)
        assert fresh is not None and fresh.status == "dispatched" and fresh.engineer_id == engineer.id
    again = client.post(f"/console/plans/{plan_id}/accept", data={"csrf_token": csrf})
    assert "already accepted" in client.get(again.headers["Location"]).get_data(as_text=True)


def test_discard_and_refusals(
    client: FlaskClient, console: Any, district_id: int, make_engineer: Any
) -> None:
    make_engineer()
    csrf = console("admin")
    location = _propose(client, csrf, district_id)
    plan_id = int(location.rstrip("/").rsplit("/", 1)[1])
    response = client.post(f"/console/plans/{plan_id}/discard", data={"csrf_token": csrf})
    assert "日计划已放弃" in client.get(response.headers["Location"]).get_data(as_text=True)
    assert db.session.get(DayPlan, plan_id).status == "discarded"  # type: ignore[union-attr]
    # No district chosen: back to the form with the reason; no plan stored.
    response = client.post("/console/plans", data={"csrf_token": csrf, "day": DAY})
    assert response.status_code == 302 and "/console/plans/" not in response.headers["Location"]
    assert "Choose at least one district" in client.get(response.headers["Location"]).get_data(as_text=True)
    bad_day = client.post("/console/plans", data={"csrf_token": csrf, "day": "x", "district_id": "1"})
    assert "请选择日期" in client.get(bad_day.headers["Location"]).get_data(as_text=True)
    assert client.post("/console/plans", data={"day": DAY}).status_code == 400  # no CSRF token
    assert client.get("/console/plans/999999").status_code == 404


def test_the_planner_page_is_for_dispatchers_and_admins(client: FlaskClient, console: Any) -> None:
    console("manager")
    assert client.get("/console/plans").status_code == 403
    assert 'href="/console/plans"' not in client.get("/console/kpi").get_data(as_text=True)
