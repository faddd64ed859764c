"""dispatch.direct: a statement on the driver's cursor gives what Core's execution gives, errors included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from dispatch import direct
from dispatch.extensions import db
from dispatch.models import ApiKey, Customer, District
from dispatch.models.base import UTCDateTime

CUSTOMERS: sa.Table = Customer.__table__  # type: ignore[assignment]
KEYS: sa.Table = ApiKey.__table__  # type: ignore[assignment]
DISTRICTS: sa.Table = District.__table__  # type: ignore[assignment]
T = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)

# Every kind of value the hot path reads and binds: UTCDateTime both ways, JSON, float, integer, text, and a
# float column read as Decimal (a result processor picked by the driver's type code).
SCOPES = sa.select(KEYS.c.scopes).where(KEYS.c.prefix == sa.bindparam("prefix")).scalar_subquery()
LAT = sa.select(DISTRICTS.c.lat).where(DISTRICTS.c.name == sa.bindparam("district")).scalar_subquery()
STATEMENT = sa.select(
    CUSTOMERS.c.id,
    CUSTOMERS.c.name,
    CUSTOMERS.c.created_at,
    SCOPES.label("scopes"),
    LAT.label("lat"),
    sa.cast(sa.bindparam("ratio", type_=sa.Float), sa.Float(asdecimal=True)).label("ratio"),
).where(
    CUSTOMERS.c.phone == sa.bindparam("phone"),
    CUSTOMERS.c.created_at >= sa.bindparam("since", type_=UTCDateTime),
)


def seed() -> dict[str, Any]:
    conn = db.session.connection()
    conn.execute(CUSTOMERS.insert(), {"name": "张三", "phone": "+8613800138000", "created_at": T})
    conn.execute(
        KEYS.insert(),
        {
            "name": "hotline",
            "prefix": "abc123",
            "salt": "s",
            "key_hash": "h",
            "scopes": ["intake", "billing"],
            "created_at": T,
        },
    )
    district = conn.execute(sa.select(DISTRICTS.c.name).limit(1)).scalar_one()
    return {
        "prefix": "abc123",
        "district": district,
        "ratio": 0.25,
        "phone": "+8613800138000",
        "since": T - timedelta(hours=1),
    }


def test_a_row_is_what_core_execute_returns(app: Flask) -> None:
    params = seed()
    conn = db.session.connection()
    core = conn.execute(STATEMENT, params).one()
    row = direct.first(conn, STATEMENT, params)
    assert tuple(row) == tuple(core)
    assert [type(v) for v in row] == [type(v) for v in core]
    assert row._asdict() == dict(core._mapping)
    assert row.created_at == T and row.created_at.tzinfo is not None
    assert row.scopes == ["intake", "billing"]
    if conn.dialect.name == "postgresql":
        assert row.ratio == Decimal("0.25")
    assert direct.first(conn, STATEMENT, {**params, "phone": "+8613900139000"}) is None


def test_the_engines_cursor_listeners_see_the_statement(app: Flask) -> None:
    params = seed()
    seen: list[tuple[str, str]] = []
    with app.app_context():
        engine = db.engine

    # As a tracer does: a span kept on the context from the first call to the second.
    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        context.span = ("span", statement)
        assert context.statement == statement
        seen.append(("before", statement))

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        assert context.span == ("span", statement)
        seen.append(("after", statement))

    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)
    try:
        direct.first(db.session.connection(), STATEMENT, params)
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
        sa.event.remove(engine, "after_cursor_execute", after)
    assert [when for when, _ in seen] == ["before", "after"]
    assert all("FROM customers" in statement for _, statement in seen)


def test_a_constraint_violation_is_sqlalchemys_integrity_error(pg_app: Flask) -> None:
    seed()
    db.session.commit()
    duplicate = sa.select(
        CUSTOMERS.insert()
        .values(name=sa.bindparam("name"), phone=sa.bindparam("phone"), created_at=sa.bindparam("at"))
        .returning(CUSTOMERS.c.id)
        .cte("new_customer")
        .c.id
    )
    conn = db.session.connection()
    with pytest.raises(sa.exc.IntegrityError) as caught:
        direct.first(conn, duplicate, {"name": "李四", "phone": "+8613800138000", "at": T})
    assert not caught.value.connection_invalidated
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(CUSTOMERS)) == 1


def test_a_lost_connection_is_invalidated_and_raised_as_operational_error(pg_app: Flask) -> None:
    conn = db.session.connection()
    pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with db.engine.connect() as other:
        other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(sa.exc.OperationalError) as caught:
        direct.first(conn, sa.select(sa.literal(1).label("one")), {})
    assert caught.value.connection_invalidated
    assert conn.invalidated
    db.session.rollback()
    assert direct.first(db.session.connection(), sa.select(sa.literal(1).label("one")), {}).one == 1


def test_expanding_parameters_are_refused(pg_app: Flask) -> None:
    statement = sa.select(CUSTOMERS.c.id).where(CUSTOMERS.c.id.in_(sa.bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="non-expanding"):
        direct.first(db.session.connection(), statement, {"ids": [1, 2]})


def test_each_statement_keeps_its_own_cursor_for_the_connections_life(pg_app: Flask) -> None:
    """psycopg keeps a cursor's adapters only while it runs the same query again (dispatch.direct._cursor):
    statements taking turns must not share a cursor, nor get a new one each time."""
    params = seed()
    one = sa.select(sa.literal(1).label("one"))
    conn = db.session.connection()
    seen: list[Any] = []

    def before(conn: Any, cursor: Any, *args: Any) -> None:
        seen.append(cursor)

    sa.event.listen(db.engine, "before_cursor_execute", before)
    try:
        for _ in range(2):
            direct.first(conn, STATEMENT, params)
            direct.first(conn, one, {})
        # A replaced connection (this one lost, the pool opens another) gets cursors of its own.
        conn.invalidate()
        db.session.rollback()
        conn = db.session.connection()
        direct.first(conn, one, {})
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)
    first_cursor, second_cursor, again_first, again_second, replaced = seen
    assert first_cursor is again_first and second_cursor is again_second
    assert first_cursor is not second_cursor
    assert replaced is not second_cursor and replaced.connection is conn.connection.dbapi_connection
    assert not replaced.closed
