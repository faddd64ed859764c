"""Times are stored in UTC and presented in DISPATCH_TZ."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from dispatch.extensions import db
from dispatch.models import Order
from tests.conftest import bearer, intake_payload


def test_times_are_stored_utc_and_presented_in_the_business_zone(app, client, api_key, token):
    body = intake_payload(
        requested_window={"start": "2026-11-26T09:00:00+08:00", "end": "2026-11-26T12:00:00+08:00"}
    )
    created = client.post("/api/v1/intake/orders", json=body, headers=bearer(api_key("intake"))).get_json()
    assert created["requested_window"] == {
        "start": "2026-11-26T09:00:00+08:00",
        "end": "2026-11-26T12:00:00+08:00",
    }
    assert created["created_at"] == "2026-11-25T09:00:00+08:00"  # the fake clock's T0 is 01:00 UTC

    stored = db.session.scalar(sa.select(Order).where(Order.id == created["id"]))
    assert stored.requested_start == datetime(2026, 11, 26, 1, 0, tzinfo=UTC)

    app.config["DISPATCH_TZ"] = "Europe/London"
    try:
        shown = client.get(f"/api/v1/orders/{created['id']}", headers=bearer(token("dispatcher"))).get_json()
    finally:
        app.config["DISPATCH_TZ"] = "Asia/Shanghai"
    assert shown["requested_window"]["start"] == "2026-11-26T01:00:00+00:00"
    assert shown["events"][0]["occurred_at"] == "2026-11-25T01:00:00+00:00"


def test_a_window_given_in_utc_is_the_same_instant(client, api_key):
    body = intake_payload(requested_window={"start": "2026-11-26T01:00:00Z", "end": "2026-11-26T04:00:00Z"})
    created = client.post("/api/v1/intake/orders", json=body, headers=bearer(api_key("intake"))).get_json()
    assert created["requested_window"]["start"] == "2026-11-26T09:00:00+08:00"
