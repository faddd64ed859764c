"""Candidates and auto-assignment over HTTP (CONTRACT §5: candidates, assign ``{"auto": true}``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.test_orders_api import ORDERS, snapshot
from tests.conftest import bearer, intake_payload

NEAR = {"lat": 25.0433, "lng": 102.7065}
FAR = {"lat": 25.1400, "lng": 102.7065}


@pytest.fixture
def desk(token: Any) -> dict[str, str]:
    return bearer(token("dispatcher"))


def test_candidates_are_a_ranked_explained_list(client, desk, make_order, make_engineer):
    far, near = make_engineer(home=FAR), make_engineer(home=NEAR)
    make_engineer(home=NEAR, skills=["repair"])  # not qualified for an install
    order = make_order()
    response = client.get(f"{ORDERS}/{order.id}/candidates", headers=desk)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [c["engineer"] for c in body] == [
        {"id": near.id, "code": near.code, "name": near.name},
        {"id": far.id, "code": far.code, "name": far.name},
    ]
    first = body[0]
    assert 0 < first["score"] <= 1
    assert first["distance_km"] == pytest.approx(0.111, abs=0.005)
    assert set(first["reasons"]) == {"distance", "load", "sla_urgency", "team_balance"}
    assert first["reasons"]["distance"]["weight"] == 0.4
    assert first["violations"] == []


def test_include_rejected_says_which_rules_exclude_whom(client, desk, make_order, make_engineer):
    make_engineer(home=NEAR)
    unskilled = make_engineer(home=NEAR, skills=["repair"])
    order = make_order()
    response = client.get(f"{ORDERS}/{order.id}/candidates?include_rejected=true&limit=5", headers=desk)
    assert response.status_code == 200
    rejected = [c for c in response.get_json() if c["score"] is None]
    assert [(c["engineer"]["id"], c["violations"]) for c in rejected] == [(unskilled.id, ["skill"])]


@pytest.mark.parametrize("query", ["limit=0", "limit=51", "limit=ten", "include_rejected=maybe"])
def test_bad_candidate_queries_are_422(client, desk, make_order, query):
    order = make_order()
    response = client.get(f"{ORDERS}/{order.id}/candidates?{query}", headers=desk)
    assert response.status_code == 422
    assert response.get_json()["errors"]


def test_candidates_of_an_unknown_order_are_404(client, desk):
    assert client.get(f"{ORDERS}/999999/candidates", headers=desk).status_code == 404
    assert client.get(f"{ORDERS}/99999999999/candidates", headers=desk).status_code == 404


def test_auto_assign_puts_the_best_engineer_on_the_order(client, desk, make_order, make_engineer):
    make_engineer(home=FAR)
    near = make_engineer(home=NEAR)
    order = make_order()
    response = client.post(f"{ORDERS}/{order.id}/assign", json={"auto": True}, headers=desk)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["status"], body["engineer"]["id"], body["warnings"]) == ("dispatched", near.id, [])
    detail = client.get(f"{ORDERS}/{order.id}", headers=desk).get_json()
    decision = [e for e in detail["events"] if e["action"] == "assign"][-1]["payload"]
    assert decision["mode"] == "auto"
    assert [c["engineer_id"] for c in decision["candidates"]][0] == near.id


def test_auto_assign_with_nobody_qualified_is_409_and_changes_nothing(
    client, desk, make_order, make_engineer
):
    make_engineer(districts=["盘龙区"])
    order = make_order()
    before = snapshot(client, desk, order.id)
    response = client.post(f"{ORDERS}/{order.id}/assign", json={"auto": True}, headers=desk)
    assert response.status_code == 409
    assert "qualifies" in response.get_json()["message"]
    assert snapshot(client, desk, order.id) == before


def test_a_manual_choice_of_an_inactive_engineer_is_409(client, desk, make_order, make_engineer):
    retired = make_engineer(active=False)
    order = make_order()
    response = client.post(f"{ORDERS}/{order.id}/assign", json={"engineer_id": retired.id}, headers=desk)
    assert response.status_code == 409


def test_with_auto_dispatch_on_the_hotline_gets_back_a_dispatched_order(
    app, client, api_key, make_engineer, monkeypatch
):
    monkeypatch.setitem(app.config, "AUTO_DISPATCH", True)
    engineer = make_engineer(home=NEAR)
    response = client.post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(api_key("intake")))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["status"], body["engineer"]["id"]) == ("dispatched", engineer.id)


def test_engineers_carry_leave_days_and_their_last_position(client, token, make_engineer):
    admin = bearer(token("admin"))
    engineer = make_engineer()
    leave = [{"start": "2026-12-01", "end": "2026-12-03", "reason": "年假"}]
    response = client.patch(f"/api/v1/engineers/{engineer.id}", json={"leave": leave}, headers=admin)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["leave"] == leave
    assert response.get_json()["position"] is None
    backwards = [{"start": "2026-12-03", "end": "2026-12-01"}]
    response = client.patch(f"/api/v1/engineers/{engineer.id}", json={"leave": backwards}, headers=admin)
    assert response.status_code == 422
    assert client.get(f"/api/v1/engineers/{engineer.id}", headers=admin).get_json()["leave"] == leave
