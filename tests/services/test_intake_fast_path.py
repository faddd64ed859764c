"""The intake fast path (dispatch/services/intake.py) writes with Core and answers without reading back.

These tests pin what that must not change: the rows are those the lifecycle writes (workflow.record_intake),
the order it returns is what a reload would read, nothing is read after the commit, a policy change applies
to the next order, and a lost customer race leaves no phantom rows in the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from api.intake.schemas import OrderIntakeSchema
from api.orders.schemas import OrderSchema
from dispatch import workflow
from dispatch.actors import Actor
from dispatch.extensions import db
from dispatch.models import Address, Customer, Order, OrderEvent, SlaClock, SlaPolicy
from dispatch.services import intake
from tests.conftest import INTAKE_ACTOR, bearer, intake_payload

CLOCK_FIELDS = ("clock", "status", "engineer_id", "target_seconds", "warn_percent", "started_at", "due_at")
EVENT_FIELDS = ("action", "from_status", "to_status", "actor_type", "actor_id", "actor_name", "source")


def load(**overrides: Any) -> dict[str, Any]:
    return OrderIntakeSchema().load(intake_payload(**overrides))  # type: ignore[no-any-return]


def columns(instance: Any) -> dict[str, Any]:
    return {attr.key: getattr(instance, attr.key) for attr in sa.inspect(type(instance)).column_attrs}


@pytest.mark.parametrize("order_type", ["broadband_install", "repair"])
def test_intake_writes_the_clock_and_event_that_the_lifecycle_writes(app: Flask, order_type: str) -> None:
    order, created = intake.intake_order(load(order_type=order_type), actor=INTAKE_ACTOR)
    assert created

    # The same order through the lifecycle's own code (ORM objects, workflow.record_intake, a flush).
    twin = Order(
        **{
            **{k: v for k, v in columns(order).items() if k not in ("id", "status", "version", "address_id")},
            "external_id": "TWIN-" + order.external_id,
            "customer": order.customer,
            "address": Address(**{k: v for k, v in columns(order.address).items() if k != "id"}),
        }
    )
    db.session.add(twin)
    payload = {"external_id": order.external_id, "order_type": order.order_type, "pay_mode": order.pay_mode}
    workflow.record_intake(twin, INTAKE_ACTOR, now=order.created_at, payload=payload)
    db.session.flush()

    def clocks_of(order_id: int) -> list[tuple[Any, ...]]:
        rows = db.session.scalars(
            sa.select(SlaClock).where(SlaClock.order_id == order_id).order_by(SlaClock.id)
        )
        return [(*(getattr(r, f) for f in CLOCK_FIELDS), r.warn_at) for r in rows]

    def events_of(order_id: int) -> list[tuple[Any, ...]]:
        rows = db.session.scalars(sa.select(OrderEvent).where(OrderEvent.order_id == order_id))
        return [
            (*(getattr(r, f) for f in EVENT_FIELDS), r.occurred_at, r.device_time, r.payload) for r in rows
        ]

    db.session.expire_all()
    assert clocks_of(order.id) == clocks_of(twin.id)
    assert events_of(order.id) == events_of(twin.id)
    assert (order.status, order.created_at, order.updated_at, order.version) == (
        twin.status,
        twin.created_at,
        twin.updated_at,
        twin.version,
    )


@pytest.mark.parametrize("known_customer", [False, True])
def test_the_returned_order_is_what_a_reload_reads(app: Flask, known_customer: bool) -> None:
    phone = "13912345678"
    if known_customer:
        intake.intake_order(load(customer={"name": "王五", "phone": phone}), actor=INTAKE_ACTOR)
        db.session.expunge_all()  # the customer is known to the database, not to this session
    order, _ = intake.intake_order(
        load(customer={"name": "赵六", "phone": phone}, address={"text": "x路1号", "district": "五华区"}),
        actor=INTAKE_ACTOR,
    )
    returned = OrderSchema().dump(order)
    rows = {
        "order": columns(order),
        "customer": columns(order.customer),
        "address": columns(order.address),
        "clocks": [columns(c) for c in order.sla_clocks],
    }

    db.session.expunge_all()
    fresh = db.session.get(Order, order.id)
    assert fresh is not None and fresh is not order
    assert OrderSchema().dump(fresh) == returned
    assert rows == {
        "order": columns(fresh),
        "customer": columns(fresh.customer),
        "address": columns(fresh.address),
        "clocks": [columns(c) for c in fresh.sla_clocks],
    }
    assert returned["customer"]["name"] == ("王五" if known_customer else "赵六")


@contextlib.contextmanager
def sent_statements() -> Iterator[list[str]]:
    """The statements sent on the session's bind meanwhile (whitespace collapsed, upper case)."""
    statements: list[str] = []

    def trace(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    engine = db.session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", trace)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", trace)


@pytest.mark.parametrize("known_customer", [False, True])
def test_the_answer_to_a_new_order_is_what_a_reload_dumps(
    app: Flask, api_key: Callable[[str], str], known_customer: bool
) -> None:
    """The HTTP edge dumps a new order from the rows written (intake.Written.view), not from ORM objects:
    the same JSON as the order read back, field for field."""
    key = api_key("intake")
    client = app.test_client()
    phone = "13912345670"
    if known_customer:
        first = client.post(
            "/api/v1/intake/orders",
            json=intake_payload(customer={"name": "王五", "phone": phone}),
            headers=bearer(key),
        )
        assert first.status_code == 201
    body = intake_payload(
        customer={"name": "赵六", "phone": phone},
        notes="客户要求上午上门",
        requested_window={"start": "2026-03-03T09:00:00+08:00", "end": "2026-03-03T12:00:00+08:00"},
    )

    response = client.post("/api/v1/intake/orders", json=body, headers=bearer(key))

    assert response.status_code == 201, response.get_json()
    db.session.expunge_all()
    fresh = db.session.get(Order, response.get_json()["id"])
    assert fresh is not None
    assert response.get_json() == OrderSchema().dump(fresh)
    assert response.get_json()["customer"]["name"] == ("王五" if known_customer else "赵六")


def test_an_intake_request_reads_nothing_back_after_its_writes(
    app: Flask, api_key: Callable[[str], str]
) -> None:
    key = api_key("intake")
    engine = db.session.get_bind()
    with sent_statements() as statements:
        response = app.test_client().post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(key))

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["sla"][0]["clock"] == "completion"
    writes = [s for s in statements if s.startswith(("INSERT", "WITH"))]
    # PostgreSQL: the customer, address, order, clock, event and KPI delta in one statement (one round trip).
    assert len(writes) == (1 if engine.dialect.name == "postgresql" else 6), writes
    last_insert = max(i for i, s in enumerate(statements) if s.startswith(("INSERT", "WITH")))
    assert not [s for s in statements[last_insert:] if s.startswith("SELECT")], statements


def test_an_order_intake_with_a_key_seen_before_reads_no_key_of_its_own(
    app: Flask, api_key: Callable[[str], str]
) -> None:
    """The first request reads its key; the next one takes it from memory and confirms it in the lookup,
    whose one row joins the key by id (auth.confirm_key): the lookup and the write, nothing else before."""
    key = api_key("intake")
    client = app.test_client()
    engine = db.session.get_bind()
    with sent_statements() as statements:
        for _ in range(2):
            first = len(statements)
            response = client.post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(key))
            assert response.status_code == 201, response.get_json()

    key_reads = [s for s in statements if s.startswith("SELECT API_KEYS.")]
    assert len(key_reads) == 1 and statements.index(key_reads[0]) < first, statements
    lookups = [s for s in statements[first:] if s.startswith("SELECT ORDERS.ID AS ORDER_ID")]
    assert len(lookups) == 1 and "LEFT OUTER JOIN API_KEYS ON API_KEYS.ID =" in lookups[0], statements
    if engine.dialect.name == "postgresql":
        # The lookup and the one-statement write (the test's savepoints aside).
        sent = [s for s in statements[first:] if not s.startswith(("SAVEPOINT", "RELEASE"))]
        assert [s.split()[0] for s in sent] == ["SELECT", "WITH"], sent


def test_a_policy_change_applies_to_the_next_order(app: Flask) -> None:
    first, _ = intake.intake_order(load(), actor=INTAKE_ACTOR)
    policy = db.session.get(SlaPolicy, ("broadband_install", "completion"))
    assert policy is not None and first.sla_clocks[0].target_seconds == policy.target_seconds
    db.session.execute(
        sa.update(SlaPolicy)
        .where(SlaPolicy.order_type == "broadband_install", SlaPolicy.clock == "completion")
        .values(target_seconds=3600, warn_percent=50)
    )
    db.session.expunge_all()  # as another process would see it: no policy object held in the session

    second, _ = intake.intake_order(load(), actor=INTAKE_ACTOR)

    clock = second.sla_clocks[0]
    assert (clock.target_seconds, clock.warn_percent) == (3600, 50)
    assert (clock.due_at - clock.started_at).total_seconds() == 3600
    assert (clock.warn_at - clock.started_at).total_seconds() == 1800


def test_a_created_order_is_detached_and_loaded_a_replay_is_the_sessions(app: Flask) -> None:
    """intake_order's contract: the created order and what it holds are not in the session, and every
    column is loaded (an attribute missing would raise, not read as None); a replay's is the session's."""
    data = load()
    order, created = intake.intake_order(data, actor=INTAKE_ACTOR)
    assert created
    for obj in (order, order.customer, order.address, *order.sla_clocks):
        state = sa.inspect(obj)
        assert state.detached and obj not in db.session
        assert not state.unloaded & {attr.key for attr in state.mapper.column_attrs}
    again, created = intake.intake_order(data, actor=INTAKE_ACTOR)
    assert not created and again.id == order.id and sa.inspect(again).persistent
    merged = db.session.merge(order, load=False)  # how a caller that changes it takes it in
    assert sa.inspect(merged).persistent and merged is again


def stale_first_lookup(monkeypatch: pytest.MonkeyPatch, **hidden: None) -> list[int]:
    """The first lookup misses what ``hidden`` names, as if another request wrote it meanwhile."""
    real_lookup = intake._lookup
    calls: list[int] = []

    def lookup(conn: sa.Connection, data: dict[str, Any], actor: Actor) -> Any:
        row = real_lookup(conn, data, actor)
        calls.append(1)
        return SimpleNamespace(**{**row._asdict(), **hidden}) if len(calls) == 1 else row

    monkeypatch.setattr(intake, "_lookup", lookup)
    return calls


def assert_no_phantoms() -> None:
    """Every customer, address and order the session holds is a row in the database."""
    held = [obj for obj in db.session.identity_map.values() if isinstance(obj, Customer | Address | Order)]
    for obj in held:
        assert sa.inspect(obj).persistent
        table = type(obj).__table__
        assert (
            db.session.scalar(sa.select(sa.func.count()).select_from(table).where(table.c.id == obj.id)) == 1
        )


def test_a_lost_customer_race_retries_with_the_customer_the_database_has(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    phone = "13987654321"
    existing, _ = intake.intake_order(load(customer={"name": "王五", "phone": phone}), actor=INTAKE_ACTOR)
    customer_id = existing.customer.id
    db.session.expunge_all()
    calls = stale_first_lookup(monkeypatch, customer_id=None, customer_name=None, customer_created_at=None)

    order, created = intake.intake_order(load(customer={"name": "赵六", "phone": phone}), actor=INTAKE_ACTOR)

    assert created and len(calls) == 2
    assert order.customer.id == customer_id and order.customer.name == "王五"
    assert_no_phantoms()
    count = sa.select(sa.func.count()).select_from(Customer).where(Customer.phone == "+86" + phone)
    assert db.session.scalar(count) == 1


def test_a_lost_replay_race_returns_the_first_order_and_forgets_its_own_rows(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load()
    first, _ = intake.intake_order(data, actor=INTAKE_ACTOR)
    addresses = db.session.scalar(sa.select(sa.func.count()).select_from(Address))
    db.session.expunge_all()
    calls = stale_first_lookup(monkeypatch, order_id=None, order_fingerprint=None)

    again, created = intake.intake_order(data, actor=INTAKE_ACTOR)

    assert not created and len(calls) == 2
    assert again.id == first.id
    assert_no_phantoms()  # the address written before the order's INSERT failed was rolled back and forgotten
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Address)) == addresses


def test_the_write_statement_stays_within_psycopg_s_parse_cache(
    app: Flask, api_key: Callable[[str], str]
) -> None:
    """psycopg parses a statement's placeholders anew on every execution when the statement is longer than
    4096 bytes or has more than 50 parameters (psycopg._queries); that parse cost the intake more CPU than the
    rest of its write. The largest shape: a new customer, a requested window, notes, a given position."""
    if db.session.get_bind().dialect.name != "postgresql":
        pytest.skip("the one-statement write is PostgreSQL's")
    from psycopg import _queries

    key = api_key("intake")
    sent: list[tuple[str, Any]] = []

    def trace(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("WITH"):
            sent.append((statement, parameters))

    engine = db.session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", trace)
    try:
        body = intake_payload(notes="客户要求上午上门", priority="urgent")
        response = app.test_client().post("/api/v1/intake/orders", json=body, headers=bearer(key))
    finally:
        sa.event.remove(engine, "before_cursor_execute", trace)

    assert response.status_code == 201, response.get_json()
    ((statement, parameters),) = sent
    assert "INSERT INTO customers" in statement
    assert len(statement.encode()) <= _queries.MAX_CACHED_STATEMENT_LENGTH, len(statement.encode())
    assert len(parameters) <= _queries.MAX_CACHED_STATEMENT_PARAMS, len(parameters)


@pytest.mark.parametrize(
    ("order_type", "known_customer", "write_in_transaction"),
    [
        ("broadband_install", False, False),
        ("repair", False, False),
        ("broadband_install", True, False),
        ("repair", True, True),
    ],
)
def test_on_postgresql_an_order_intake_pays_for_no_transaction_unless_it_writes_more_than_one_statement(
    pg_app: Flask,
    api_key: Callable[[str], str],
    order_type: str,
    known_customer: bool,
    write_in_transaction: bool,
) -> None:
    """With a key seen before (its first request reads it in a transaction, and that request's intake runs in
    it), the lookup runs as a statement of its own and the one-statement write commits itself (no BEGIN, no
    COMMIT); a repair of a known customer, which may also mark earlier repairs, is written in one transaction
    with those marks."""
    key = api_key("intake")
    client = pg_app.test_client()
    phone = "13900001111"
    first = client.post(
        "/api/v1/intake/orders",
        json=intake_payload(customer={"name": "王五", "phone": phone if known_customer else "13900002222"}),
        headers=bearer(key),
    )
    assert first.status_code == 201
    sent: list[tuple[str, bool]] = []

    def trace(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append((" ".join(statement.split()[:3]).upper(), conn.connection.driver_connection.autocommit))

    engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", trace)
    try:
        response = client.post(
            "/api/v1/intake/orders",
            json=intake_payload(order_type=order_type, customer={"name": "王五", "phone": phone}),
            headers=bearer(key),
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", trace)

    assert response.status_code == 201, response.get_json()
    write = next(i for i, (text, _) in enumerate(sent) if text.startswith("WITH"))
    assert [text for text, _ in sent[:write]] == ["SELECT ORDERS.ID AS"], sent  # the lookup, no key read
    assert all(autocommit for _, autocommit in sent[:write]), sent
    assert [autocommit for _, autocommit in sent[write:]] == [not write_in_transaction] * len(sent[write:])
    assert len(sent[write:]) == (2 if write_in_transaction else 1), sent  # the marks' lookup in the same one
    order = db.session.get(Order, response.get_json()["id"])
    assert order is not None and order.sla_clocks[0].clock == "completion"
