"""Engineers API (CONTRACT §5 "Engineers and SLA policies"): admins manage them, dispatchers read."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import bearer

ENGINEERS = "/api/v1/engineers"
EVERY_DAY = [{"weekday": d, "start": "08:00", "end": "20:00"} for d in range(1, 8)]


@pytest.fixture
def admin(token: Any) -> dict[str, str]:
    return bearer(token("admin"))


@pytest.fixture
def desk(token: Any) -> dict[str, str]:
    return bearer(token("dispatcher"))


def full_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": "KM-WH-001",
        "name": "李四",
        "phone": "139 1234 5678",
        "team": "五华装维一班",
        "skills": ["broadband_install", "repair"],
        "districts": ["五华区", "盘龙区"],
        "home": {"lat": 25.04, "lng": 102.70},
        "daily_capacity": 8,
        "shifts": [
            {"weekday": 1, "start": "08:30", "end": "17:30"},
            {"weekday": 3, "start": "12:00", "end": "21:00"},
        ],
    }
    body.update(overrides)
    return body


def create(client: Any, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = client.post(ENGINEERS, json=full_body(**overrides), headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def count(client: Any, headers: dict[str, str]) -> int:
    response = client.get(ENGINEERS, headers=headers)
    assert response.status_code == 200, response.get_json()
    return int(response.get_json()["total"])


# --- POST -----------------------------------------------------------------------------------------------


def test_create_with_full_body_returns_the_engineer(client, admin):
    body = create(client, admin)
    assert isinstance(body["id"], int)
    assert body["code"] == "KM-WH-001"
    assert body["name"] == "李四"
    assert body["phone"] == "+8613912345678"
    assert body["team"] == "五华装维一班"
    assert sorted(body["skills"]) == ["broadband_install", "repair"]
    assert sorted(body["districts"]) == ["五华区", "盘龙区"]
    assert body["home"] == {"lat": 25.04, "lng": 102.70}
    assert body["daily_capacity"] == 8
    assert body["shifts"] == [
        {"weekday": 1, "start": "08:30", "end": "17:30"},
        {"weekday": 3, "start": "12:00", "end": "21:00"},
    ]
    assert body["active"] is True
    assert body["created_at"] == "2026-11-25T09:00:00+08:00"
    again = client.get(f"{ENGINEERS}/{body['id']}", headers=admin)
    assert again.status_code == 200
    assert again.get_json() == body


def test_create_with_minimal_body_gets_defaults(client, admin):
    response = client.post(
        ENGINEERS, json={"code": "KM-MIN", "name": "王五", "phone": "13800138000"}, headers=admin
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["phone"] == "+8613800138000"
    assert body["shifts"] == EVERY_DAY
    assert body["daily_capacity"] == 6
    assert body["active"] is True
    assert body["skills"] == []
    assert body["districts"] == []
    assert body["team"] is None
    assert body["home"] is None


def test_create_without_shifts_defaults_to_every_day_0800_2000(client, admin):
    body = full_body()
    del body["shifts"]
    response = client.post(ENGINEERS, json=body, headers=admin)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["shifts"] == EVERY_DAY


@pytest.mark.parametrize("phone", ["+86 139-1234-5678", "8613912345678", "13912345678"])
def test_create_normalises_phone_to_e164(client, admin, phone):
    assert create(client, admin, phone=phone)["phone"] == "+8613912345678"


def test_create_duplicate_code_is_409(client, admin):
    create(client, admin)
    total = count(client, admin)
    response = client.post(ENGINEERS, json=full_body(name="另一个人"), headers=admin)
    assert response.status_code == 409
    assert response.get_json()["code"] == 409
    assert count(client, admin) == total


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"districts": ["五华区", "火星区"]}, "districts"),
        ({"skills": ["plumbing"]}, "skills"),
        ({"phone": "12345"}, "phone"),
        ({"phone": "010-62345678"}, "phone"),  # a Beijing landline, not a mobile
        ({"phone": "+1 415 555 2671"}, "phone"),
        ({"shifts": [{"weekday": 1, "start": "20:00", "end": "08:00"}]}, "shifts"),
        ({"shifts": [{"weekday": 1, "start": "08:00", "end": "08:00"}]}, "shifts"),
        ({"shifts": [{"weekday": 8, "start": "08:00", "end": "20:00"}]}, "shifts"),
        ({"shifts": [{"weekday": 0, "start": "08:00", "end": "20:00"}]}, "shifts"),
        ({"shifts": [{"weekday": 1, "start": "8am", "end": "20:00"}]}, "shifts"),
        ({"shifts": [{"weekday": 1}]}, "shifts"),
        ({"daily_capacity": -1}, "daily_capacity"),
        ({"home": {"lat": 95, "lng": 102.7}}, "home"),
        ({"code": "has space"}, "code"),
        ({"name": ""}, "name"),
    ],
)
def test_create_rejects_invalid_fields_with_422(client, admin, overrides, field):
    response = client.post(ENGINEERS, json=full_body(**overrides), headers=admin)
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["code"] == 422
    assert field in body["errors"]
    assert count(client, admin) == 0


@pytest.mark.parametrize("missing", ["code", "name", "phone"])
def test_create_requires_code_name_and_phone(client, admin, missing):
    body = full_body()
    del body[missing]
    response = client.post(ENGINEERS, json=body, headers=admin)
    assert response.status_code == 422
    assert missing in response.get_json()["errors"]


# --- GET ------------------------------------------------------------------------------------------------


def test_list_is_by_code_with_pagination(client, admin):
    for code in ("E-03", "E-01", "E-05", "E-02", "E-04"):
        create(client, admin, code=code)
    first = client.get(ENGINEERS, query_string={"page": 1, "page_size": 2}, headers=admin).get_json()
    third = client.get(ENGINEERS, query_string={"page": 3, "page_size": 2}, headers=admin).get_json()
    assert [e["code"] for e in first["items"]] == ["E-01", "E-02"]
    assert [e["code"] for e in third["items"]] == ["E-05"]
    assert first["total"] == third["total"] == 5
    assert (third["page"], third["page_size"]) == (3, 2)


@pytest.mark.parametrize("query", [{"page_size": 201}, {"page": 0}, {"active": "perhaps"}])
def test_list_rejects_bad_query(client, admin, query):
    response = client.get(ENGINEERS, query_string=query, headers=admin)
    assert response.status_code == 422
    assert set(query) <= set(response.get_json()["errors"])


def test_list_filters_by_team_and_active(client, admin):
    a = create(client, admin, code="A1", team="五华装维一班")
    b = create(client, admin, code="B1", team="盘龙装维二班")
    c = create(client, admin, code="A2", team="五华装维一班")
    assert client.patch(f"{ENGINEERS}/{c['id']}", json={"active": False}, headers=admin).status_code == 200

    team = client.get(ENGINEERS, query_string={"team": "五华装维一班"}, headers=admin).get_json()
    assert [e["code"] for e in team["items"]] == ["A1", "A2"]
    assert team["total"] == 2
    active = client.get(ENGINEERS, query_string={"active": "true"}, headers=admin).get_json()
    assert sorted(e["id"] for e in active["items"]) == sorted([a["id"], b["id"]])
    inactive = client.get(ENGINEERS, query_string={"active": "false"}, headers=admin).get_json()
    assert [e["id"] for e in inactive["items"]] == [c["id"]]
    both = client.get(
        ENGINEERS, query_string={"team": "五华装维一班", "active": "true"}, headers=admin
    ).get_json()
    assert [e["id"] for e in both["items"]] == [a["id"]]
    assert both["total"] == 1
    nobody = client.get(ENGINEERS, query_string={"team": "no such team"}, headers=admin).get_json()
    assert (nobody["items"], nobody["total"]) == ([], 0)


def test_get_unknown_engineer_is_404(client, admin):
    response = client.get(f"{ENGINEERS}/999999", headers=admin)
    assert response.status_code == 404
    assert response.get_json()["code"] == 404


# --- PATCH ----------------------------------------------------------------------------------------------


def test_patch_name_only_keeps_everything_else(client, admin, clock):
    before = create(client, admin)
    clock.advance(hours=1)
    response = client.patch(f"{ENGINEERS}/{before['id']}", json={"name": "李四(组长)"}, headers=admin)
    assert response.status_code == 200, response.get_json()
    after = response.get_json()
    assert after["name"] == "李四(组长)"
    assert after["updated_at"] == "2026-11-25T10:00:00+08:00"
    unchanged = {k: v for k, v in before.items() if k not in ("name", "updated_at")}
    assert {k: after[k] for k in unchanged} == unchanged
    assert client.get(f"{ENGINEERS}/{before['id']}", headers=admin).get_json() == after


def test_patch_replaces_skills_districts_and_shifts(client, admin):
    engineer = create(client, admin)
    new_shifts = [{"weekday": 6, "start": "09:00", "end": "18:00"}]
    response = client.patch(
        f"{ENGINEERS}/{engineer['id']}",
        json={"skills": ["iptv_install"], "districts": ["呈贡区"], "shifts": new_shifts},
        headers=admin,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["skills"] == ["iptv_install"]
    assert body["districts"] == ["呈贡区"]
    assert body["shifts"] == new_shifts
    assert body["phone"] == engineer["phone"]
    assert client.get(f"{ENGINEERS}/{engineer['id']}", headers=admin).get_json() == body


def test_patch_phone_team_home_and_active(client, admin):
    engineer = create(client, admin)
    response = client.patch(
        f"{ENGINEERS}/{engineer['id']}",
        json={
            "phone": "13700001111",
            "team": "官渡装维三班",
            "home": None,
            "active": False,
            "daily_capacity": 3,
        },
        headers=admin,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["phone"] == "+8613700001111"
    assert body["team"] == "官渡装维三班"
    assert body["home"] is None
    assert body["active"] is False
    assert body["daily_capacity"] == 3
    assert body["shifts"] == engineer["shifts"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"districts": ["火星区"]}, "districts"),
        ({"skills": ["plumbing"]}, "skills"),
        ({"phone": "555"}, "phone"),
        ({"shifts": [{"weekday": 8, "start": "08:00", "end": "20:00"}]}, "shifts"),
        ({"shifts": [{"weekday": 2, "start": "18:00", "end": "09:00"}]}, "shifts"),
        ({"shifts": [{"weekday": 2}]}, "shifts"),
        ({"shifts": [{"weekday": 2, "start": "09:00"}]}, "shifts"),
        ({"home": {"lat": 25.0}}, "home"),
        ({"name": ""}, "name"),
        ({"active": "sometimes"}, "active"),
    ],
)
def test_patch_rejects_invalid_fields_and_changes_nothing(client, admin, patch, field):
    engineer = create(client, admin)
    response = client.patch(f"{ENGINEERS}/{engineer['id']}", json=patch, headers=admin)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]
    assert client.get(f"{ENGINEERS}/{engineer['id']}", headers=admin).get_json() == engineer


def test_patch_to_a_code_already_taken_is_409(client, admin):
    create(client, admin, code="TAKEN")
    other = create(client, admin, code="OTHER")
    response = client.patch(f"{ENGINEERS}/{other['id']}", json={"code": "TAKEN"}, headers=admin)
    assert response.status_code == 409
    assert client.get(f"{ENGINEERS}/{other['id']}", headers=admin).get_json()["code"] == "OTHER"


def test_patch_unknown_engineer_is_404(client, admin):
    response = client.patch(f"{ENGINEERS}/999999", json={"name": "x"}, headers=admin)
    assert response.status_code == 404


# --- roles ----------------------------------------------------------------------------------------------


def test_dispatcher_may_read_but_not_write(client, admin, desk):
    engineer = create(client, admin)
    listing = client.get(ENGINEERS, headers=desk)
    assert listing.status_code == 200
    assert [e["id"] for e in listing.get_json()["items"]] == [engineer["id"]]
    assert client.get(f"{ENGINEERS}/{engineer['id']}", headers=desk).get_json() == engineer

    post = client.post(ENGINEERS, json=full_body(code="BY-DESK"), headers=desk)
    assert post.status_code == 403
    assert post.get_json()["code"] == 403
    patch = client.patch(f"{ENGINEERS}/{engineer['id']}", json={"name": "篡改"}, headers=desk)
    assert patch.status_code == 403
    assert client.get(f"{ENGINEERS}/{engineer['id']}", headers=admin).get_json() == engineer
    assert count(client, admin) == 1


@pytest.mark.parametrize("role", ["manager", "acceptance"])
def test_other_desk_roles_may_not_write(client, token, admin, role):
    engineer = create(client, admin)
    headers = bearer(token(role))
    assert client.post(ENGINEERS, json=full_body(code="X-1"), headers=headers).status_code == 403
    assert (
        client.patch(f"{ENGINEERS}/{engineer['id']}", json={"name": "x"}, headers=headers).status_code == 403
    )
    assert count(client, admin) == 1


def test_engineers_need_credentials(client):
    assert client.get(ENGINEERS).status_code == 401
    assert client.post(ENGINEERS, json=full_body()).status_code == 401


def test_inactive_engineer_is_refused_for_assignment(client, admin, desk, make_order):
    engineer = create(client, admin)
    assert (
        client.patch(f"{ENGINEERS}/{engineer['id']}", json={"active": False}, headers=admin).status_code
        == 200
    )
    order = make_order()
    response = client.post(
        f"/api/v1/orders/{order.id}/assign", json={"engineer_id": engineer["id"]}, headers=desk
    )
    assert response.status_code == 409


# --- hostile input: 4xx, never a database error -------------------------------------------------------


@pytest.mark.parametrize("engineer_id", [2**31, 2**63])
def test_out_of_range_engineer_id_is_404(client, admin, engineer_id):
    assert client.get(f"{ENGINEERS}/{engineer_id}", headers=admin).status_code == 404
    assert client.patch(f"{ENGINEERS}/{engineer_id}", json={"name": "x"}, headers=admin).status_code == 404


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "李\u0000四"}, "name"),
        ({"team": "班\u0000组"}, "team"),
        ({"districts": ["五华\u0000区"]}, "districts"),
        ({"code": "KM-1\n"}, "code"),
    ],
)
def test_create_refuses_nul_characters_and_trailing_newlines(client, admin, overrides, field):
    response = client.post(ENGINEERS, json=full_body(**overrides), headers=admin)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert count(client, admin) == 0


def test_list_refuses_nul_in_team_filter(client, admin):
    response = client.get(ENGINEERS, query_string={"team": "a\u0000"}, headers=admin)
    assert response.status_code == 422
    assert "team" in response.get_json()["errors"]
