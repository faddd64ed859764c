"""Test fixtures: the app on SQLite and (with TEST_DATABASE_URL) PostgreSQL, schema from the migrations.

Every test that takes ``app`` runs once per database. Each test runs inside an outer transaction that is
rolled back at the end; the services' commits become SAVEPOINTs. Tests that need real commits seen by
other connections (threads, processes) take ``committed_app`` instead, which truncates afterwards.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_sqlalchemy.session import Session as FlaskSession

from dispatch.actors import Actor
from dispatch.clock import FakeClock
from dispatch.extensions import db
from dispatch.factory import create_app

PG_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite", "postgresql"]
T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 09:00 in Asia/Shanghai, a Wednesday
INTAKE_ACTOR = Actor(kind="api_key", id=0, name="hotline", scopes=frozenset({"intake"}), source="intake")
SYSTEM = Actor.system(name="tests", source="cli")
KEEP_TABLES = {"districts", "alembic_version", "sla_policies"}


# --- no network ---------------------------------------------------------------------------------------

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (
        host.startswith("127.")
        or host in ("localhost", "::1")
        or host.startswith("/")
        or self.family == socket.AF_UNIX
    ):
        raise RuntimeError(f"tests must not reach the network (tried {address!r})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection outside this machine fails the test."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


# --- databases ----------------------------------------------------------------------------------------


def pg_url() -> str:
    from dispatch.config import normalise_database_url

    assert PG_URL
    return normalise_database_url(PG_URL)


def reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def make_app(url: str, **overrides: Any) -> Flask:
    config = {
        "SQLALCHEMY_DATABASE_URI": url,
        "TESTING": True,
        "SECRET_KEY": "test-secret",
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        "RATELIMIT_ENABLED": False,
        "RAISE_UNEXPECTED": True,
        "CLOCK": FakeClock(T0),
        "UPLOAD_DIR": os.path.join(tempfile.gettempdir(), "dispatch-test-uploads"),
    }
    config.update(overrides)
    return create_app(config)


def migrate_up(app: Flask) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database URL for each backend (PostgreSQL only with TEST_DATABASE_URL)."""
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("TEST_DATABASE_URL not set")
        url = pg_url()
        reset_postgres(url)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    migrate_up(make_app(url))
    return url


@pytest.fixture(scope="session")
def session_app(backend: str) -> Iterator[Flask]:
    app = make_app(backend)
    yield app
    with app.app_context():
        db.engine.dispose()


class ConnectionBoundSession(FlaskSession):
    """Flask-SQLAlchemy's session picks the engine itself; in tests it must use the test's connection."""

    def get_bind(self, *args: Any, **kwargs: Any) -> Any:
        return self.bind if self.bind is not None else super().get_bind(*args, **kwargs)


@pytest.fixture
def app(session_app: Flask) -> Iterator[Flask]:
    """The app inside a rolled-back outer transaction, with a fresh fake clock at T0."""
    session_app.extensions["clock"] = FakeClock(T0)
    with session_app.app_context():
        connection = db.engine.connect()
        outer = connection.begin()
        original = db.session
        db.session = db._make_scoped_session(  # type: ignore[method-assign]
            {
                "bind": connection,
                "join_transaction_mode": "create_savepoint",
                "class_": ConnectionBoundSession,
            }
        )
        try:
            yield session_app
        finally:
            db.session.remove()
            db.session = original  # type: ignore[method-assign]
            outer.rollback()
            connection.close()


def truncate_all(app: Flask) -> None:
    with app.app_context():
        tables = [t for t in reversed(db.metadata.sorted_tables) if t.name not in KEEP_TABLES]
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    sa.text("TRUNCATE " + ", ".join(t.name for t in tables) + " RESTART IDENTITY CASCADE")
                )
            else:
                conn.execute(sa.text("DROP TRIGGER IF EXISTS order_events_no_delete"))
                for table in tables:
                    conn.execute(table.delete())
                conn.execute(
                    sa.text(
                        "CREATE TRIGGER order_events_no_delete BEFORE DELETE ON order_events "
                        "BEGIN SELECT RAISE(ABORT, 'order_events is append-only'); END"
                    )
                )


@pytest.fixture
def committed_app(session_app: Flask) -> Iterator[Flask]:
    """The app with real commits (for threads and processes); every table is emptied afterwards."""
    session_app.extensions["clock"] = FakeClock(T0)
    truncate_all(session_app)
    with session_app.app_context():
        yield session_app
        db.session.remove()
    truncate_all(session_app)


@pytest.fixture
def pg_app(committed_app: Flask) -> Flask:
    """``committed_app`` on PostgreSQL only (concurrency tests)."""
    if committed_app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("needs PostgreSQL")
    return committed_app


@pytest.fixture
def ctx_app(request: pytest.FixtureRequest) -> Flask:
    """Whichever app the test asked for: ``committed_app`` if it did, else the rolled-back ``app``."""
    if "committed_app" in request.fixturenames:
        return request.getfixturevalue("committed_app")  # type: ignore[no-any-return]
    return request.getfixturevalue("app")  # type: ignore[no-any-return]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def clock(app: Flask) -> FakeClock:
    fake: FakeClock = app.extensions["clock"]
    return fake


# --- factories ----------------------------------------------------------------------------------------

_seq = count(1)


def intake_payload(**overrides: Any) -> dict[str, Any]:
    """A valid hotline intake body; nested dicts in ``overrides`` replace whole sub-objects."""
    n = next(_seq)
    body: dict[str, Any] = {
        "external_id": f"10000-20261125-{n:06d}",
        "order_type": "broadband_install",
        "pay_mode": "install_then_pay",
        "priority": "normal",
        "customer": {"name": "张三", "phone": f"138{n:08d}"[:11]},
        "address": {"text": "昆明市五华区人民中路1号", "district": "五华区", "lat": 25.0423, "lng": 102.7065},
        "requested_window": {"start": "2026-11-26T09:00:00+08:00", "end": "2026-11-26T12:00:00+08:00"},
        "products": ["broadband_300m"],
        "notes": "",
    }
    body.update(overrides)
    return body


@pytest.fixture
def make_engineer(ctx_app: Flask) -> Callable[..., Any]:
    from dispatch.services.engineers import create_engineer

    def factory(**overrides: Any) -> Any:
        n = next(_seq)
        data: dict[str, Any] = {
            "code": f"E{n:04d}",
            "name": f"工程师{n}",
            "phone": f"+86139{n:08d}"[:14],
            "team": "五华装维一班",
            "skills": ["broadband_install", "iptv_install", "repair", "move", "opportunity"],
            "districts": ["五华区"],
            "home": {"lat": 25.04, "lng": 102.70},
            "daily_capacity": 6,
            "shifts": None,
        }
        data.update(overrides)
        return create_engineer(data, actor=SYSTEM)

    return factory


@pytest.fixture
def make_order(ctx_app: Flask) -> Callable[..., Any]:
    """Create an order through the intake service (schema-validated like the real endpoint)."""
    from api.intake.schemas import OrderIntakeSchema
    from dispatch.services.intake import intake_order

    def factory(**overrides: Any) -> Any:
        data = OrderIntakeSchema().load(intake_payload(**overrides))
        order, _ = intake_order(data, actor=INTAKE_ACTOR)
        return db.session.merge(order, load=False)  # tests change the orders they make

    return factory


@pytest.fixture
def make_user(ctx_app: Flask, make_engineer: Callable[..., Any]) -> Callable[..., Any]:
    from dispatch.services.auth import create_user

    def factory(role: str = "dispatcher", *, username: str | None = None, engineer: Any = None) -> Any:
        name = username or f"{role}{next(_seq)}"
        code = None
        if role == "engineer":
            code = (engineer or make_engineer()).code
        return create_user(name, role=role, password="password123", engineer_code=code, actor=SYSTEM)

    return factory


@pytest.fixture
def token(client: FlaskClient, make_user: Callable[..., Any]) -> Callable[..., str]:
    """``token("dispatcher")`` → a bearer token for a fresh user of that role (``user=`` to reuse one)."""

    def factory(role: str = "dispatcher", *, user: Any = None, **kwargs: Any) -> str:
        user = user or make_user(role, **kwargs)
        if user.role == "engineer":
            response = client.post(
                "/mobile/v1/auth/token",
                json={"username": user.username, "password": "password123", "device_id": "pda-1"},
            )
        else:
            response = client.post(
                "/api/v1/auth/token", json={"username": user.username, "password": "password123"}
            )
        assert response.status_code == 200, response.get_json()
        return str(response.get_json()["access_token"])

    return factory


@pytest.fixture
def api_key(ctx_app: Flask) -> Callable[[str], str]:
    from dispatch.services.auth import create_api_key

    def factory(scope: str = "intake") -> str:
        raw, _ = create_api_key(f"{scope}-system", [scope], actor=SYSTEM)
        return raw

    return factory


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
