"""GET /api/v1/billing/events (CONTRACT "Billing feed"): BOSS's key reads events by cursor."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dispatch.billing import feed
from dispatch.extensions import db
from tests.conftest import T0, bearer

URL = "/api/v1/billing/events"


def emit(n: int, *, type_: str = "order.completed", order_id: int | None = None) -> None:
    for _ in range(n):
        key = f"api-test:{type_}:{emit.serial}"  # type: ignore[attr-defined]
        emit.serial += 1  # type: ignore[attr-defined]
        feed.record(
            type_,
            dedupe_key=key,
            occurred_at=datetime(2026, 11, 30, 1, 0, tzinfo=UTC),
            payload={"key": key},
            now=T0,
            order_id=order_id,
        )
    db.session.commit()


emit.serial = 0  # type: ignore[attr-defined]


@pytest.fixture
def billing_key(api_key: Callable[[str], str]) -> dict[str, str]:
    return bearer(api_key("billing"))


def test_the_billing_key_reads_events_without_waiting_for_the_scheduler(
    app: Flask, client: FlaskClient, billing_key: dict[str, str], make_order: Callable[..., Any]
) -> None:
    order = make_order()
    emit(1, order_id=order.id)  # committed, not numbered yet: the endpoint numbers first
    emit(1, type_="kpi.daily")

    response = client.get(URL, headers=billing_key)

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == {"events", "next_after"}
    assert body["next_after"] == 2
    first, second = body["events"]
    assert set(first) == {"seq", "id", "type", "occurred_at", "payload"}
    assert (first["seq"], first["type"], second["seq"], second["type"]) == (
        1,
        "order.completed",
        2,
        "kpi.daily",
    )
    assert first["occurred_at"] == "2026-11-30T09:00:00+08:00"
    assert first["payload"]["key"].startswith("api-test:order.completed")


def test_pages_follow_next_after_until_empty(
    app: Flask, client: FlaskClient, billing_key: dict[str, str]
) -> None:
    emit(7)

    seen: list[int] = []
    after, pages = 0, 0
    while True:
        body = client.get(f"{URL}?after={after}&limit=3", headers=billing_key).get_json()
        pages += 1
        if not body["events"]:
            assert body["next_after"] == after
            break
        assert len(body["events"]) <= 3
        seen.extend(e["seq"] for e in body["events"])
        after = body["next_after"]
        assert after == seen[-1]

    assert seen == list(range(1, 8)) and pages == 4
    emit(1)
    assert [
        e["seq"] for e in client.get(f"{URL}?after={after}", headers=billing_key).get_json()["events"]
    ] == [8]


def test_defaults_are_after_zero_and_a_limit_of_500(
    app: Flask, client: FlaskClient, billing_key: dict[str, str]
) -> None:
    emit(501)

    body = client.get(URL, headers=billing_key).get_json()

    assert len(body["events"]) == 500 and body["next_after"] == 500


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=-1", "after"),
        ("after=abc", "after"),
        ("after=1.5", "after"),
        (f"after={2**63}", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
    ],
)
def test_bad_cursor_or_limit_is_422(
    app: Flask, client: FlaskClient, billing_key: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"{URL}?{query}", headers=billing_key)

    assert response.status_code == 422
    assert field in response.get_json()["errors"]


def test_the_largest_limit_is_accepted(app: Flask, client: FlaskClient, billing_key: dict[str, str]) -> None:
    assert client.get(f"{URL}?limit=1000&after=0", headers=billing_key).status_code == 200


def test_only_the_billing_key_may_read_the_feed(
    app: Flask,
    client: FlaskClient,
    api_key: Callable[[str], str],
    token: Callable[..., str],
) -> None:
    emit(1)

    assert client.get(URL).status_code == 401
    assert client.get(URL, headers=bearer("not-a-key")).status_code == 401
    assert client.get(URL, headers=bearer(api_key("intake"))).status_code == 403
    for role in ("admin", "dispatcher", "manager", "acceptance"):
        assert client.get(URL, headers=bearer(token(role))).status_code == 403, role
    assert client.get(URL, headers=bearer(api_key("billing"))).status_code == 200


def test_an_anonymous_caller_gets_401_even_with_bad_arguments(app: Flask, client: FlaskClient) -> None:
    assert client.get(f"{URL}?after=-1").status_code == 401
