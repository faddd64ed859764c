"""The engineer's visit over /mobile/v1: every field endpoint, object-level access, device time, idempotent
replays and an offline PDA replaying its queue out of order."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch.actors import Actor
from dispatch.clock import utcnow
from dispatch.extensions import db
from dispatch.models import Attachment, Engineer, Order, OrderEvent, OutboxMessage, SlaClock
from dispatch.services.dispatching import assign_order
from tests.conftest import bearer

DISPATCHER = Actor(kind="user", id=901, name="调度员", role="dispatcher")
SITE = (25.0423, 102.7065)  # the intake payload's address
WINDOW = {"start": "2026-11-26T09:00:00+08:00", "end": "2026-11-26T12:00:00+08:00"}
_keys = count(1)


# --- helpers ------------------------------------------------------------------------------------------


def iso(when: datetime) -> str:
    return when.isoformat()


def events(order_id: int) -> list[OrderEvent]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            sa.select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
        )
    )


def actions(order_id: int) -> list[str]:
    return [e.action for e in events(order_id)]


def order_row(order_id: int) -> Order:
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    assert order is not None
    return order


def clock_row(order_id: int, clock: str) -> SlaClock:
    db.session.expire_all()
    row = db.session.scalars(
        sa.select(SlaClock)
        .where(SlaClock.order_id == order_id, SlaClock.clock == clock)
        .order_by(SlaClock.id)
    ).first()
    assert row is not None, clock
    return row


def attach(order_id: int, *kinds: str) -> None:
    """Attachment rows as the upload endpoint leaves them (the upload itself: test_attachments.py)."""
    for kind in kinds:
        sha = hashlib.sha256(f"{order_id}-{kind}".encode()).hexdigest()
        db.session.add(
            Attachment(
                order_id=order_id,
                kind=kind,
                sha256=sha,
                content_type="image/jpeg",
                size_bytes=1000,
                storage_path=f"{sha[:2]}/{sha}",
                uploaded_by=None,
                created_at=utcnow(),
            )
        )
    db.session.commit()


class Pda:
    """One engineer's PDA: its token, and the calls the app makes."""

    def __init__(self, client: Any, engineer: Engineer, token: str) -> None:
        self.client, self.engineer = client, engineer
        self.headers = {**bearer(token), "X-Device-Id": "pda-1"}

    def call(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Any:
        headers = dict(self.headers)
        if key:
            headers["Idempotency-Key"] = key
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        return self.client.open(f"/mobile/v1{path}", method=method, **kwargs)

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, {} if body is None else body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Any:
        return self.call("PUT", path, body, **kw)


@pytest.fixture
def pda(client, token, make_engineer):
    def factory() -> Pda:
        engineer = make_engineer()
        return Pda(client, engineer, token("engineer", engineer=engineer))

    return factory


@pytest.fixture
def me(pda) -> Pda:
    return pda()


@pytest.fixture
def dispatched(make_order, me):
    """An order dispatched to ``me`` (prepaid broadband install unless told otherwise)."""

    def factory(engineer: Engineer | None = None, **overrides: Any) -> int:
        overrides.setdefault("pay_mode", "prepaid")
        order = make_order(**overrides)
        assign_order(order.id, (engineer or me.engineer).id, actor=DISPATCHER)
        return int(order.id)

    return factory


def contact_body(**overrides: Any) -> dict[str, Any]:
    body = {"outcome": "reached", "called_at": iso(utcnow()), "appointment": WINDOW}
    body.update(overrides)
    return body


def check_in_body(lat: float = SITE[0], lng: float = SITE[1], accuracy_m: float = 12) -> dict[str, Any]:
    return {"lat": lat, "lng": lng, "accuracy_m": accuracy_m, "at": iso(utcnow())}


RESOURCES = {
    "box_id": "FBX-0101",
    "port": "7",
    "ont_sn": "ZTEG12345678",
    "loid": "L0001",
    "optical_power_dbm": -18.5,
}


def bring_to(p: Pda, order_id: int, status: str) -> None:
    """Walk the order through the PDA to ``status`` (dispatched → taken → appointed → on_site)."""
    steps = [
        ("taken", lambda: p.post(f"/orders/{order_id}/take")),
        ("appointed", lambda: p.post(f"/orders/{order_id}/contacts", contact_body())),
        ("on_site", lambda: p.post(f"/orders/{order_id}/check-in", check_in_body())),
    ]
    for reached, step in steps:
        if order_row(order_id).status == status:
            return
        response = step()
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["status"] == reached
    assert order_row(order_id).status == status


# --- list and detail ----------------------------------------------------------------------------------


def test_my_orders_lists_only_my_open_orders_soonest_first(me, pda, dispatched):
    other = pda()
    later = dispatched(
        requested_window={"start": "2026-11-27T09:00:00+08:00", "end": "2026-11-27T12:00:00+08:00"}
    )
    sooner = dispatched(
        requested_window={"start": "2026-11-25T15:00:00+08:00", "end": "2026-11-25T17:00:00+08:00"}
    )
    appointed = dispatched(
        requested_window={"start": "2026-11-28T09:00:00+08:00", "end": "2026-11-28T12:00:00+08:00"}
    )
    bring_to(me, appointed, "appointed")  # the appointment (26th) now decides, not the request (28th)
    no_window = dispatched(requested_window=None)  # by when it was received (today, 09:00)
    dispatched(engineer=other.engineer)
    gone = dispatched()
    assert me.post(f"/orders/{gone}/return", {"reason_code": "wrong_address"}).status_code == 200

    response = me.get("/orders")

    assert response.status_code == 200
    body = response.get_json()
    assert [o["id"] for o in body["items"]] == [no_window, sooner, appointed, later]
    assert body["total"] == 4
    first = body["items"][1]
    assert first["customer"]["phone"] and first["address"]["text"] and first["address"]["lat"] == SITE[0]
    assert first["checklist"] == ["resources", "ont_sn", "optical_power", "after_photo", "signature"]
    assert first["missing"] == first["checklist"]
    assert [c["clock"] for c in first["sla"]] == ["completion", "take"]
    assert first["allowed_actions"] == ["take", "return", "suspend"]


def test_order_detail_carries_checklist_and_what_is_missing(me, dispatched):
    order_id = dispatched(order_type="repair")
    response = me.get(f"/orders/{order_id}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == order_id and body["status"] == "dispatched"
    assert body["checklist"] == ["repair_cause", "after_photo"]
    assert body["missing"] == ["repair_cause", "after_photo"]
    assert me.get("/orders/999999").status_code == 404
    assert me.get("/orders/99999999999").status_code == 404


def test_list_pagination_is_bounded(me):
    assert me.get("/orders?page_size=201").status_code == 422
    assert me.get("/orders?page=0").status_code == 422


# --- take and contacts --------------------------------------------------------------------------------


def test_take_starts_the_contact_clock_and_a_second_take_is_409(me, dispatched):
    order_id = dispatched()
    response = me.post(f"/orders/{order_id}/take")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "taken"
    assert clock_row(order_id, "take").status == "met"
    assert clock_row(order_id, "contact").status == "running"

    again = me.post(f"/orders/{order_id}/take")
    assert again.status_code == 409
    assert again.get_json()["status"] == "taken"
    assert actions(order_id).count("take") == 1


def test_take_body_is_validated(me, dispatched):
    order_id = dispatched()
    assert me.post(f"/orders/{order_id}/take", {"at": "yesterday"}).status_code == 422
    assert me.post(f"/orders/{order_id}/take", {"at": "2026-11-25T09:00:00"}).status_code == 422  # naive
    assert me.post(f"/orders/{order_id}/take", {"surprise": 1}).status_code == 422
    assert order_row(order_id).status == "dispatched"


def test_unanswered_calls_are_attempts_and_a_reached_call_appoints(me, dispatched):
    order_id = dispatched()
    assert me.post(f"/orders/{order_id}/contacts", contact_body()).status_code == 409  # not taken yet
    bring_to(me, order_id, "taken")
    for outcome in ("no_answer", "busy", "wrong_number"):
        response = me.post(f"/orders/{order_id}/contacts", {"outcome": outcome, "called_at": iso(utcnow())})
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["status"] == "taken"
    assert clock_row(order_id, "contact").status == "running"

    response = me.post(f"/orders/{order_id}/contacts", contact_body())

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "appointed"
    assert body["appointment"] == WINDOW
    assert clock_row(order_id, "contact").status == "met"
    assert clock_row(order_id, "arrival").status == "running"
    assert actions(order_id)[-4:] == ["contact_attempt"] * 3 + ["appoint"]
    assert events(order_id)[-4].payload["outcome"] == "no_answer"


def test_a_later_reached_call_reschedules_with_a_reason(me, dispatched):
    order_id = dispatched()
    bring_to(me, order_id, "appointed")
    new_window = {"start": "2026-11-27T14:00:00+08:00", "end": "2026-11-27T16:00:00+08:00"}

    missing_reason = me.post(f"/orders/{order_id}/contacts", contact_body(appointment=new_window))
    assert missing_reason.status_code == 422
    assert "reason" in missing_reason.get_json()["errors"]

    response = me.post(
        f"/orders/{order_id}/contacts", contact_body(appointment=new_window, reason="customer")
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["appointment"] == new_window
    assert actions(order_id)[-1] == "reschedule"
    assert events(order_id)[-1].payload["reason"] == "customer"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"outcome": "reached", "called_at": "2026-11-25T09:05:00+08:00"},
            "appointment",
        ),  # reached, no window
        (
            {"outcome": "no_answer", "called_at": "2026-11-25T09:05:00+08:00", "appointment": WINDOW},
            "appointment",
        ),
        ({"outcome": "hung_up", "called_at": "2026-11-25T09:05:00+08:00"}, "outcome"),
        ({"outcome": "busy"}, "called_at"),
        ({**contact_body(), "appointment": {"start": WINDOW["end"], "end": WINDOW["start"]}}, "appointment"),
        ({**contact_body(), "reason": "weather"}, "reason"),
    ],
)
def test_contact_bodies_are_validated_per_field(me, dispatched, body, field):
    order_id = dispatched()
    bring_to(me, order_id, "taken")
    before = actions(order_id)
    response = me.post(f"/orders/{order_id}/contacts", body)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]
    assert actions(order_id) == before


# --- check-in -----------------------------------------------------------------------------------------


def test_check_in_at_the_address_is_inside_the_radius(me, dispatched):
    order_id = dispatched()
    bring_to(me, order_id, "appointed")
    response = me.post(f"/orders/{order_id}/check-in", check_in_body(lat=SITE[0] + 0.001))  # ~111 m north
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "on_site"
    assert 100 < body["check_in"]["distance_m"] < 125
    assert body["check_in"]["inside_radius"] is True
    assert body["check_in"]["poor_accuracy"] is False
    payload = events(order_id)[-1].payload
    assert payload["inside_radius"] is True and payload["poor_accuracy"] is False
    assert payload["distance_m"] == body["check_in"]["distance_m"]
    assert clock_row(order_id, "arrival").status == "met"


def test_check_in_far_away_is_recorded_not_refused(me, dispatched):
    order_id = dispatched()
    bring_to(me, order_id, "appointed")
    response = me.post(f"/orders/{order_id}/check-in", check_in_body(lat=SITE[0] + 0.05))  # ~5.5 km
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "on_site"
    assert body["check_in"]["inside_radius"] is False
    assert 5000 < body["check_in"]["distance_m"] < 6000
    assert events(order_id)[-1].payload["inside_radius"] is False


def test_check_in_radius_and_accuracy_limit_are_configurable(app, me, dispatched):
    order_id = dispatched()
    bring_to(me, order_id, "appointed")
    app.config.update(CHECKIN_RADIUS_M=50, CHECKIN_MAX_ACCURACY_M=20)
    try:
        response = me.post(f"/orders/{order_id}/check-in", check_in_body(lat=SITE[0] + 0.001, accuracy_m=30))
    finally:
        del app.config["CHECKIN_RADIUS_M"], app.config["CHECKIN_MAX_ACCURACY_M"]
    check = response.get_json()["check_in"]
    assert check["inside_radius"] is False and check["radius_m"] == 50 and check["poor_accuracy"] is True


def test_poor_accuracy_is_flagged(me, dispatched):
    order_id = dispatched()
    bring_to(me, order_id, "appointed")
    response = me.post(f"/orders/{order_id}/check-in", check_in_body(accuracy_m=250))
    assert response.status_code == 200
    assert response.get_json()["check_in"]["poor_accuracy"] is True
    assert response.get_json()["check_in"]["inside_radius"] is True
    assert events(order_id)[-1].payload["poor_accuracy"] is True


def test_check_in_before_the_appointment_is_409(me, dispatched):
    order_id = dispatched()
    bring_to(me, order_id, "taken")
    response = me.post(f"/orders/{order_id}/check-in", check_in_body())
    assert response.status_code == 409
    assert response.get_json()["status"] == "taken"


@pytest.mark.parametrize(
    "change",
    [{"lat": 90.5}, {"lng": -181}, {"accuracy_m": -1}, {"lat": "north"}, {"at": None}, {"lat": float("nan")}],
    ids=str,
)
def test_check_in_body_is_validated(me, dispatched, change):
    order_id = dispatched()
    bring_to(me, order_id, "appointed")
    body = {**check_in_body(), **change}
    if change.get("lat") != change.get("lat"):  # NaN is not JSON: send it the way a broken client would
        response = me.client.post(
            f"/mobile/v1/orders/{order_id}/check-in",
            data='{"lat": NaN, "lng": 102.7, "accuracy_m": 5, "at": "2026-11-25T09:05:00+08:00"}',
            headers={**me.headers, "Content-Type": "application/json"},
        )
    else:
        response = me.post(f"/orders/{order_id}/check-in", body)
    assert response.status_code in (400, 422), response.get_json()
    assert order_row(order_id).status == "appointed"


# --- resources ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("power", "warnings"),
    [(-18.5, []), (-26.0, ["optical_power_low"]), (-30.0, ["optical_power_out_of_range"]), (None, [])],
)
def test_resources_are_recorded_with_a_power_warning_and_no_status_change(me, dispatched, power, warnings):
    order_id = dispatched()
    bring_to(me, order_id, "taken")
    response = me.put(f"/orders/{order_id}/resources", {**RESOURCES, "optical_power_dbm": power})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "taken"
    assert [w["code"] for w in body["warnings"]] == warnings
    assert body["resources"] == {**RESOURCES, "optical_power_dbm": power}
    expected_missing = (
        ["after_photo", "signature"]
        if power == -18.5 or power == -26.0
        else ["optical_power", "after_photo", "signature"]
    )
    assert body["missing"] == expected_missing
    event = events(order_id)[-1]
    assert (event.action, event.from_status, event.to_status) == ("resources_reported", "taken", "taken")
    assert event.payload["box_id"] == "FBX-0101" and event.payload["warnings"] == warnings


def test_resources_before_the_take_are_409(me, dispatched):
    order_id = dispatched()
    response = me.put(f"/orders/{order_id}/resources", RESOURCES)
    assert response.status_code == 409
    assert response.get_json()["status"] == "dispatched"
    assert order_row(order_id).box_id is None


@pytest.mark.parametrize(
    "change",
    [
        {"box_id": None},
        {"box_id": ""},
        {"port": "x" * 33},
        {"ont_sn": "S" * 65},
        {"optical_power_dbm": -100},
        {"optical_power_dbm": "low"},
        {"box_id": "FBX\x00"},
    ],
    ids=str,
)
def test_resources_body_is_validated(me, dispatched, change):
    order_id = dispatched()
    bring_to(me, order_id, "taken")
    response = me.put(f"/orders/{order_id}/resources", {**RESOURCES, **change})
    assert response.status_code == 422, response.get_json()
    assert set(response.get_json()["errors"]) == set(change)
    assert order_row(order_id).box_id is None


# --- submit, complete, return, suspend ----------------------------------------------------------------


def test_submit_needs_the_id_photo_and_resources_then_goes_to_the_desk(me, dispatched):
    order_id = dispatched(pay_mode="install_then_pay")
    bring_to(me, order_id, "on_site")
    refused = me.post(f"/orders/{order_id}/submit")
    assert refused.status_code == 409
    assert refused.get_json()["missing"] == ["id_card_photo", "resources"]

    attach(order_id, "id_card")
    assert me.put(f"/orders/{order_id}/resources", RESOURCES).status_code == 200
    response = me.post(f"/orders/{order_id}/submit")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "pending_acceptance"
    assert clock_row(order_id, "acceptance").status == "running"


def test_submit_of_a_prepaid_order_is_409(me, dispatched):
    order_id = dispatched()
    bring_to(me, order_id, "on_site")
    assert me.post(f"/orders/{order_id}/submit").status_code == 409
    assert order_row(order_id).status == "on_site"


def test_complete_names_what_is_missing_then_completes(me, dispatched):
    order_id = dispatched()
    bring_to(me, order_id, "on_site")
    refused = me.post(f"/orders/{order_id}/complete", {"notes": "装好了"})
    assert refused.status_code == 409
    assert refused.get_json()["missing"] == [
        "resources",
        "ont_sn",
        "optical_power",
        "after_photo",
        "signature",
    ]

    assert me.put(f"/orders/{order_id}/resources", RESOURCES).status_code == 200
    attach(order_id, "after", "signature")
    response = me.post(f"/orders/{order_id}/complete", {"notes": "装好了", "at": iso(utcnow())})

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "completed" and body["missing"] == [] and body["completed_at"]
    assert clock_row(order_id, "completion").status == "met"
    assert events(order_id)[-1].payload["notes"] == "装好了"
    assert me.get("/orders").get_json()["items"] == []  # closed orders leave the PDA's list


def test_a_repair_completes_with_its_cause_code(me, dispatched):
    order_id = dispatched(order_type="repair")
    bring_to(me, order_id, "on_site")
    attach(order_id, "after")
    assert me.post(f"/orders/{order_id}/complete", {}).get_json()["missing"] == ["repair_cause"]
    response = me.post(f"/orders/{order_id}/complete", {"cause_code": "fiber_cut"})
    assert response.status_code == 200, response.get_json()
    assert order_row(order_id).repair_cause == "fiber_cut"


def test_complete_before_the_visit_is_409(me, dispatched):
    order_id = dispatched()
    response = me.post(f"/orders/{order_id}/complete", {"notes": "x" * 1001})
    assert response.status_code == 422  # the body is parsed first
    response = me.post(f"/orders/{order_id}/complete", {"notes": "早了"})
    assert response.status_code == 409 and response.get_json()["status"] == "dispatched"


def test_return_hands_the_order_back_and_hides_it(me, dispatched):
    order_id = dispatched()
    bring_to(me, order_id, "taken")
    assert me.post(f"/orders/{order_id}/return", {"reason_code": "bogus"}).status_code == 422
    response = me.post(f"/orders/{order_id}/return", {"reason_code": "no_resource", "note": "无资源"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "returned"
    assert order_row(order_id).engineer_id is None
    assert me.get(f"/orders/{order_id}").status_code == 404
    assert me.post(f"/orders/{order_id}/return", {"reason_code": "no_resource"}).status_code == 404


def test_suspend_with_a_reason_and_until(me, dispatched, clock):
    order_id = dispatched()
    bring_to(me, order_id, "taken")
    past = iso(utcnow() - timedelta(hours=1))
    assert me.post(f"/orders/{order_id}/suspend", {"reason_code": "nap"}).status_code == 422
    refused = me.post(f"/orders/{order_id}/suspend", {"reason_code": "customer_postponed", "until": past})
    assert refused.status_code == 422 and "until" in refused.get_json()["errors"]
    until = iso(utcnow() + timedelta(days=1))
    response = me.post(f"/orders/{order_id}/suspend", {"reason_code": "customer_postponed", "until": until})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "suspended"
    assert clock_row(order_id, "contact").status == "paused"
    again = me.post(f"/orders/{order_id}/suspend", {"reason_code": "customer_postponed"})
    assert again.status_code == 409


# --- location -----------------------------------------------------------------------------------------


def test_location_updates_my_live_position_only(me, pda):
    other = pda()
    response = me.post("/location", {"lat": 25.05, "lng": 102.71, "accuracy_m": 8, "at": iso(utcnow())})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["engineer_id"] == me.engineer.id and body["lat"] == 25.05
    assert body["device_time_rejected"] is False
    db.session.expire_all()
    assert db.session.get(Engineer, me.engineer.id).position_lat == 25.05
    assert db.session.get(Engineer, other.engineer.id).position_lat is None


@pytest.mark.parametrize("change", [{"lat": 91}, {"lng": 181}, {"at": None}, {"accuracy_m": -5}], ids=str)
def test_location_body_is_validated(me, change):
    body = {"lat": 25.05, "lng": 102.71, "accuracy_m": 8, "at": iso(utcnow()), **change}
    response = me.post("/location", body)
    assert response.status_code == 422
    assert set(response.get_json()["errors"]) == set(change)


def test_a_far_future_device_time_does_not_pin_the_position(me, clock):
    future = iso(utcnow() + timedelta(days=30))
    body = me.post("/location", {"lat": 25.05, "lng": 102.71, "at": future}).get_json()
    assert body["device_time_rejected"] is True
    assert datetime.fromisoformat(body["at"]) == utcnow()
    clock.advance(minutes=1)
    later = me.post("/location", {"lat": 25.06, "lng": 102.72, "at": iso(utcnow())}).get_json()
    assert later["lat"] == 25.06


# --- object-level access ------------------------------------------------------------------------------

# (method, path suffix, body, the status the owner's order is brought to first)
MUTATIONS: list[tuple[str, str, Any, str]] = [
    ("POST", "/take", {}, "dispatched"),
    ("POST", "/contacts", contact_body(), "taken"),
    ("POST", "/check-in", check_in_body(), "appointed"),
    ("PUT", "/resources", RESOURCES, "taken"),
    ("POST", "/submit", {}, "on_site"),
    ("POST", "/complete", {"notes": "x"}, "on_site"),
    ("POST", "/return", {"reason_code": "no_resource"}, "taken"),
    ("POST", "/suspend", {"reason_code": "customer_postponed"}, "taken"),
]


def ready_for(p: Pda, dispatched: Any, suffix: str, status: str) -> int:
    """An order of ``p``'s on which the mutation ``suffix`` succeeds."""
    order_id = int(dispatched(pay_mode="install_then_pay" if suffix == "/submit" else "prepaid"))
    bring_to(p, order_id, status)
    if suffix in ("/submit", "/complete"):
        attach(order_id, "id_card", "after", "signature")
        assert p.put(f"/orders/{order_id}/resources", RESOURCES).status_code == 200
    return order_id


@pytest.mark.parametrize(("method", "suffix", "body", "status"), [*MUTATIONS, ("GET", "", None, "taken")])
def test_another_engineers_order_is_404_and_unchanged(me, pda, dispatched, method, suffix, body, status):
    order_id = ready_for(me, dispatched, suffix, status)
    intruder = pda()
    before = (actions(order_id), order_row(order_id).version, order_row(order_id).status)

    response = intruder.call(method, f"/orders/{order_id}{suffix}", body, key=f"intruder-{next(_keys)}")

    assert response.status_code == 404, response.get_json()
    assert response.get_json()["code"] == 404
    assert (actions(order_id), order_row(order_id).version, order_row(order_id).status) == before
    assert order_id not in [o["id"] for o in intruder.get("/orders").get_json()["items"]]
    # and the owner still may: the 404 was about who asked, not about the order
    if method != "GET":
        owner = me.call(method, f"/orders/{order_id}{suffix}", body)
        assert owner.status_code == 200, owner.get_json()


def test_an_engineer_login_not_linked_to_an_engineer_sees_nothing(client, make_user, dispatched, me):
    order_id = dispatched()
    headers = {**bearer(_unlinked_token(client, make_user)), "X-Device-Id": "pda-1"}
    assert client.get("/mobile/v1/orders", headers=headers).get_json()["items"] == []
    assert client.post(f"/mobile/v1/orders/{order_id}/take", json={}, headers=headers).status_code == 404
    assert order_row(order_id).status == "dispatched"


def _unlinked_token(client: Any, make_user: Any) -> str:
    user = make_user("engineer")
    user.engineer_id = None
    db.session.commit()
    response = client.post(
        "/mobile/v1/auth/token",
        json={"username": user.username, "password": "password123", "device_id": "pda-1"},
    )
    if response.status_code != 200:
        pytest.skip("engineer logins must be linked to an engineer")
    return str(response.get_json()["access_token"])


# --- device time --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset_s", "trusted"), [(-120, True), (240, True), (-301, False), (3600, False)])
def test_device_time_stops_the_clock_only_within_the_skew(me, dispatched, offset_s, trusted):
    order_id = dispatched()
    server_now = utcnow()
    device = server_now + timedelta(seconds=offset_s)

    response = me.post(f"/orders/{order_id}/take", {"at": iso(device)})

    assert response.status_code == 200, response.get_json()
    event = events(order_id)[-1]
    assert event.device_time == device  # the device's time is always kept
    assert event.occurred_at == server_now  # and so is the server's
    stopped = clock_row(order_id, "take").stopped_at
    assert stopped == (device if trusted else server_now)
    assert clock_row(order_id, "contact").started_at == stopped
    assert event.payload.get("device_time_rejected", False) is (not trusted)


def test_device_time_of_a_check_in_decides_whether_the_arrival_was_on_time(me, dispatched, clock):
    order_id = dispatched()
    bring_to(me, order_id, "appointed")
    window_start = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
    clock.set(window_start + timedelta(minutes=2))  # the request reaches the server 2 min after the start
    body = {**check_in_body(), "at": iso(window_start - timedelta(minutes=1))}

    assert me.post(f"/orders/{order_id}/check-in", body).status_code == 200

    arrival = clock_row(order_id, "arrival")
    assert arrival.status == "met" and arrival.stopped_at == window_start - timedelta(minutes=1)


def test_a_skewed_device_clock_falls_back_to_server_time_for_the_arrival(app, me, dispatched, clock):
    order_id = dispatched()
    bring_to(me, order_id, "appointed")
    window_start = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
    clock.set(window_start + timedelta(minutes=10))
    body = {**check_in_body(), "at": iso(window_start - timedelta(minutes=30))}  # 40 min behind the server

    assert me.post(f"/orders/{order_id}/check-in", body).status_code == 200

    arrival = clock_row(order_id, "arrival")
    assert arrival.status == "breached" and arrival.stopped_at == utcnow()
    assert events(order_id)[-1].payload["device_time_rejected"] is True


def test_the_skew_is_configurable(app, me, dispatched):
    order_id = dispatched()
    app.config["DEVICE_CLOCK_SKEW_SECONDS"] = 60
    try:
        me.post(f"/orders/{order_id}/take", {"at": iso(utcnow() - timedelta(seconds=120))})
    finally:
        del app.config["DEVICE_CLOCK_SKEW_SECONDS"]
    assert events(order_id)[-1].payload["device_time_rejected"] is True


# --- Idempotency-Key ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body", "status"), MUTATIONS, ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_replayed_mutation_returns_the_first_response_and_adds_no_event(
    me, dispatched, method, suffix, body, status
):
    order_id = ready_for(me, dispatched, suffix, status)
    key = f"replay-{next(_keys)}"

    first = me.call(method, f"/orders/{order_id}{suffix}", body, key=key)
    assert first.status_code == 200, first.get_json()
    after_first = (actions(order_id), order_row(order_id).version)

    second = me.call(method, f"/orders/{order_id}{suffix}", body, key=key)

    assert second.status_code == 200
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.get_json() == first.get_json()
    assert (actions(order_id), order_row(order_id).version) == after_first
    other_body = me.call(method, f"/orders/{order_id}{suffix}", {**body, "at": iso(utcnow())}, key=key)
    assert other_body.status_code == 409  # the same key with another body


def test_a_replayed_location_returns_the_first_response(me, clock):
    body = {"lat": 25.05, "lng": 102.71, "accuracy_m": 8, "at": iso(utcnow())}
    first = me.post("/location", body, key="loc-1")
    clock.advance(minutes=5)
    second = me.post("/location", body, key="loc-1")
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.get_json() == first.get_json()


# --- an offline PDA replays its queue -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_offline_replay_in_any_order_changes_everything_exactly_once(me, dispatched, seed):
    """The PDA queued a whole visit offline and sends it when the network returns: each mutation 1-3 times
    (lost answers), in a shuffled order. One that arrives before its prerequisite gets a 409; the app keeps it
    and retries later. The 409 is the stored answer to that request's key, so the retry is a new request with
    a new key; the copies of each request keep their own key and are answered from the store."""
    rng = random.Random(seed)
    order_id = dispatched()
    attach(order_id, "after", "signature")
    at = iso(utcnow())
    visit: dict[str, tuple[str, str, dict[str, Any]]] = {
        "take": ("POST", "/take", {"at": at}),
        "contact": ("POST", "/contacts", contact_body(called_at=at)),
        "check_in": ("POST", "/check-in", {**check_in_body(), "at": at}),
        "resources": ("PUT", "/resources", {**RESOURCES, "at": at}),
        "complete": ("POST", "/complete", {"at": at, "notes": "离线完工"}),
    }
    attempt = dict.fromkeys(visit, 0)
    copies = [name for name in visit for _ in range(rng.randint(1, 3))]
    applied: dict[str, int] = dict.fromkeys(visit, 0)
    for _round in range(len(visit) + 1):
        rng.shuffle(copies)
        for name in copies:
            method, suffix, body = visit[name]
            response = me.call(
                method, f"/orders/{order_id}{suffix}", body, key=f"{seed}-{name}-{attempt[name]}"
            )
            replayed = response.headers.get("Idempotent-Replayed") == "true"
            if response.status_code == 200 and not replayed:
                applied[name] += 1
            elif response.status_code == 409 and not replayed and not applied[name]:
                attempt[name] += 1  # not yet: retry later as a new request
            else:
                assert replayed, (name, response.status_code, response.get_json())
        if all(applied.values()):
            break

    assert applied == dict.fromkeys(visit, 1)
    assert sum(attempt.values()) > 0  # the seeds shuffle some mutations before their prerequisites
    assert order_row(order_id).status == "completed"
    logged = actions(order_id)
    # resources may be reported any time from the take on; the status changes happen in their one order
    assert [a for a in logged if a != "resources_reported"] == [
        "intake",
        "assign",
        "take",
        "appoint",
        "check_in",
        "complete",
    ]
    assert logged.count("resources_reported") == 1
    db.session.expire_all()
    clocks = db.session.scalars(sa.select(SlaClock.clock).where(SlaClock.order_id == order_id)).all()
    assert sorted(clocks) == ["arrival", "completion", "contact", "take"]
    customer_sms = db.session.scalar(
        sa.select(sa.func.count()).where(OutboxMessage.order_id == order_id, OutboxMessage.kind == "sms")
    )
    assert customer_sms == len(
        set(
            db.session.scalars(
                sa.select(OutboxMessage.template).where(
                    OutboxMessage.order_id == order_id, OutboxMessage.kind == "sms"
                )
            )
        )
    )  # no message written twice


def test_take_and_submit_need_no_body(me, dispatched):
    order_id = dispatched()
    response = me.client.post(f"/mobile/v1/orders/{order_id}/take", headers=me.headers)
    assert response.status_code == 200, response.get_json()
    assert events(order_id)[-1].device_time is None
