"""``seed_demo``: a month of consistent Kunming demo data, loaded once, with working logins and key."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.clock import utcnow
from dispatch.demo import (
    DEMO_API_KEY,
    DEMO_KEY_SECRET,
    DEMO_ORDER_PREFIX,
    DEMO_USERS,
    STATUS_COUNTS,
    seed_demo,
)
from dispatch.extensions import db
from dispatch.models import (
    Address,
    ApiKey,
    Attachment,
    Customer,
    District,
    Engineer,
    Order,
    OrderEvent,
    Team,
    User,
)
from dispatch.phones import normalise_cn_mobile
from dispatch.vocabulary import ORDER_TYPES, PAY_MODES, STATUSES
from tests.conftest import T0, bearer, intake_payload

KUNMING = ("五华区", "盘龙区", "官渡区", "西山区", "呈贡区")


def _km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    dy = (lat2 - lat1) * 111.2
    dx = (lng2 - lng1) * 111.2 * math.cos(math.radians(lat1))
    return math.hypot(dx, dy)


def _counts() -> dict[str, int]:
    return {
        model.__tablename__: db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0
        for model in (Team, Engineer, User, ApiKey, Customer, Address, Order, OrderEvent, Attachment)
    }


def test_seed_builds_a_consistent_month_of_kunming_work(committed_app: Flask) -> None:
    clock_before = committed_app.extensions["clock"]
    summary = seed_demo()

    assert "\n" not in summary and "300 orders" in summary and DEMO_API_KEY in summary
    assert committed_app.extensions["clock"] is clock_before and utcnow() == T0  # the real clock is back

    districts = {d.name: d for d in db.session.scalars(sa.select(District))}
    assert set(districts) == set(KUNMING)

    teams = db.session.scalars(sa.select(Team)).all()
    assert {t.name for t in teams} == {"五华装维一班", "官渡装维二班", "呈贡综合班"}
    assert all(t.leader_name and normalise_cn_mobile(t.leader_phone or "") == t.leader_phone for t in teams)

    engineers = db.session.scalars(sa.select(Engineer).order_by(Engineer.code)).all()
    assert [e.code for e in engineers] == [f"E{n:03d}" for n in range(1, 41)]
    assert len({e.name for e in engineers}) == 40 and len({e.phone for e in engineers}) == 40
    for engineer in engineers:
        assert normalise_cn_mobile(engineer.phone) == engineer.phone
        assert 4 <= engineer.daily_capacity <= 8 and engineer.active and engineer.team is not None
        assert {"broadband_install", "repair"} <= set(engineer.skills) <= set(ORDER_TYPES)
        assert engineer.districts and len(engineer.shifts) == 7
        assert engineer.home_lat is not None and engineer.home_lng is not None
        nearest = min(_km(engineer.home_lat, engineer.home_lng, d.lat, d.lng) for d in engineer.districts)
        assert nearest < 8, (engineer.code, nearest)
    for name in KUNMING:  # every district can be served for every order type
        for order_type in ORDER_TYPES:
            assert any(name in {d.name for d in e.districts} and order_type in e.skills for e in engineers)

    orders = db.session.scalars(sa.select(Order).order_by(Order.id)).all()
    assert len(orders) == sum(STATUS_COUNTS.values()) == 300
    by_status = defaultdict(int)
    for order in orders:
        by_status[order.status] += 1
    assert dict(by_status) == STATUS_COUNTS
    assert set(by_status) == set(STATUSES)
    assert by_status["completed"] > 150
    assert {o.order_type for o in orders} == set(ORDER_TYPES)
    assert {o.pay_mode for o in orders} == set(PAY_MODES)
    assert all(o.external_id.startswith(DEMO_ORDER_PREFIX) for o in orders)

    events: dict[int, list[OrderEvent]] = defaultdict(list)
    for event in db.session.scalars(sa.select(OrderEvent).order_by(OrderEvent.id)):
        events[event.order_id].append(event)
    kinds: dict[int, set[str]] = defaultdict(set)
    for attachment in db.session.scalars(sa.select(Attachment)):
        kinds[attachment.order_id].add(attachment.kind)
        assert attachment.content_type in ("image/jpeg", "image/png") and len(attachment.sha256) == 64
        assert attachment.storage_path.startswith("demo/")

    month_ago = T0 - timedelta(days=30)
    for order in orders:
        chain = events[order.id]
        first = chain[0]
        assert (first.action, first.from_status, first.to_status) == ("intake", None, "new")
        assert first.actor_type == "api_key" and first.occurred_at == order.created_at
        for before, after in zip(chain, chain[1:], strict=False):
            assert after.from_status == before.to_status, (order.external_id, before.action, after.action)
            assert after.occurred_at >= before.occurred_at
        assert chain[-1].to_status == order.status
        assert month_ago <= order.created_at and chain[-1].occurred_at <= T0
        assert {e.action for e in chain} <= set(workflow.TRANSITIONS) | {"intake"}

        assert normalise_cn_mobile(order.customer.phone) == order.customer.phone
        district = districts[order.address.district_name]
        assert order.address.district_id == district.id and order.address.location_source == "intake"
        assert order.address.text.startswith(f"云南省昆明市{district.name}")
        assert _km(order.address.lat or 0, order.address.lng or 0, district.lat, district.lng) < 8

        actions = [e.action for e in chain]
        if "submit" in actions:
            assert order.pay_mode == "install_then_pay"
            assert "id_card" in kinds[order.id] and order.box_id and order.port
        if order.status == "completed":
            assert order.completed_at == chain[-1].occurred_at
            step = workflow.Step(order, Actor.system(), T0, {}, workflow.Rules(), frozenset(kinds[order.id]))
            assert workflow.missing_for_completion(step) == []
            if order.pay_mode == "install_then_pay":
                assert "approve" in actions
        if order.status in ("new", "returned"):
            assert order.engineer_id is None
        elif order.status != "cancelled" and order.status != "suspended":
            assert order.engineer_id is not None
        if order.status == "suspended":
            assert order.suspend_reason and order.status_before_suspend
            assert order.suspended_until is None or order.suspended_until > T0
        if order.status == "appointed":
            assert order.appointment_start is not None and order.appointment_end > order.appointment_start

    e001 = next(e for e in engineers if e.code == "E001")
    assert any(o.engineer_id == e001.id and o.status in ("dispatched", "taken", "appointed") for o in orders)

    # The demo dispatches sensibly: every waiting order has qualified candidates, the best of them close by.
    from dispatch.services.dispatching import candidates

    waiting = [o for o in orders if o.status in ("new", "returned")]
    assert waiting
    for order in waiting:
        ranked = candidates(order.id, actor=Actor.system(), limit=3)
        assert ranked, f"no candidate for demo order {order.external_id}"
        assert ranked[0].distance_km is not None and ranked[0].distance_km < 30

    # The month's KPIs, counted as the history was loaded, equal those recomputed from its events.
    from dispatch.reporting import recompute
    from dispatch.timeutil import business_day

    day, last = business_day(T0) - timedelta(days=32), business_day(T0)
    while day <= last:
        assert not recompute.differences(day), day
        day += timedelta(days=1)


def test_second_run_adds_nothing_and_the_demo_logins_and_key_work(committed_app: Flask) -> None:
    first = seed_demo()
    assert first.startswith("demo data loaded")
    before = _counts()
    events_before = db.session.scalar(sa.select(sa.func.max(OrderEvent.id)))

    second = seed_demo()

    assert second.startswith("demo data already loaded") and "nothing added" in second
    assert _counts() == before
    assert db.session.scalar(sa.select(sa.func.max(OrderEvent.id))) == events_before

    client = committed_app.test_client()
    for username, role, password, engineer_code in DEMO_USERS:
        # Engineers sign in on the PDA API with their device; every other role on the console API.
        url, extra = (
            ("/mobile/v1/auth/token", {"device_id": "pda-demo"})
            if role == "engineer"
            else ("/api/v1/auth/token", {})
        )
        response = client.post(url, json={"username": username, "password": password, **extra})
        assert response.status_code == 200, (username, response.get_json())
        assert response.get_json()["role"] == role
        wrong = client.post(url, json={"username": username, "password": password + "x", **extra})
        assert wrong.status_code == 401
        user = db.session.scalar(sa.select(User).where(User.username == username))
        assert user is not None and password not in user.password_hash
        if engineer_code:
            assert user.engineer is not None and user.engineer.code == engineer_code

    key = db.session.scalar(sa.select(ApiKey))
    assert key is not None and key.scopes == ["intake"]
    assert DEMO_KEY_SECRET not in (key.key_hash + key.salt + key.prefix)
    created = client.post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(DEMO_API_KEY))
    assert created.status_code == 201, created.get_json()
    refused = client.post(
        "/api/v1/intake/orders", json=intake_payload(), headers=bearer(DEMO_API_KEY[:-1] + "X")
    )
    assert refused.status_code == 401
