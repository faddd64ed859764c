"""The day-plan endpoints: shapes, statuses, refusals (planning itself: tests/services/test_planning.py)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from dispatch.extensions import db
from dispatch.models import District
from tests.conftest import bearer

DAY = "2026-11-26"


@pytest.fixture
def desk(token: Any) -> dict[str, str]:
    return bearer(token("dispatcher"))


@pytest.fixture
def district_id(app: Any) -> int:
    found = db.session.scalar(sa.select(District.id).where(District.name == "五华区"))
    assert found is not None
    return found


@pytest.fixture
def planned(client: Any, desk: dict[str, str], district_id: int, make_engineer: Any, make_order: Any) -> Any:
    make_engineer()
    make_engineer(skills=["repair"])
    for _ in range(3):
        make_order()
    make_order(
        order_type="repair",
        requested_window={"start": f"{DAY}T22:00:00+08:00", "end": f"{DAY}T23:00:00+08:00"},
    )
    response = client.post(
        "/api/v1/plans",
        json={"day": DAY, "district_ids": [district_id], "time_limit_seconds": 0.5},
        headers=desk,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_plan_shows_each_engineers_visits_with_etas_and_travel(planned: Any, district_id: int) -> None:
    assert planned["status"] == "proposed" and planned["day"] == DAY
    assert planned["districts"] == [{"id": district_id, "name": "五华区"}]
    assert planned["orders_count"] == 4 and planned["planned_count"] == 3
    visits = [v for r in planned["routes"] for v in r["visits"]]
    assert len(visits) == 3
    for route in planned["routes"]:
        assert set(route) >= {"engineer", "start", "shift", "capacity", "travel_before_m", "travel_after_m"}
        assert route["engineer"]["code"]
    for visit in visits:
        assert (
            visit["eta"].endswith("+08:00")
            and visit["window"]["start"] <= visit["eta"] <= visit["window"]["end"]
        )
        assert visit["external_id"] and visit["address"] and visit["leg_m"] >= 0 and visit["pinned"] is False
    assert planned["travel_after_m"] == sum(r["travel_after_m"] for r in planned["routes"])
    (unplanned,) = planned["unplanned"]
    assert unplanned["reason"] == "does_not_fit" and unplanned["message"] and unplanned["external_id"]


def test_plans_are_read_and_listed(client: Any, desk: dict[str, str], planned: Any) -> None:
    one = client.get(f"/api/v1/plans/{planned['id']}", headers=desk)
    assert one.status_code == 200 and one.get_json() == planned
    listed = client.get(f"/api/v1/plans?day={DAY}", headers=desk).get_json()["items"]
    assert [p["id"] for p in listed] == [planned["id"]] and "routes" not in listed[0]
    assert client.get("/api/v1/plans?day=2026-12-01", headers=desk).get_json() == {"items": []}
    assert client.get("/api/v1/plans?day=tomorrow", headers=desk).status_code == 422


def test_accept_then_accept_again(client: Any, desk: dict[str, str], planned: Any) -> None:
    response = client.post(f"/api/v1/plans/{planned['id']}/accept", headers=desk)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["plan"]["status"] == "accepted" and body["plan"]["decided_by"]
    assert len(body["assigned"]) == 3 and body["unchanged"] == [] and body["skipped"] == []
    planned_engineer = {v["order_id"]: r["engineer"]["id"] for r in planned["routes"] for v in r["visits"]}
    for item in body["assigned"]:
        assert item["engineer_id"] == planned_engineer[item["order_id"]]
        order = client.get(f"/api/v1/orders/{item['order_id']}", headers=desk).get_json()
        assert order["status"] == "dispatched" and order["engineer"]["id"] == item["engineer_id"]
    again = client.post(f"/api/v1/plans/{planned['id']}/accept", headers=desk)
    assert again.status_code == 409 and again.get_json()["status"] == "accepted"
    assert client.post(f"/api/v1/plans/{planned['id']}/discard", headers=desk).status_code == 409
    shown = client.get(f"/api/v1/plans/{planned['id']}", headers=desk).get_json()
    assert shown["status"] == "accepted" and len(shown["result"]["assigned"]) == 3


def test_discard(client: Any, desk: dict[str, str], planned: Any) -> None:
    response = client.post(f"/api/v1/plans/{planned['id']}/discard", headers=desk)
    assert response.status_code == 200 and response.get_json()["status"] == "discarded"
    assert client.post(f"/api/v1/plans/{planned['id']}/accept", headers=desk).get_json()["code"] == 409


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("POST", "/accept"), ("POST", "/discard")])
def test_an_unknown_plan_is_404(client: Any, desk: dict[str, str], method: str, suffix: str) -> None:
    for plan_id in (987654, 2**31 + 5):
        response = client.open(f"/api/v1/plans/{plan_id}{suffix}", method=method, headers=desk)
        assert response.status_code == 404 and response.get_json()["code"] == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({"district_ids": [1]}, "day"),
        ({"day": DAY}, "district_ids"),
        ({"day": DAY, "district_ids": []}, "district_ids"),
        ({"day": "26/11/2026", "district_ids": [1]}, "day"),
        ({"day": DAY, "district_ids": ["one"]}, "district_ids"),
        ({"day": DAY, "district_ids": [0]}, "district_ids"),
        ({"day": DAY, "district_ids": [2**40]}, "district_ids"),
        ({"day": DAY, "district_ids": [999_999]}, "district_ids"),
        ({"day": "2026-11-24", "district_ids": [1]}, "day"),
        ({"day": DAY, "district_ids": [1], "time_limit_seconds": 0}, "time_limit_seconds"),
        ({"day": DAY, "district_ids": [1], "time_limit_seconds": 31}, "time_limit_seconds"),
        ({"day": DAY, "district_ids": [1], "time_limit_seconds": "NaN"}, "time_limit_seconds"),
    ],
)
def test_bad_requests_are_422(client: Any, desk: dict[str, str], body: dict[str, Any], field: str) -> None:
    response = client.post("/api/v1/plans", json=body, headers=desk)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()
    assert error["code"] == 422 and field in str(error["errors"])


def test_the_plan_routes_are_documented(client: Any) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert {"post", "get"} <= set(paths["/api/v1/plans"])
    for path in (
        "/api/v1/plans/{plan_id}",
        "/api/v1/plans/{plan_id}/accept",
        "/api/v1/plans/{plan_id}/discard",
    ):
        assert path in paths
