"""The dispatcher's order API (CONTRACT §5 "Orders"): lists, detail, assignment, desk transitions."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import pytest

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.clock import utcnow
from dispatch.extensions import db
from dispatch.models import Attachment, Order
from tests.conftest import bearer

ORDERS = "/api/v1/orders"


@pytest.fixture
def desk(token: Any) -> dict[str, str]:
    """Headers of a dispatcher."""
    return bearer(token("dispatcher"))


def detail(client: Any, headers: dict[str, str], order_id: int) -> dict[str, Any]:
    response = client.get(f"{ORDERS}/{order_id}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def snapshot(client: Any, headers: dict[str, str], order_id: int) -> tuple[str, int, int]:
    """What a rejected request must leave alone: status, version, number of events."""
    body = detail(client, headers, order_id)
    return body["status"], body["version"], len(body["events"])


def assign(client: Any, headers: dict[str, str], order_id: int, engineer_id: int) -> Any:
    return client.post(f"{ORDERS}/{order_id}/assign", json={"engineer_id": engineer_id}, headers=headers)


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.get_json()
    return [item["id"] for item in response.get_json()["items"]]


def engineer_actor(engineer: Any, user: Any) -> Actor:
    return Actor(
        kind="user",
        id=user.id,
        name=user.username,
        role="engineer",
        engineer_id=engineer.id,
        source="mobile",
    )


def drive_to_pending_acceptance(order_id: int, engineer: Any, user: Any) -> None:
    """Take → appoint → check in → resources + ID photo → submit, as the engineer's PDA would."""
    actor = engineer_actor(engineer, user)
    order = db.session.get(Order, order_id)
    assert order is not None and order.status == "dispatched"
    now = utcnow()
    window = {"start": now + timedelta(hours=2), "end": now + timedelta(hours=4)}
    workflow.apply(order, "take", actor, now=now)
    workflow.apply(order, "appoint", actor, now=now, params={"appointment": window})
    workflow.apply(order, "check_in", actor, now=now)
    order.box_id, order.port = "KM-WH-0012", "7"
    db.session.add(
        Attachment(
            order_id=order.id,
            kind="id_card",
            sha256="a" * 64,
            content_type="image/jpeg",
            size_bytes=1024,
            storage_path="aa/" + "a" * 64,
            uploaded_by=user.id,
            created_at=now,
        )
    )
    db.session.flush()
    workflow.apply(order, "submit", actor, now=now, attachment_kinds=frozenset({"id_card"}))
    db.session.commit()


@pytest.fixture
def pending_order(
    client: Any, desk: dict[str, str], make_order: Any, make_engineer: Any, make_user: Any
) -> int:
    """An install-then-pay order waiting at the acceptance desk."""
    engineer = make_engineer()
    user = make_user("engineer", engineer=engineer)
    order = make_order()
    assert assign(client, desk, order.id, engineer.id).status_code == 200
    drive_to_pending_acceptance(order.id, engineer, user)
    assert detail(client, desk, order.id)["status"] == "pending_acceptance"
    return int(order.id)


# --- GET /orders ----------------------------------------------------------------------------------------


def test_list_is_newest_first_with_total(client, desk, make_order, clock):
    created = []
    for _ in range(3):
        created.append(make_order().id)
        clock.advance(minutes=1)
    response = client.get(ORDERS, headers=desk)
    assert ids(response) == list(reversed(created))
    body = response.get_json()
    assert body["total"] == 3
    assert body["page"] == 1
    assert body["page_size"] == 50


def test_list_paginates_without_overlap(client, desk, make_order, clock):
    created = []
    for _ in range(5):
        created.append(make_order().id)
        clock.advance(seconds=30)
    pages = []
    for page in (1, 2, 3):
        response = client.get(ORDERS, query_string={"page": page, "page_size": 2}, headers=desk)
        assert response.get_json()["total"] == 5
        assert response.get_json()["page"] == page
        assert response.get_json()["page_size"] == 2
        pages.append(ids(response))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == list(reversed(created))
    beyond = client.get(ORDERS, query_string={"page": 4, "page_size": 2}, headers=desk)
    assert ids(beyond) == []
    assert beyond.get_json()["total"] == 5


def test_list_accepts_page_size_200(client, desk, make_order):
    make_order()
    response = client.get(ORDERS, query_string={"page_size": 200}, headers=desk)
    assert response.status_code == 200
    assert response.get_json()["page_size"] == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"page_size": 201}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"page": 0}, "page"),
        ({"page": "abc"}, "page"),
        ({"status": "open"}, "status"),
        ({"status": "new,bogus"}, "status"),
        ({"order_type": "fax_install"}, "order_type"),
        ({"engineer_id": "seven"}, "engineer_id"),
    ],
)
def test_list_rejects_bad_query_with_field_errors(client, desk, query, field):
    response = client.get(ORDERS, query_string=query, headers=desk)
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == 422
    assert body["message"]
    assert field in body["errors"]


def test_list_filters_by_single_status_and_status_list(client, desk, make_order, make_engineer):
    engineer = make_engineer()
    fresh, dispatched, cancelled = make_order(), make_order(), make_order()
    assert assign(client, desk, dispatched.id, engineer.id).status_code == 200
    assert (
        client.post(f"{ORDERS}/{cancelled.id}/cancel", json={"reason": "dup"}, headers=desk).status_code
        == 200
    )

    assert ids(client.get(ORDERS, query_string={"status": "new"}, headers=desk)) == [fresh.id]
    assert ids(client.get(ORDERS, query_string={"status": "dispatched"}, headers=desk)) == [dispatched.id]
    both = client.get(ORDERS, query_string={"status": "new,cancelled"}, headers=desk)
    assert sorted(ids(both)) == sorted([fresh.id, cancelled.id])
    assert both.get_json()["total"] == 2
    assert ids(client.get(ORDERS, query_string={"status": "completed"}, headers=desk)) == []


def test_list_filters_by_order_type(client, desk, make_order):
    repair = make_order(order_type="repair", pay_mode="prepaid")
    make_order(order_type="broadband_install")
    response = client.get(ORDERS, query_string={"order_type": "repair"}, headers=desk)
    assert ids(response) == [repair.id]
    assert response.get_json()["items"][0]["order_type"] == "repair"


def test_list_filters_by_district(client, desk, make_order):
    make_order()  # 五华区
    panlong = make_order(
        address={"text": "昆明市盘龙区北京路100号", "district": "盘龙区", "lat": 25.07, "lng": 102.75}
    )
    response = client.get(ORDERS, query_string={"district": "盘龙区"}, headers=desk)
    assert ids(response) == [panlong.id]
    assert response.get_json()["items"][0]["address"]["district"] == "盘龙区"
    assert ids(client.get(ORDERS, query_string={"district": "呈贡区"}, headers=desk)) == []


def test_list_filters_by_engineer(client, desk, make_order, make_engineer):
    first, second = make_engineer(), make_engineer()
    a, b = make_order(), make_order()
    make_order()
    assert assign(client, desk, a.id, first.id).status_code == 200
    assert assign(client, desk, b.id, second.id).status_code == 200
    response = client.get(ORDERS, query_string={"engineer_id": first.id}, headers=desk)
    assert ids(response) == [a.id]
    assert response.get_json()["items"][0]["engineer"]["id"] == first.id


def test_list_filters_by_external_id(client, desk, make_order):
    wanted = make_order()
    make_order()
    response = client.get(ORDERS, query_string={"external_id": wanted.external_id}, headers=desk)
    assert ids(response) == [wanted.id]
    assert response.get_json()["total"] == 1
    assert ids(client.get(ORDERS, query_string={"external_id": "10000-nope"}, headers=desk)) == []


def test_list_requires_credentials(client):
    response = client.get(ORDERS)
    assert response.status_code == 401
    assert response.get_json()["code"] == 401


# --- GET /orders/{id} -----------------------------------------------------------------------------------


def test_detail_has_timeline_clocks_notifications_and_actions(
    client, token, make_user, make_order, make_engineer, clock
):
    dispatcher = make_user("dispatcher")
    headers = bearer(token(user=dispatcher))
    order = make_order()
    engineer = make_engineer()
    clock.advance(minutes=5)
    assert assign(client, headers, order.id, engineer.id).status_code == 200

    body = detail(client, headers, order.id)
    assert body["id"] == order.id
    assert body["external_id"] == order.external_id
    assert body["status"] == "dispatched"
    assert body["created_at"] == "2026-11-25T09:00:00+08:00"
    assert body["updated_at"] == "2026-11-25T09:05:00+08:00"
    intake, assigned = body["events"]
    assert intake["action"] == "intake"
    assert (intake["from_status"], intake["to_status"]) == (None, "new")
    assert (intake["actor_type"], intake["actor_name"], intake["source"]) == ("api_key", "hotline", "intake")
    assert intake["occurred_at"] == "2026-11-25T09:00:00+08:00"
    assert assigned["action"] == "assign"
    assert (assigned["from_status"], assigned["to_status"]) == ("new", "dispatched")
    assert assigned["actor_type"] == "user"
    assert assigned["actor_id"] == dispatcher.id
    assert assigned["actor_name"] == dispatcher.username
    assert assigned["source"] == "api"
    assert assigned["occurred_at"] == "2026-11-25T09:05:00+08:00"
    assert isinstance(body["sla"], list)
    for item in body["sla"]:
        assert {"clock", "status", "started_at", "due_at", "stopped_at", "breached_at"} <= set(item)
        assert item["started_at"].endswith("+08:00")
    assert isinstance(body["notifications"], list)
    assert set(body["allowed_actions"]) == {"reassign", "suspend", "cancel"}


def test_detail_of_new_order_offers_assign_suspend_cancel(client, desk, make_order):
    body = detail(client, desk, make_order().id)
    assert body["status"] == "new"
    assert body["engineer"] is None
    assert body["appointment"] is None
    assert body["version"] == 1
    assert set(body["allowed_actions"]) == {"assign", "suspend", "cancel"}


def test_detail_of_unknown_order_is_404_json(client, desk):
    response = client.get(f"{ORDERS}/999999", headers=desk)
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["code"] == 404
    assert response.get_json()["message"]


# --- POST /orders/{id}/assign ---------------------------------------------------------------------------


def test_assign_dispatches_to_the_engineer_without_warnings(client, desk, make_order, make_engineer):
    order = make_order()
    engineer = make_engineer()
    response = assign(client, desk, order.id, engineer.id)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "dispatched"
    assert body["engineer"] == {"id": engineer.id, "code": engineer.code, "name": engineer.name}
    assert body["warnings"] == []
    assert body["version"] == 2
    event = detail(client, desk, order.id)["events"][-1]
    assert event["action"] == "assign"
    assert event["payload"]["engineer_id"] == engineer.id
    assert event["payload"]["previous_engineer_id"] is None
    assert event["payload"]["warnings"] == []


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"skills": ["repair"]}, "skill"),
        ({"districts": ["盘龙区"]}, "district"),
        # The order's requested window is Thursday 2026-11-26 09:00–12:00; this engineer works Mondays only.
        ({"shifts": [{"weekday": 1, "start": time(8, 0), "end": time(20, 0)}]}, "off_shift"),
        # Thursday, but only in the evening.
        ({"shifts": [{"weekday": 4, "start": time(14, 0), "end": time(22, 0)}]}, "off_shift"),
        ({"daily_capacity": 0}, "capacity"),
    ],
)
def test_assign_honours_manual_choice_and_warns_of_each_broken_rule(
    client, desk, make_order, make_engineer, overrides, code
):
    order = make_order()
    engineer = make_engineer(**overrides)
    response = assign(client, desk, order.id, engineer.id)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "dispatched"
    assert body["engineer"]["id"] == engineer.id
    assert [w["code"] for w in body["warnings"]] == [code]
    assert all(w["message"] for w in body["warnings"])
    event = detail(client, desk, order.id)["events"][-1]
    assert event["payload"]["warnings"] == [code]


def test_assign_reports_every_broken_rule_at_once(client, desk, make_order, make_engineer):
    order = make_order()
    engineer = make_engineer(
        skills=["repair"],
        districts=["西山区"],
        shifts=[{"weekday": 7, "start": time(8, 0), "end": time(12, 0)}],
        daily_capacity=0,
    )
    body = assign(client, desk, order.id, engineer.id).get_json()
    assert body["status"] == "dispatched"
    assert sorted(w["code"] for w in body["warnings"]) == ["capacity", "district", "off_shift", "skill"]
    payload = detail(client, desk, order.id)["events"][-1]["payload"]
    assert sorted(payload["warnings"]) == ["capacity", "district", "off_shift", "skill"]


def test_assign_warns_of_capacity_when_the_day_is_full(client, desk, make_order, make_engineer):
    engineer = make_engineer(daily_capacity=1)
    first, second = make_order(), make_order()  # both requested for the same day
    assert assign(client, desk, first.id, engineer.id).get_json()["warnings"] == []
    body = assign(client, desk, second.id, engineer.id).get_json()
    assert [w["code"] for w in body["warnings"]] == ["capacity"]
    other_day = make_order(
        requested_window={"start": "2026-11-27T09:00:00+08:00", "end": "2026-11-27T12:00:00+08:00"}
    )
    assert assign(client, desk, other_day.id, engineer.id).get_json()["warnings"] == []


def test_assign_to_inactive_engineer_is_409_and_changes_nothing(client, desk, make_order, make_engineer):
    order = make_order()
    engineer = make_engineer(active=False)
    before = snapshot(client, desk, order.id)
    response = assign(client, desk, order.id, engineer.id)
    assert response.status_code == 409
    assert response.get_json()["code"] == 409
    assert snapshot(client, desk, order.id) == before
    assert detail(client, desk, order.id)["engineer"] is None


def test_assign_to_unknown_engineer_is_422(client, desk, make_order):
    order = make_order()
    before = snapshot(client, desk, order.id)
    response = assign(client, desk, order.id, 999999)
    assert response.status_code == 422
    assert "engineer_id" in response.get_json()["errors"]
    assert snapshot(client, desk, order.id) == before


@pytest.mark.parametrize("body", [{}, {"auto": False}, {"engineer_id": 0}, {"engineer_id": "seven"}])
def test_assign_without_a_valid_choice_is_422(client, desk, make_order, body):
    order = make_order()
    before = snapshot(client, desk, order.id)
    response = client.post(f"{ORDERS}/{order.id}/assign", json=body, headers=desk)
    assert response.status_code == 422
    assert response.get_json()["errors"]
    assert snapshot(client, desk, order.id) == before


def test_assign_unknown_order_is_404(client, desk, make_engineer):
    response = assign(client, desk, 999999, make_engineer().id)
    assert response.status_code == 404


def test_reassign_records_the_previous_engineer(client, desk, make_order, make_engineer):
    order = make_order()
    first, second = make_engineer(), make_engineer()
    assert assign(client, desk, order.id, first.id).status_code == 200
    response = assign(client, desk, order.id, second.id)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "dispatched"
    assert body["engineer"]["id"] == second.id
    assert body["version"] == 3
    event = detail(client, desk, order.id)["events"][-1]
    assert event["action"] == "reassign"
    assert (event["from_status"], event["to_status"]) == ("dispatched", "dispatched")
    assert event["payload"]["previous_engineer_id"] == first.id
    assert event["payload"]["engineer_id"] == second.id


def test_assign_on_a_cancelled_order_is_409_with_status(client, desk, make_order, make_engineer):
    order = make_order()
    assert client.post(f"{ORDERS}/{order.id}/cancel", json={"reason": "x"}, headers=desk).status_code == 200
    before = snapshot(client, desk, order.id)
    response = assign(client, desk, order.id, make_engineer().id)
    assert response.status_code == 409
    assert response.get_json()["status"] == "cancelled"
    assert snapshot(client, desk, order.id) == before


def test_manager_may_read_but_not_assign(client, token, make_order, make_engineer):
    manager = bearer(token("manager"))
    order = make_order()
    assert client.get(f"{ORDERS}/{order.id}", headers=manager).status_code == 200
    response = assign(client, manager, order.id, make_engineer().id)
    assert response.status_code == 403
    assert detail(client, manager, order.id)["status"] == "new"


# --- cancel / suspend / resume --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": None}])
def test_cancel_needs_a_reason(client, desk, make_order, body):
    order = make_order()
    before = snapshot(client, desk, order.id)
    response = client.post(f"{ORDERS}/{order.id}/cancel", json=body, headers=desk)
    assert response.status_code == 422
    assert "reason" in response.get_json()["errors"]
    assert snapshot(client, desk, order.id) == before


def test_cancel_then_cancel_again_is_409_with_status(client, desk, make_order):
    order = make_order()
    response = client.post(f"{ORDERS}/{order.id}/cancel", json={"reason": "客户撤销"}, headers=desk)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "cancelled"
    assert body["cancel_reason"] == "客户撤销"
    assert body["version"] == 2
    event = detail(client, desk, order.id)["events"][-1]
    assert (event["action"], event["from_status"], event["to_status"]) == ("cancel", "new", "cancelled")
    assert event["payload"]["reason"] == "客户撤销"

    before = snapshot(client, desk, order.id)
    again = client.post(f"{ORDERS}/{order.id}/cancel", json={"reason": "again"}, headers=desk)
    assert again.status_code == 409
    assert again.get_json()["code"] == 409
    assert again.get_json()["status"] == "cancelled"
    assert snapshot(client, desk, order.id) == before


def test_suspend_until_then_resume_returns_to_previous_status(client, desk, make_order, make_engineer):
    order = make_order()
    engineer = make_engineer()
    assert assign(client, desk, order.id, engineer.id).status_code == 200
    response = client.post(
        f"{ORDERS}/{order.id}/suspend",
        json={"reason_code": "customer_postponed", "note": "客户出差", "until": "2026-11-28T09:00:00+08:00"},
        headers=desk,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "suspended"
    assert body["suspend_reason"] == "customer_postponed"
    assert body["suspended_until"] == "2026-11-28T09:00:00+08:00"
    assert body["version"] == 3
    assert set(detail(client, desk, order.id)["allowed_actions"]) == {"resume", "cancel"}

    resumed = client.post(f"{ORDERS}/{order.id}/resume", json={"note": "客户回来了"}, headers=desk)
    assert resumed.status_code == 200, resumed.get_json()
    body = resumed.get_json()
    assert body["status"] == "dispatched"
    assert body["engineer"]["id"] == engineer.id
    assert body["suspend_reason"] is None
    assert body["suspended_until"] is None
    assert body["version"] == 4
    events = detail(client, desk, order.id)["events"]
    assert [(e["action"], e["from_status"], e["to_status"]) for e in events[-2:]] == [
        ("suspend", "dispatched", "suspended"),
        ("resume", "suspended", "dispatched"),
    ]


def test_suspend_without_until_and_resume_from_new(client, desk, make_order):
    order = make_order()
    response = client.post(f"{ORDERS}/{order.id}/suspend", json={"reason_code": "no_resource"}, headers=desk)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["suspended_until"] is None
    resumed = client.post(f"{ORDERS}/{order.id}/resume", json={}, headers=desk)
    assert resumed.status_code == 200
    assert resumed.get_json()["status"] == "new"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason_code": "customer_unavailable", "until": "2026-11-25T08:59:00+08:00"}, "until"),
        ({"reason_code": "customer_unavailable", "until": "2026-11-25T09:00:00+08:00"}, "until"),
        ({"reason_code": "customer_unavailable", "until": "2026-11-28T09:00:00"}, "until"),
        ({"reason_code": "on_holiday"}, "reason_code"),
        ({"note": "no reason"}, "reason_code"),
    ],
)
def test_suspend_rejects_bad_input(client, desk, make_order, body, field):
    order = make_order()
    before = snapshot(client, desk, order.id)
    response = client.post(f"{ORDERS}/{order.id}/suspend", json=body, headers=desk)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert snapshot(client, desk, order.id) == before


def test_suspend_twice_is_409_and_resume_when_not_suspended_is_409(client, desk, make_order):
    order = make_order()
    before = snapshot(client, desk, order.id)
    not_suspended = client.post(f"{ORDERS}/{order.id}/resume", json={}, headers=desk)
    assert not_suspended.status_code == 409
    assert not_suspended.get_json()["status"] == "new"
    assert snapshot(client, desk, order.id) == before

    assert (
        client.post(
            f"{ORDERS}/{order.id}/suspend", json={"reason_code": "third_party"}, headers=desk
        ).status_code
        == 200
    )
    before = snapshot(client, desk, order.id)
    twice = client.post(f"{ORDERS}/{order.id}/suspend", json={"reason_code": "third_party"}, headers=desk)
    assert twice.status_code == 409
    assert twice.get_json()["status"] == "suspended"
    assert snapshot(client, desk, order.id) == before


def test_cancel_a_suspended_order(client, desk, make_order):
    order = make_order()
    client.post(f"{ORDERS}/{order.id}/suspend", json={"reason_code": "force_majeure"}, headers=desk)
    response = client.post(f"{ORDERS}/{order.id}/cancel", json={"reason": "台风"}, headers=desk)
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"


def test_version_increases_by_one_per_transition(client, desk, make_order, make_engineer):
    order = make_order()
    engineer = make_engineer()
    versions = [detail(client, desk, order.id)["version"]]
    steps = [
        ("assign", {"engineer_id": engineer.id}),
        ("suspend", {"reason_code": "customer_unavailable"}),
        ("resume", {}),
        ("assign", {"engineer_id": make_engineer().id}),
        ("cancel", {"reason": "客户撤销"}),
    ]
    for action, body in steps:
        response = client.post(f"{ORDERS}/{order.id}/{action}", json=body, headers=desk)
        assert response.status_code == 200, (action, response.get_json())
        versions.append(response.get_json()["version"])
    assert versions == [1, 2, 3, 4, 5, 6]
    events = detail(client, desk, order.id)["events"]
    assert [e["action"] for e in events] == ["intake", "assign", "suspend", "resume", "reassign", "cancel"]


# --- acceptance desk ------------------------------------------------------------------------------------


def test_acceptance_approve_moves_to_in_progress(client, token, pending_order):
    headers = bearer(token("acceptance"))
    before = detail(client, headers, pending_order)
    response = client.post(
        f"{ORDERS}/{pending_order}/acceptance",
        json={"decision": "approve", "note": "资料齐全"},
        headers=headers,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "in_progress"
    assert body["version"] == before["version"] + 1
    event = detail(client, headers, pending_order)["events"][-1]
    assert (event["action"], event["from_status"], event["to_status"]) == (
        "approve",
        "pending_acceptance",
        "in_progress",
    )
    assert event["payload"]["note"] == "资料齐全"


def test_acceptance_reject_sends_the_order_back_on_site(client, desk, pending_order):
    response = client.post(
        f"{ORDERS}/{pending_order}/acceptance",
        json={"decision": "reject", "note": "身份证照片模糊"},
        headers=desk,
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "on_site"
    event = detail(client, desk, pending_order)["events"][-1]
    assert (event["action"], event["to_status"]) == ("reject", "on_site")


def test_acceptance_on_an_order_not_pending_is_409_with_status(client, desk, make_order):
    order = make_order()
    before = snapshot(client, desk, order.id)
    for decision in ("approve", "reject"):
        response = client.post(f"{ORDERS}/{order.id}/acceptance", json={"decision": decision}, headers=desk)
        assert response.status_code == 409
        assert response.get_json()["status"] == "new"
    assert snapshot(client, desk, order.id) == before


def test_acceptance_twice_is_409_after_the_first_decision(client, desk, pending_order):
    first = client.post(f"{ORDERS}/{pending_order}/acceptance", json={"decision": "approve"}, headers=desk)
    assert first.status_code == 200
    before = snapshot(client, desk, pending_order)
    second = client.post(f"{ORDERS}/{pending_order}/acceptance", json={"decision": "reject"}, headers=desk)
    assert second.status_code == 409
    assert second.get_json()["status"] == "in_progress"
    assert snapshot(client, desk, pending_order) == before


@pytest.mark.parametrize("body", [{"decision": "maybe"}, {}, {"decision": None}])
def test_acceptance_with_bad_decision_is_422(client, desk, pending_order, body):
    before = snapshot(client, desk, pending_order)
    response = client.post(f"{ORDERS}/{pending_order}/acceptance", json=body, headers=desk)
    assert response.status_code == 422
    assert "decision" in response.get_json()["errors"]
    assert snapshot(client, desk, pending_order) == before


def test_manager_may_not_decide_acceptance(client, token, desk, pending_order):
    before = snapshot(client, desk, pending_order)
    response = client.post(
        f"{ORDERS}/{pending_order}/acceptance", json={"decision": "approve"}, headers=bearer(token("manager"))
    )
    assert response.status_code == 403
    assert snapshot(client, desk, pending_order) == before


def test_pending_order_detail_lists_submission_timeline(client, desk, pending_order):
    body = detail(client, desk, pending_order)
    assert [e["action"] for e in body["events"]] == [
        "intake",
        "assign",
        "take",
        "appoint",
        "check_in",
        "submit",
    ]
    submit = body["events"][-1]
    assert submit["source"] == "mobile"
    assert submit["actor_type"] == "user"
    assert body["resources"]["box_id"] == "KM-WH-0012"
    assert body["appointment"] == {"start": "2026-11-25T11:00:00+08:00", "end": "2026-11-25T13:00:00+08:00"}
    assert set(body["allowed_actions"]) >= {"approve", "reject", "cancel"}


# --- hostile input: 4xx, never a database error -------------------------------------------------------


@pytest.mark.parametrize("order_id", [2**31, 2**63])
def test_out_of_range_order_id_is_404(client, desk, make_engineer, order_id):
    assert client.get(f"{ORDERS}/{order_id}", headers=desk).status_code == 404
    assert assign(client, desk, order_id, make_engineer().id).status_code == 404
    cancel = client.post(f"{ORDERS}/{order_id}/cancel", json={"reason": "x"}, headers=desk)
    assert cancel.status_code == 404


@pytest.mark.parametrize("engineer_id", [2**31, 2**63])
def test_out_of_range_engineer_id_is_422(client, desk, make_order, engineer_id):
    order = make_order()
    before = snapshot(client, desk, order.id)
    response = assign(client, desk, order.id, engineer_id)
    assert response.status_code == 422
    assert "engineer_id" in response.get_json()["errors"]
    listing = client.get(ORDERS, query_string={"engineer_id": engineer_id}, headers=desk)
    assert listing.status_code == 422
    assert snapshot(client, desk, order.id) == before


def test_nul_characters_are_refused(client, desk, make_order):
    order = make_order()
    before = snapshot(client, desk, order.id)
    response = client.post(f"{ORDERS}/{order.id}/cancel", json={"reason": "a\u0000b"}, headers=desk)
    assert response.status_code == 422
    assert "reason" in response.get_json()["errors"]
    assert snapshot(client, desk, order.id) == before
    listing = client.get(ORDERS, query_string={"district": "五华\u0000区"}, headers=desk)
    assert listing.status_code == 422
    assert "district" in listing.get_json()["errors"]


@pytest.mark.parametrize("until", ["9999-12-31T23:59:00+00:00", "0001-01-01T00:00:00+05:00"])
def test_suspend_until_at_the_edge_of_time_is_422(client, desk, make_order, until):
    order = make_order()
    before = snapshot(client, desk, order.id)
    response = client.post(
        f"{ORDERS}/{order.id}/suspend", json={"reason_code": "no_resource", "until": until}, headers=desk
    )
    assert response.status_code == 422
    assert "until" in response.get_json()["errors"]
    assert snapshot(client, desk, order.id) == before
