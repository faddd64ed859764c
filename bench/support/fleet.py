"""A city's worth of engineers and open orders, bulk-inserted with Core into a migrated database, for the
benchmarks that read them (bench/assignment.py, bench/mobile_orders.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

ORDER_POINT = (25.0423, 102.7065)  # 五华区
OPEN_STATUSES = ("dispatched", "taken", "appointed", "on_site", "in_progress")


@dataclass
class Fleet:
    app: Any
    engineer_ids: list[int]
    engineer_codes: list[str]
    waiting_order_id: int  # one new order in 五华区, nobody on it


def load_fleet(url: str, *, engineers: int, open_orders: int, spread: int = 1, clocks: bool = False) -> Fleet:
    """Migrate ``url``; load ``engineers`` (covering ``spread`` of Kunming's districts in turn, 五华区
    first) and ``open_orders`` assigned at random among them, plus one new order; ANALYZE at the end (the
    planner statistics autovacuum keeps in production). ``clocks``: a running completion clock per order."""
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from dispatch.extensions import db
    from dispatch.factory import create_app
    from dispatch.models import (
        Address,
        Customer,
        Engineer,
        EngineerShift,
        EngineerSkill,
        Order,
        SlaClock,
        Team,
        engineer_districts,
    )

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "RATELIMIT_ENABLED": False, "SECRET_KEY": "bench"})
    rng = random.Random(11)
    now = datetime.now(UTC)
    with app.app_context():
        upgrade()
        conn = db.session.connection()
        district_id = conn.execute(sa.text("SELECT id FROM districts WHERE name = '五华区'")).scalar_one()
        others = list(
            conn.execute(sa.text("SELECT id FROM districts WHERE name <> '五华区' ORDER BY id")).scalars()
        )
        covered = [district_id, *others][:spread]
        conn.execute(
            sa.insert(Team), [{"name": f"班组{t}", "leader_phone": "+8613800000000"} for t in range(12)]
        )
        teams = list(conn.execute(sa.select(Team.id)).scalars())
        codes = [f"B{i:05d}" for i in range(engineers)]
        conn.execute(
            sa.insert(Engineer),
            [
                {
                    "code": code,
                    "name": f"工程师{i}",
                    "phone": f"+86139{i:08d}",
                    "team_id": teams[i % len(teams)],
                    "home_lat": rng.uniform(24.85, 25.2),
                    "home_lng": rng.uniform(102.55, 102.95),
                    "daily_capacity": 8,
                    "active": True,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, code in enumerate(codes)
            ],
        )
        engineer_ids = list(conn.execute(sa.select(Engineer.id).order_by(Engineer.id)).scalars())
        conn.execute(
            sa.insert(EngineerSkill),
            [{"engineer_id": e, "order_type": "broadband_install"} for e in engineer_ids],
        )
        conn.execute(
            sa.insert(engineer_districts),
            [
                {"engineer_id": e, "district_id": covered[i % len(covered)]}
                for i, e in enumerate(engineer_ids)
            ],
        )
        conn.execute(
            sa.insert(EngineerShift),
            [
                {"engineer_id": e, "weekday": d, "start_time": dtime(0, 0), "end_time": dtime(23, 59)}
                for e in engineer_ids
                for d in range(1, 8)
            ],
        )
        conn.execute(
            sa.insert(Customer),
            [
                {"name": f"客户{i}", "phone": f"+86138{i:08d}", "created_at": now}
                for i in range(open_orders + 1)
            ],
        )
        customers = list(conn.execute(sa.select(Customer.id).order_by(Customer.id)).scalars())
        conn.execute(
            sa.insert(Address),
            [
                {
                    "customer_id": c,
                    "text": "昆明市五华区人民中路1号",
                    "district_name": "五华区",
                    "district_id": district_id,
                    "lat": ORDER_POINT[0],
                    "lng": ORDER_POINT[1],
                    "location_source": "intake",
                }
                for c in customers
            ],
        )
        addresses = list(conn.execute(sa.select(Address.id).order_by(Address.id)).scalars())
        rows = []
        for i, (customer, address) in enumerate(zip(customers, addresses, strict=True)):
            waiting = i == len(customers) - 1
            start = now + timedelta(hours=rng.randint(1, 72))
            rows.append(
                {
                    "external_id": f"BENCH-{i:06d}",
                    "order_type": "broadband_install",
                    "pay_mode": "prepaid",
                    "priority": "normal",
                    "status": "new" if waiting else OPEN_STATUSES[i % len(OPEN_STATUSES)],
                    "customer_id": customer,
                    "address_id": address,
                    "engineer_id": None if waiting else rng.choice(engineer_ids),
                    "requested_start": start,
                    "requested_end": start + timedelta(hours=3),
                    "products": [],
                    "intake_fingerprint": "0" * 64,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
            )
        conn.execute(sa.insert(Order), rows)
        order_ids = list(conn.execute(sa.select(Order.id).order_by(Order.id)).scalars())
        if clocks:
            conn.execute(
                sa.insert(SlaClock),
                [
                    {
                        "order_id": o,
                        "clock": "completion",
                        "status": "running",
                        "target_seconds": 48 * 3600,
                        "warn_percent": 75,
                        "started_at": now,
                        "due_at": now + timedelta(hours=48),
                        "warn_at": now + timedelta(hours=36),
                        "paused_seconds": 0,
                    }
                    for o in order_ids
                ],
            )
        db.session.commit()
        db.session.remove()
        with db.engine.connect() as analyze:
            analyze.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    return Fleet(app, engineer_ids, codes, order_ids[-1])


def login(app: Any, role: str, *, engineer_code: str | None = None) -> str:
    """A bearer token for a new user of ``role`` (an engineer's through the PDA login)."""
    from dispatch.actors import Actor
    from dispatch.extensions import db
    from dispatch.services.auth import create_user

    username = f"bench-{role}-{engineer_code or 'user'}"
    with app.app_context():
        create_user(
            username,
            role=role,
            password="bench-password",
            engineer_code=engineer_code,
            actor=Actor.system(name="bench", source="cli"),
        )
        db.session.remove()
    client = app.test_client()
    body = {"username": username, "password": "bench-password"}
    if role == "engineer":
        response = client.post("/mobile/v1/auth/token", json={**body, "device_id": "bench-pda"})
    else:
        response = client.post("/api/v1/auth/token", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(response.get_json()["access_token"])
