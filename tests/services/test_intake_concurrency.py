"""Concurrent retries against real PostgreSQL commits: exactly one order, one customer, one cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask

from dispatch.extensions import db
from dispatch.models import Customer, Order, OrderEvent
from tests.conftest import INTAKE_ACTOR, SYSTEM, bearer, intake_payload

INTAKE = "/api/v1/intake/orders"


def run_at_once(app: Flask, n: int, request: Callable[[Any, int], Any]) -> list[Any]:
    """Run ``request(client, i)`` in ``n`` threads released together; each thread has its own test client."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        client = app.test_client()
        try:
            barrier.wait(timeout=30)
            response = request(client, i)
            results[i] = (response.status_code, response.get_json(silent=True), dict(response.headers))
        except BaseException as exc:  # surfaced below, with the thread it came from
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results


def intake_key() -> str:
    from dispatch.services.auth import create_api_key

    raw, _ = create_api_key("hotline", ["intake"], actor=SYSTEM)
    return raw


def count(model: Any, *where: Any) -> int:
    db.session.rollback()  # see the other threads' commits
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def test_fifty_concurrent_retries_of_one_order_create_exactly_one(pg_app):
    key = intake_key()
    body = intake_payload()

    results = run_at_once(pg_app, 50, lambda client, i: client.post(INTAKE, json=body, headers=bearer(key)))

    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 201}, [(s, b) for s, b, _ in results if s not in (200, 201)]
    assert statuses.count(201) == 1
    assert len({payload["id"] for _, payload, _ in results}) == 1
    assert count(Order, Order.external_id == body["external_id"]) == 1
    assert count(Order) == 1
    assert count(Customer) == 1
    assert count(OrderEvent) == 1


def test_concurrent_different_orders_for_one_new_phone_share_one_customer(pg_app):
    key = intake_key()
    phone = "13987654321"
    bodies = [intake_payload(customer={"name": "王五", "phone": phone}) for _ in range(20)]

    results = run_at_once(
        pg_app, 20, lambda client, i: client.post(INTAKE, json=bodies[i], headers=bearer(key))
    )

    assert [status for status, _, _ in results] == [201] * 20, [b for s, b, _ in results if s != 201]
    assert len({payload["id"] for _, payload, _ in results}) == 20
    assert len({payload["customer"]["id"] for _, payload, _ in results}) == 1
    assert count(Customer) == 1
    assert count(Customer, Customer.phone == "+86" + phone) == 1
    assert count(Order) == 20


def test_concurrent_cancels_with_one_idempotency_key_cancel_once(pg_app):
    from api.intake.schemas import OrderIntakeSchema
    from dispatch.services.auth import create_user
    from dispatch.services.intake import intake_order

    order, _ = intake_order(OrderIntakeSchema().load(intake_payload()), actor=INTAKE_ACTOR)
    order_id = order.id
    user = create_user("dispatcher-race", role="dispatcher", password="password123", actor=SYSTEM)
    login = pg_app.test_client().post(
        "/api/v1/auth/token", json={"username": user.username, "password": "password123"}
    )
    assert login.status_code == 200, login.get_json()
    headers = {**bearer(login.get_json()["access_token"]), "Idempotency-Key": "cancel-race-1"}

    results = run_at_once(
        pg_app,
        20,
        lambda client, i: client.post(
            f"/api/v1/orders/{order_id}/cancel", json={"reason": "客户取消"}, headers=headers
        ),
    )

    ok = [(body, hdrs) for status, body, hdrs in results if status == 200]
    in_progress = [body for status, body, _ in results if status == 409]
    assert len(ok) + len(in_progress) == 20, [(s, b) for s, b, _ in results]
    assert ok, "the one request that ran must have answered"
    assert len([1 for _, hdrs in ok if hdrs.get("Idempotent-Replayed") != "true"]) == 1
    assert all(body == ok[0][0] for body, _ in ok)
    assert ok[0][0]["status"] == "cancelled"
    assert all("in progress" in body["message"] for body in in_progress), in_progress
    assert count(OrderEvent, OrderEvent.order_id == order_id, OrderEvent.action == "cancel") == 1

    replay = pg_app.test_client().post(
        f"/api/v1/orders/{order_id}/cancel", json={"reason": "客户取消"}, headers=headers
    )
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == ok[0][0]
