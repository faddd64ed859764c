"""The operator commands of CONTRACT §1, invoked as ``flask --app wsgi ...`` would run them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from click.testing import Result
from flask import Flask

from dispatch.extensions import db
from dispatch.models import ApiKey, Order, OrderEvent, User
from tests.conftest import bearer, intake_payload


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


def user_named(username: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.username == username))


def test_create_user_creates_a_login_that_works(app: Flask) -> None:
    result = run(app, "create-user", "li.desk", "--role", "dispatcher", "--password", "s3cret-pass")

    assert result.exit_code == 0, result.output
    assert "created user li.desk (dispatcher)" in result.output
    user = user_named("li.desk")
    assert user is not None and user.role == "dispatcher" and user.engineer_id is None
    assert "s3cret-pass" not in user.password_hash
    login = app.test_client().post(
        "/api/v1/auth/token", json={"username": "li.desk", "password": "s3cret-pass"}
    )
    assert login.status_code == 200 and login.get_json()["role"] == "dispatcher"


def test_create_user_refuses_a_duplicate_with_a_message(app: Flask) -> None:
    assert run(app, "create-user", "wang", "--role", "manager", "--password", "password123").exit_code == 0

    again = run(app, "create-user", "wang", "--role", "admin", "--password", "password456")

    assert again.exit_code != 0
    assert "User wang already exists" in again.output
    user = user_named("wang")
    assert user is not None and user.role == "manager"


def test_engineer_login_needs_the_code_of_an_existing_engineer(
    app: Flask, make_engineer: Callable[..., Any]
) -> None:
    missing = run(app, "create-user", "zhao", "--role", "engineer", "--password", "password123")
    assert missing.exit_code != 0 and "engineer_code" in missing.output

    unknown = run(
        app,
        "create-user",
        "zhao",
        "--role",
        "engineer",
        "--password",
        "password123",
        "--engineer-code",
        "E9999",
    )
    assert unknown.exit_code != 0 and "No engineer with code E9999" in unknown.output
    assert user_named("zhao") is None

    engineer = make_engineer()
    ok = run(
        app,
        "create-user",
        "zhao",
        "--role",
        "engineer",
        "--password",
        "password123",
        "--engineer-code",
        engineer.code,
    )
    assert ok.exit_code == 0, ok.output
    user = user_named("zhao")
    assert user is not None and user.engineer_id == engineer.id


def test_create_user_rejects_a_bad_role_and_a_short_password(app: Flask) -> None:
    bad_role = run(app, "create-user", "qian", "--role", "boss", "--password", "password123")
    assert bad_role.exit_code == 2 and "Invalid value for '--role'" in bad_role.output

    short = run(app, "create-user", "qian", "--role", "manager", "--password", "short")
    assert short.exit_code != 0 and "password" in short.output

    linked = run(
        app, "create-user", "qian", "--role", "manager", "--password", "password123", "--engineer-code", "E1"
    )
    assert linked.exit_code != 0 and "engineer_code" in linked.output
    assert user_named("qian") is None


def test_create_api_key_prints_the_key_alone_on_its_last_line_and_stores_only_a_hash(app: Flask) -> None:
    result = run(app, "create-api-key", "hotline-10000", "--scope", "intake")

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    raw = lines[-1]
    assert raw.startswith("dk_") and " " not in raw and len(lines) >= 2
    key = db.session.scalar(sa.select(ApiKey).where(ApiKey.name == "hotline-10000"))
    assert key is not None and key.scopes == ["intake"]
    secret = raw.split("_", 2)[2]
    stored = " ".join(str(v) for v in (key.name, key.prefix, key.salt, key.key_hash, key.scopes))
    assert raw not in stored and secret not in stored

    client = app.test_client()
    created = client.post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(raw))
    assert created.status_code == 201, created.get_json()
    forged = client.post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(raw[:-2] + "zz"))
    assert forged.status_code == 401


def test_create_api_key_scopes_are_enforced_and_checked(app: Flask) -> None:
    billing = run(app, "create-api-key", "boss", "--scope", "billing")
    assert billing.exit_code == 0, billing.output
    raw = billing.output.strip().splitlines()[-1]
    refused = app.test_client().post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(raw))
    assert refused.status_code == 403

    bad = run(app, "create-api-key", "crm", "--scope", "everything")
    assert bad.exit_code == 2 and "Invalid value for '--scope'" in bad.output
    assert db.session.scalar(sa.select(ApiKey).where(ApiKey.name == "crm")) is None


def test_seed_demo_loads_once(committed_app: Flask) -> None:
    first = run(committed_app, "seed-demo")
    assert first.exit_code == 0, first.output
    assert first.output.startswith("demo data loaded") and len(first.output.strip().splitlines()) == 1
    orders = db.session.scalar(sa.select(sa.func.count()).select_from(Order))
    events = db.session.scalar(sa.select(sa.func.count()).select_from(OrderEvent))
    assert orders == 300

    second = run(committed_app, "seed-demo")

    assert second.exit_code == 0, second.output
    assert "already loaded" in second.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Order)) == orders
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OrderEvent)) == events
