"""The generic ``Idempotency-Key`` header on mutations (CONTRACT §3)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from dispatch.extensions import db
from dispatch.models import IdempotencyRecord, Order, OrderEvent
from tests.conftest import bearer, intake_payload

INTAKE = "/api/v1/intake/orders"


def with_key(auth: str, key: str) -> dict[str, str]:
    return {**bearer(auth), "Idempotency-Key": key}


def count(model: Any) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def events_of(order_id: int) -> list[str]:
    return list(db.session.scalars(sa.select(OrderEvent.action).where(OrderEvent.order_id == order_id)))


def cancel(client: Any, order_id: int, headers: dict[str, str], reason: str = "客户取消") -> Any:
    return client.post(f"/api/v1/orders/{order_id}/cancel", json={"reason": reason}, headers=headers)


@pytest.fixture
def dispatcher(token) -> str:
    return token("dispatcher")


def test_same_key_and_body_on_intake_replays_the_201_and_creates_nothing_more(client, api_key):
    key = api_key("intake")
    body = intake_payload()
    first = client.post(INTAKE, json=body, headers=with_key(key, "hotline-retry-1"))
    assert first.status_code == 201
    assert first.headers.get("Idempotent-Replayed") is None
    orders, events = count(Order), count(OrderEvent)

    again = client.post(INTAKE, json=body, headers=with_key(key, "hotline-retry-1"))

    # Without the key a same-content retry answers 200; with it, the stored 201 comes back verbatim.
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert (count(Order), count(OrderEvent)) == (orders, events)


def test_same_key_and_body_on_cancel_replays_the_response_and_changes_nothing(client, make_order, dispatcher):
    order = make_order()
    first = cancel(client, order.id, with_key(dispatcher, "cancel-1"))
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["status"] == "cancelled"
    version = first.get_json()["version"]

    again = cancel(client, order.id, with_key(dispatcher, "cancel-1"))

    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert events_of(order.id) == ["intake", "cancel"]
    db.session.expire_all()
    assert db.session.get(Order, order.id).version == version


def test_without_a_key_a_repeated_cancel_is_an_illegal_transition(client, make_order, dispatcher):
    """The control for the replay tests: it is the key that turns the second cancel into a replay."""
    order = make_order()
    assert cancel(client, order.id, bearer(dispatcher)).status_code == 200

    again = cancel(client, order.id, bearer(dispatcher))

    assert again.status_code == 409
    assert again.get_json()["status"] == "cancelled"
    assert again.headers.get("Idempotent-Replayed") is None
    assert events_of(order.id) == ["intake", "cancel"]


def test_same_key_with_a_different_body_is_409_and_changes_nothing(client, make_order, dispatcher):
    order = make_order()
    assert cancel(client, order.id, with_key(dispatcher, "k-1"), reason="客户取消").status_code == 200

    response = cancel(client, order.id, with_key(dispatcher, "k-1"), reason="重复工单")

    assert response.status_code == 409
    body = response.get_json()
    assert body["code"] == 409 and body["message"]
    assert response.headers.get("Idempotent-Replayed") is None
    assert events_of(order.id) == ["intake", "cancel"]
    db.session.expire_all()
    assert db.session.get(Order, order.id).cancel_reason == "客户取消"


def test_same_key_on_another_order_is_409_and_leaves_that_order_open(client, make_order, dispatcher):
    first, second = make_order(), make_order()
    assert cancel(client, first.id, with_key(dispatcher, "k-2")).status_code == 200

    response = cancel(client, second.id, with_key(dispatcher, "k-2"))

    assert response.status_code == 409
    db.session.expire_all()
    assert db.session.get(Order, second.id).status == "new"
    assert events_of(second.id) == ["intake"]


def test_same_key_with_a_different_intake_body_is_409_and_creates_nothing(client, api_key):
    key = api_key("intake")
    assert client.post(INTAKE, json=intake_payload(), headers=with_key(key, "batch-7")).status_code == 201
    orders = count(Order)

    response = client.post(INTAKE, json=intake_payload(), headers=with_key(key, "batch-7"))

    assert response.status_code == 409
    assert response.get_json()["code"] == 409
    assert count(Order) == orders


def test_keys_belong_to_their_caller(client, make_order, token):
    alice, bob = token("dispatcher"), token("dispatcher")
    order = make_order()
    assert cancel(client, order.id, with_key(alice, "shared-key")).status_code == 200

    # Bob's identical request with the same key is his own: it runs, and finds the order already cancelled.
    same = cancel(client, order.id, with_key(bob, "shared-key"))
    assert same.status_code == 409
    assert same.headers.get("Idempotent-Replayed") is None
    assert same.get_json()["status"] == "cancelled"

    # ... and on another order it simply works.
    other = make_order()
    response = cancel(client, other.id, with_key(bob, "shared-key-2"))
    assert response.status_code == 200
    again = cancel(client, other.id, with_key(alice, "shared-key-2"))
    assert again.status_code == 409 and again.headers.get("Idempotent-Replayed") is None


def test_keys_of_two_api_keys_are_independent(client, api_key):
    first_key, second_key = api_key("intake"), api_key("intake")
    one = client.post(INTAKE, json=intake_payload(), headers=with_key(first_key, "same"))
    two = client.post(INTAKE, json=intake_payload(), headers=with_key(second_key, "same"))

    assert (one.status_code, two.status_code) == (201, 201)
    assert one.get_json()["id"] != two.get_json()["id"]
    assert two.headers.get("Idempotent-Replayed") is None


@pytest.mark.parametrize("credentials", [None, "not-a-valid-token"], ids=["missing", "invalid"])
def test_a_request_rejected_with_401_is_not_stored(client, make_order, dispatcher, credentials):
    order = make_order()
    headers = {"Idempotency-Key": "after-login"}
    if credentials:
        headers.update(bearer(credentials))

    rejected = cancel(client, order.id, headers)

    assert rejected.status_code == 401
    assert count(IdempotencyRecord) == 0
    retried = cancel(client, order.id, with_key(dispatcher, "after-login"))
    assert retried.status_code == 200, retried.get_json()
    assert retried.headers.get("Idempotent-Replayed") is None
    assert retried.get_json()["status"] == "cancelled"


def test_key_longer_than_200_characters_is_400_and_changes_nothing(client, make_order, dispatcher):
    order = make_order()

    response = cancel(client, order.id, with_key(dispatcher, "k" * 201))

    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == 400 and body["message"]
    assert events_of(order.id) == ["intake"]
    assert count(IdempotencyRecord) == 0


def test_key_of_exactly_200_characters_is_accepted_and_replayed(client, make_order, dispatcher):
    order = make_order()
    key = "k" * 200

    first = cancel(client, order.id, with_key(dispatcher, key))
    again = cancel(client, order.id, with_key(dispatcher, key))

    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_4xx_answer_is_replayed_as_the_same_4xx_even_when_a_fresh_request_would_succeed(
    client, make_order, dispatcher
):
    order = make_order()
    resume = f"/api/v1/orders/{order.id}/resume"
    first = client.post(resume, json={"note": "继续"}, headers=with_key(dispatcher, "resume-1"))
    assert first.status_code == 409  # a new order is not suspended
    assert first.get_json()["status"] == "new"
    suspended = client.post(
        f"/api/v1/orders/{order.id}/suspend",
        json={"reason_code": "customer_postponed", "note": "下周再装"},
        headers=bearer(dispatcher),
    )
    assert suspended.status_code == 200, suspended.get_json()

    again = client.post(resume, json={"note": "继续"}, headers=with_key(dispatcher, "resume-1"))

    assert again.status_code == 409
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    db.session.expire_all()
    assert db.session.get(Order, order.id).status == "suspended"
    assert events_of(order.id) == ["intake", "suspend"]


def test_a_422_answer_is_replayed_as_the_same_422(client, api_key):
    key = api_key("intake")
    bad = intake_payload(order_type="teleport")
    first = client.post(INTAKE, json=bad, headers=with_key(key, "bad-1"))
    assert first.status_code == 422

    again = client.post(INTAKE, json=bad, headers=with_key(key, "bad-1"))

    assert again.status_code == 422
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()


def test_a_key_still_in_flight_gets_409_in_progress_until_the_claim_goes_stale(
    client, clock, make_order, dispatcher
):
    order = make_order()
    resume = f"/api/v1/orders/{order.id}/resume"
    headers = with_key(dispatcher, "resume-crashed")
    assert client.post(resume, json={"note": "继续"}, headers=headers).status_code == 409
    # As if that first request had claimed the key and its process had died before storing the response.
    db.session.execute(sa.update(IdempotencyRecord).values(response_status=None, response_body=None))
    db.session.commit()
    suspend = {"reason_code": "customer_postponed", "note": None}
    assert (
        client.post(
            f"/api/v1/orders/{order.id}/suspend", json=suspend, headers=bearer(dispatcher)
        ).status_code
        == 200
    )

    busy = client.post(resume, json={"note": "继续"}, headers=headers)

    assert busy.status_code == 409
    assert "in progress" in busy.get_json()["message"]
    db.session.expire_all()
    assert db.session.get(Order, order.id).status == "suspended"

    clock.advance(seconds=61)
    taken_over = client.post(resume, json={"note": "继续"}, headers=headers)

    assert taken_over.status_code == 200, taken_over.get_json()
    assert taken_over.headers.get("Idempotent-Replayed") is None
    assert taken_over.get_json()["status"] == "new"
    assert events_of(order.id) == ["intake", "suspend", "resume"]


def test_an_oversized_body_with_a_key_is_413_json_and_not_stored(app, client, api_key, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 2048)
    key = api_key("intake")
    orders = count(Order)

    response = client.post(INTAKE, json=intake_payload(notes="x" * 1900), headers=with_key(key, "big-1"))

    assert response.status_code == 413
    assert response.get_json()["code"] == 413 and response.get_json()["message"]
    assert count(IdempotencyRecord) == 0
    assert count(Order) == orders


def _database_gone(*args: Any, **kwargs: Any) -> None:
    raise sa.exc.OperationalError("UPDATE idempotency_records", {}, Exception("server closed the connection"))


def test_database_lost_while_storing_the_response_keeps_the_views_answer(client, api_key, monkeypatch):
    from dispatch.services import idempotency

    headers = {**bearer(api_key("intake")), "Idempotency-Key": "lost-store-1"}
    monkeypatch.setattr(idempotency, "complete", _database_gone)
    response = client.post("/api/v1/intake/orders", json=intake_payload(), headers=headers)
    assert response.status_code == 201  # the order committed: its answer stands, not a bare 500
