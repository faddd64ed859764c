"""Hotline intake (I受理): create an order exactly once per ``external_id``, whatever the retries.

Every hotline order passes here, so the path is kept short (shared/QUALITY.md "Speed and scale", row 1):

* one lookup statement reads everything the request depends on: the order already created for the
  ``external_id`` (id and fingerprint only), the district, the customer of that phone, the SLA policy of
  the clock the intake starts and the caller's API key, which the edge takes from the process's memory once
  it has read it (auth.confirm_key: a key revoked meanwhile is refused here, before anything is written);
* the customer (if new), the address, the order, its completion clock, its ``intake`` event and its KPI
  delta are written with Core in one transaction (the models' tables are the schema): on PostgreSQL in one
  statement of data-modifying CTEs, elsewhere one ``INSERT ... RETURNING id`` per row; as
  :func:`dispatch.workflow.record_intake` would write them (tests/services/test_intake_fast_path.py holds the
  two to the same rows);
* nothing is read back after the commit: the HTTP edge dumps the rows as written (:func:`receive_order`,
  :meth:`Written.view`: building ORM objects from them cost an intake about 7 % of its web-worker
  instructions, bench/support/count_intake.py); :func:`intake_order` gives other callers the same rows as
  detached ORM objects, loaded as a reload would load them (not added to the session: the commit has
  nothing of them to expire);
* on PostgreSQL an intake whose request has not begun a transaction (the API key came from memory) runs on a
  pooled connection of its own on which each statement is its own transaction (:func:`_own_connection`):
  the lookup is a statement of its own and the one-statement write commits itself, so no ``BEGIN`` and
  ``COMMIT`` round trips are paid, nor the session's transaction bookkeeping (about 6 % of an intake's
  web-worker instructions). An order that writes more than that one statement (a repair of a known
  customer, which may mark earlier repairs as repeated) is written in the session's transaction, as every
  order is elsewhere.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import class_mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_dict, set_committed_value

from dispatch import direct
from dispatch.actors import INTAKE, Actor, require
from dispatch.clock import utcnow
from dispatch.errors import Conflict, ValidationError
from dispatch.extensions import db
from dispatch.models import Address, ApiKey, Customer, District, Order, OrderEvent, SlaClock, SlaPolicy
from dispatch.reporting import rollup
from dispatch.services import auth, dispatching
from dispatch.sla import clocks
from dispatch.sla import policy as arithmetic

MAX_ATTEMPTS = 3
# The clock the intake transition starts (dispatch.sla.clocks, HANDLERS["intake"]).
INTAKE_CLOCK = "completion"

_ORDERS: sa.Table = Order.__table__  # type: ignore[assignment]
_CUSTOMERS: sa.Table = Customer.__table__  # type: ignore[assignment]
_ADDRESSES: sa.Table = Address.__table__  # type: ignore[assignment]
_CLOCKS: sa.Table = SlaClock.__table__  # type: ignore[assignment]
_EVENTS: sa.Table = OrderEvent.__table__  # type: ignore[assignment]
_DISTRICTS: sa.Table = District.__table__  # type: ignore[assignment]
_POLICIES: sa.Table = SlaPolicy.__table__  # type: ignore[assignment]
_API_KEYS: sa.Table = ApiKey.__table__  # type: ignore[assignment]


# One row, one round trip: one row of nothing, outer-joined to each row the request depends on by its primary
# key or a unique index (NULLs: no such row), so at most one row each and exactly one row in all.
# The policy is read in the order's transaction, so a change applies to every order taken in afterwards.
# The caller's API key confirms the key the request authenticated with (auth.confirm_key: the edge may have
# taken it from memory).
_ONE = sa.select(sa.literal_column("1").label("one")).subquery("one")
_LOOKUP = sa.select(
    _ORDERS.c.id.label("order_id"),
    _ORDERS.c.intake_fingerprint.label("order_fingerprint"),
    _DISTRICTS.c.id.label("district_id"),
    _DISTRICTS.c.lat.label("district_lat"),
    _DISTRICTS.c.lng.label("district_lng"),
    _CUSTOMERS.c.id.label("customer_id"),
    _CUSTOMERS.c.name.label("customer_name"),
    _CUSTOMERS.c.created_at.label("customer_created_at"),
    _POLICIES.c.target_seconds.label("policy_target_seconds"),
    _POLICIES.c.warn_percent.label("policy_warn_percent"),
    _API_KEYS.c.id.label("key_id"),
    _API_KEYS.c.revoked_at.label("key_revoked_at"),
).select_from(
    _ONE.outerjoin(_ORDERS, _ORDERS.c.external_id == sa.bindparam("external_id"))
    .outerjoin(_DISTRICTS, _DISTRICTS.c.name == sa.bindparam("district"))
    .outerjoin(_CUSTOMERS, _CUSTOMERS.c.phone == sa.bindparam("phone"))
    .outerjoin(
        _POLICIES,
        sa.and_(
            _POLICIES.c.order_type == sa.bindparam("order_type"), _POLICIES.c.clock == sa.bindparam("clock")
        ),
    )
    .outerjoin(_API_KEYS, _API_KEYS.c.id == sa.bindparam("api_key_id"))
)
# The columns of a new order that intake leaves empty. A column with a default that intake does not set stays
# out of the INSERT (so its default applies) and is read back the first time it is used.
_ORDER_NULLS = dict.fromkeys(
    column.key
    for column in _ORDERS.c
    if not column.primary_key and column.default is None and column.server_default is None
)

_T = TypeVar("_T")


def fingerprint(data: dict[str, Any]) -> str:
    """SHA-256 of the canonical request: equal for the same order however its JSON was written."""

    def default(value: Any) -> str:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        raise TypeError(type(value).__name__)

    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=default)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _own_connection() -> sa.Connection | None:
    """On PostgreSQL, for a request whose session has not begun a transaction (nothing read or written yet;
    not a test's or a CLI batch's session joined to a connection's own transaction): a pooled connection of
    the intake's own on which every statement is its own transaction. Under READ COMMITTED every statement
    has its own snapshot in a transaction too, so the lookup sees what it would have seen, and the write is
    one atomic statement. Otherwise None: the intake runs in the session's transaction."""
    session = db.session()
    bind = session.get_bind()
    if session.in_transaction() or isinstance(bind, sa.Connection) or bind.dialect.name != "postgresql":
        return None
    return bind.connect().execution_options(isolation_level="AUTOCOMMIT")


def intake_order(data: dict[str, Any], *, actor: Actor) -> tuple[Order, bool]:
    """Create the order described by ``data`` (validated by the intake schema) → ``(order, created)``.

    A created order is detached, with its customer, address and SLA clock, all loaded as written: to change
    it, take it into a session (``db.session.merge(order, load=False)``). A replay with the same content
    returns the first order, from the session (``created`` False); the same ``external_id`` with other
    content is a 409. Concurrent retries race on the unique ``external_id`` (and requests for a new customer
    on the unique phone): the loser rolls back and looks again, finding the winner's order (or customer).
    """
    order, created = receive_order(data, actor=actor)
    return (order.orm() if isinstance(order, Written) else order), created


def receive_order(data: dict[str, Any], *, actor: Actor) -> tuple[Written | Order, bool]:
    """:func:`intake_order` for a caller that only reads the order (the HTTP edge, which dumps it): an order
    created here is returned as its rows (:class:`Written`), without building ORM objects from them."""
    require(actor, INTAKE, "submit orders")
    own = _own_connection()
    try:
        return _receive(own, data, actor)
    finally:
        if own is not None:
            own.close()


def _receive(own: sa.Connection | None, data: dict[str, Any], actor: Actor) -> tuple[Written | Order, bool]:
    """:func:`receive_order` on the intake's own autocommitting connection ``own``, or in the session's
    transaction (``own`` None, and for an order that writes more than the one statement)."""
    digest = fingerprint(data)
    address = data["address"]
    failure: IntegrityError | None = None
    for attempt in range(MAX_ATTEMPTS + 1):
        found = _lookup(own or db.session.connection(), data, actor)
        auth.confirm_key(actor, found.key_id, found.key_revoked_at)
        if found.order_id is not None:
            if found.order_fingerprint != digest:
                raise Conflict(
                    f"external_id {data['external_id']} was already used for a different order",
                    order_id=found.order_id,
                )
            replayed = db.session.get(Order, found.order_id)
            assert replayed is not None
            return replayed, False
        if failure is not None and attempt == MAX_ATTEMPTS:
            raise failure  # a customer-phone race that keeps losing: let the edge map it
        if found.district_id is None and (address.get("lat") is None or address.get("lng") is None):
            message = f"Unknown district {address['district']!r}; give lat and lng."
            raise ValidationError(errors={"address": {"district": [message]}})
        # More than the one statement to write (rollup.mark_repeat_repairs): in the session's transaction, so
        # that the order and its marks commit together.
        alone = own if own is not None and not _may_mark_repeats(data["order_type"], found) else None
        try:
            order = _create(alone or db.session.connection(), data, digest, found, actor)
            if alone is None:
                db.session.commit()
        except IntegrityError as exc:
            if alone is None:
                db.session.rollback()
            failure = exc
            continue
        if current_app.config.get("AUTO_DISPATCH"):
            # After the order's own commit: the order exists whatever dispatching does; nobody qualified →
            # it stays new and the scheduler's auto-dispatch sweep tries again. Either way the order is
            # answered as it is now.
            dispatching.try_auto_dispatch(order.id, expect_status="new")
            current = db.session.get(Order, order.id)
            assert current is not None
            return current, True
        return order, True
    raise AssertionError("unreachable")


def _may_mark_repeats(order_type: str, found: Any) -> bool:
    """A customer seen before may have had a repair that did not hold (first-time fix): a lookup only then."""
    return order_type == "repair" and found.customer_id is not None


def _lookup(conn: sa.Connection, data: dict[str, Any], actor: Actor) -> Any:
    """The lookup's one row (attributes named as the labels of :data:`_LOOKUP`)."""
    params = {
        "api_key_id": actor.id if actor.key_from_memory else None,
        "external_id": data["external_id"],
        "district": data["address"]["district"],
        "phone": data["customer"]["phone"],
        "order_type": data["order_type"],
        "clock": INTAKE_CLOCK,
    }
    return direct.first(conn, _LOOKUP, params)


def _create(conn: sa.Connection, data: dict[str, Any], digest: str, found: Any, actor: Actor) -> Written:
    """Write the order's rows on ``conn`` (the caller commits) and return them."""
    now = utcnow()
    customer_data, address_data = data["customer"], data["address"]
    has_position = address_data.get("lat") is not None and address_data.get("lng") is not None
    known = found.district_id is not None
    window = data.get("requested_window") or {}
    rows: dict[str, dict[str, Any]] = {}
    if found.customer_id is None:
        rows["customer"] = {"name": customer_data["name"], "phone": customer_data["phone"], "created_at": now}
    rows["address"] = {
        "customer_id": found.customer_id,
        "text": address_data["text"],
        "district_name": address_data["district"],
        "district_id": found.district_id,
        "lat": address_data["lat"] if has_position else (found.district_lat if known else None),
        "lng": address_data["lng"] if has_position else (found.district_lng if known else None),
        "location_source": "intake" if has_position else "centroid",
        # The scheduler's geocoding job replaces the centroid later; intake never waits for a geocoder.
        "geocode_next_at": None if has_position else now,
        "geocode_attempts": 0,
    }
    rows["order"] = {
        **_ORDER_NULLS,
        "external_id": data["external_id"],
        "order_type": data["order_type"],
        "pay_mode": data["pay_mode"],
        "priority": data.get("priority", "normal"),
        "status": "new",  # as workflow.record_intake sets them: the first status, created and updated now
        "created_at": now,
        "updated_at": now,
        "customer_id": found.customer_id,
        "requested_start": _utc(window.get("start")),
        "requested_end": _utc(window.get("end")),
        "products": list(data.get("products") or []),
        "notes": data.get("notes"),
        "intake_fingerprint": digest,
        "version": 1,
    }
    # The clock the intake transition starts, under the policy row the lookup read (no row: clock_row asks
    # policy_for, which falls back to the defaults).
    policy = None
    if found.policy_target_seconds is not None:
        policy = arithmetic.Policy(found.policy_target_seconds, found.policy_warn_percent)
    rows["clock"] = clocks.clock_row(_row_object(Order, rows["order"]), INTAKE_CLOCK, now, policy)
    # The intake event, as workflow.record_event writes it (the order's events are not part of the response).
    rows["event"] = {
        "order_id": None,
        "action": "intake",
        "from_status": None,
        "to_status": "new",
        "actor_type": actor.kind,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "source": actor.source,
        "occurred_at": now,
        "device_time": None,
        "payload": {
            "external_id": data["external_id"],
            "order_type": data["order_type"],
            "pay_mode": data["pay_mode"],
        },
    }
    (rows["delta"],) = rollup.intake_deltas(data["order_type"], address_data["district"], now)
    ids = _write(conn, rows)

    if found.customer_id is None:
        customer = {**rows["customer"], "id": ids["customer"]}
    else:  # the customer the lookup found (its name stays)
        customer = {
            "id": found.customer_id,
            "name": found.customer_name,
            "phone": customer_data["phone"],
            "created_at": _utc(found.customer_created_at),
        }
    customer_id = customer["id"]
    written = Written(
        order={**rows["order"], "id": ids["order"], "customer_id": customer_id, "address_id": ids["address"]},
        customer=customer,
        address={**rows["address"], "id": ids["address"], "customer_id": customer_id},
        clock={**rows["clock"], "id": ids["clock"], "order_id": ids["order"]},
    )
    if _may_mark_repeats(data["order_type"], found):
        rollup.mark_repeat_repairs(customer_id, ids["order"], now)
    return written


@dataclass(frozen=True)
class Written:
    """A new order's rows as :func:`_create` wrote them (column values by column name, ids filled in): the
    order, its customer (the lookup's, if known), its address and its completion clock."""

    order: dict[str, Any]
    customer: dict[str, Any]
    address: dict[str, Any]
    clock: dict[str, Any]

    @property
    def id(self) -> int:
        return int(self.order["id"])

    def view(self) -> SimpleNamespace:
        """The order with its customer, address, engineer (none) and clocks as plain attributes, for a
        schema to dump (api.orders.schemas.OrderSchema reads attributes): no ORM state to build."""
        customer = SimpleNamespace(**self.customer)
        return SimpleNamespace(
            **self.order,
            customer=customer,
            address=SimpleNamespace(**self.address, customer=customer),
            engineer=None,
            sla_clocks=[SimpleNamespace(**self.clock)],
        )

    def orm(self) -> Order:
        """The order as detached ORM objects, loaded as written (an attribute not written raises rather than
        reading as None), as a reload would read them."""
        customer = _loaded(_row_object(Customer, self.customer))
        address = _loaded(_row_object(Address, self.address))
        set_committed_value(address, "customer", customer)
        order = _loaded(_row_object(Order, self.order))
        set_committed_value(order, "customer", customer)
        set_committed_value(order, "address", address)
        set_committed_value(order, "engineer", None)
        set_committed_value(order, "sla_clocks", [_loaded(_row_object(SlaClock, self.clock))])
        return order


# --- writing the rows ---------------------------------------------------------------------------------
# The rows one order takes, in the order they are written; each link is a foreign key the write fills in
# with the id of a row written before it (a known customer's id is in the row already).
_TABLES: dict[str, sa.Table] = {
    "customer": _CUSTOMERS,
    "address": _ADDRESSES,
    "order": _ORDERS,
    "clock": _CLOCKS,
    "event": _EVENTS,
    "delta": rollup.DELTAS,
}
_LINKS = {
    "address": {"customer_id": "customer"},
    "order": {"customer_id": "customer", "address_id": "address"},
    "clock": {"order_id": "order"},
    "event": {"order_id": "order"},
}
_WITH_ID = ("customer", "address", "order", "clock")  # the rows whose ids the response needs


def _write(conn: sa.Connection, rows: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Insert ``rows`` (named as :data:`_TABLES`) → the new ids, by row name.

    On PostgreSQL in one statement (data-modifying CTEs, one round trip: every statement costs the web worker
    and the database about as much CPU as the row itself); elsewhere one INSERT per row."""
    if conn.dialect.name == "postgresql":
        # A column left None that has no default is NULL whether it is written or not: it stays out of the
        # statement, which keeps the statement short enough (and its parameters few enough) for psycopg to
        # cache its parsed form (psycopg._queries: 4096 bytes, 50 parameters); parsing it anew costs more
        # than the rest of the write.
        kept = {
            name: {
                key: value for key, value in values.items() if value is not None or key in _DEFAULTED[name]
            }
            for name, values in rows.items()
        }
        shape = tuple((name, frozenset(values)) for name, values in kept.items())
        params = {f"{name}_{key}": value for name, values in kept.items() for key, value in values.items()}
        return direct.first(conn, _one_statement(shape), params)._asdict()  # type: ignore[no-any-return]
    ids: dict[str, int] = {}
    for name, values in rows.items():
        table = _TABLES[name]
        values = {
            **values,
            **{column: ids[row] for column, row in _LINKS.get(name, {}).items() if row in ids},
        }
        if name in _WITH_ID:
            ids[name] = conn.execute(table.insert().returning(table.c.id), values).scalar_one()
        else:
            conn.execute(table.insert(), values)
    return ids


# Per row, the columns with a default: written even when None (leaving them out would apply the default).
_DEFAULTED = {
    name: frozenset(c.key for c in table.c if c.default is not None or c.server_default is not None)
    for name, table in _TABLES.items()
}


@functools.cache
def _one_statement(shape: tuple[tuple[str, frozenset[str]], ...]) -> sa.Select[Any]:
    """``WITH new_customer AS (INSERT ... RETURNING id), new_address AS (INSERT ... (SELECT id FROM
    new_customer) ...), ... SELECT`` the new ids, for rows named as :data:`_TABLES` with the given columns
    bound: built once per shape (with or without a new customer, a requested window, notes ...)."""
    written: dict[str, Any] = {}
    tails = []
    bound = dict(shape)
    for name, table in _TABLES.items():
        if name not in bound:
            continue
        links = _LINKS.get(name, {})
        values = {
            column.key: (
                sa.select(written[links[column.key]].c.id).scalar_subquery()
                if links.get(column.key) in written
                else sa.bindparam(f"{name}_{column.key}", type_=column.type)
            )
            for column in table.c
            if links.get(column.key) in written or column.key in bound[name]
        }
        insert = table.insert().values(values)
        if name in _WITH_ID:
            written[name] = insert.returning(table.c.id).cte(f"new_{name}")
        else:
            tails.append(insert.cte(f"new_{name}"))
    # Each id as a scalar subquery: one row, no FROM list (a cross join of one-row CTEs warns as a cartesian
    # product).
    ids = (sa.select(cte.c.id).scalar_subquery().label(name) for name, cte in written.items())
    return sa.select(*ids).add_cte(*tails)


def _row_object(cls: type[_T], values: dict[str, Any]) -> _T:
    """A transient ``cls`` holding ``values`` (column values only), put straight into its state as the ORM's
    loader fills an object it reads: the constructor's event per attribute cost more than the write."""
    instance: _T = class_mapper(cls).class_manager.new_instance()
    instance_dict(instance).update(values)
    return instance


def _loaded(instance: _T) -> _T:
    """``instance`` (a row as just written: its key and every column set) as a detached, loaded object: an
    attribute it was not given raises instead of reading as None."""
    make_transient_to_detached(instance)
    return instance


def _utc(value: datetime | None) -> datetime | None:
    """As the database gives it back (UTCDateTime): aware, in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
