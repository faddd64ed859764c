"""The services enforce roles themselves: a wrong-role actor gets PermissionDenied whatever the caller
(API, CLI, scheduler), and nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from api.intake.schemas import OrderIntakeSchema
from dispatch.actors import Actor
from dispatch.errors import NotFound, PermissionDenied
from dispatch.extensions import db
from dispatch.models import ApiKey, Engineer, Order, OrderEvent, User
from dispatch.services import auth, dispatching, engineers, intake, orders
from tests.conftest import SYSTEM, intake_payload


def user(role: str, *, engineer_id: int | None = None) -> Actor:
    return Actor(kind="user", id=900, name=f"{role}-actor", role=role, engineer_id=engineer_id)


def key(*scopes: str) -> Actor:
    return Actor(kind="api_key", id=901, name="system-key", scopes=frozenset(scopes))


def label(value: Any) -> str:
    if isinstance(value, Actor):
        return value.role or "+".join(sorted(value.scopes))
    return str(value)


DISPATCHER = user("dispatcher")


def event_count(order_id: int) -> int:
    return db.session.scalar(sa.select(sa.func.count()).where(OrderEvent.order_id == order_id)) or 0


@pytest.fixture
def order(make_order) -> Order:
    return make_order()


# --- orders ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", [key("billing"), key("intake"), user("nobody-role")], ids=label)
def test_reading_orders_needs_a_desk_role(app, order, actor):
    with pytest.raises(PermissionDenied):
        orders.list_orders(orders.OrderFilters(), page=1, page_size=10, actor=actor)
    with pytest.raises(PermissionDenied):
        orders.get_order(order.id, actor=actor)


@pytest.mark.parametrize("role", ["dispatcher", "acceptance", "manager", "admin"])
def test_desk_roles_read_orders(app, order, role):
    items, total = orders.list_orders(orders.OrderFilters(), page=1, page_size=10, actor=user(role))
    assert total == 1 and items[0].id == order.id
    assert orders.get_order(order.id, actor=user(role)).id == order.id


@pytest.mark.parametrize(
    "actor", [user("manager"), user("acceptance"), key("intake"), key("billing")], ids=label
)
def test_only_the_desk_assigns(app, order, make_engineer, actor):
    engineer = make_engineer()
    before = event_count(order.id)
    with pytest.raises(PermissionDenied):
        dispatching.assign_order(order.id, engineer.id, actor=actor)
    db.session.refresh(order)
    assert order.status == "new" and order.engineer_id is None
    assert event_count(order.id) == before


def test_the_scheduler_may_assign(app, order, make_engineer):
    engineer = make_engineer()
    assigned, _ = dispatching.assign_order(order.id, engineer.id, actor=SYSTEM)
    assert assigned.status == "dispatched" and assigned.engineer_id == engineer.id


@pytest.mark.parametrize(
    ("call", "actor"),
    [
        ("cancel", user("manager")),
        ("cancel", user("acceptance")),
        ("cancel", key("billing")),
        ("suspend", user("manager")),
        ("suspend", key("intake")),
        ("acceptance", user("manager")),
        ("acceptance", user("admin")),
        ("acceptance", key("intake")),
    ],
    ids=label,
)
def test_wrong_role_cannot_change_an_order(app, order, call, actor):
    before = event_count(order.id)
    calls: dict[str, Any] = {
        "cancel": lambda: orders.cancel_order(order.id, reason="x", actor=actor),
        "suspend": lambda: orders.suspend_order(
            order.id, reason_code="customer_postponed", note=None, until=None, actor=actor
        ),
        "acceptance": lambda: orders.decide_acceptance(order.id, decision="approve", note=None, actor=actor),
    }
    with pytest.raises(PermissionDenied):
        calls[call]()
    db.session.refresh(order)
    assert order.status == "new"
    assert event_count(order.id) == before


def test_resume_is_for_the_desk_not_managers(app, order):
    orders.suspend_order(order.id, reason_code="customer_postponed", note=None, until=None, actor=DISPATCHER)
    with pytest.raises(PermissionDenied):
        orders.resume_order(order.id, note=None, actor=user("manager"))
    db.session.refresh(order)
    assert order.status == "suspended"
    assert orders.resume_order(order.id, note=None, actor=DISPATCHER).status == "new"


def test_the_intake_system_may_cancel_an_order_it_cannot_read(app, order):
    intake_key = key("intake")
    with pytest.raises(PermissionDenied):
        orders.get_order(order.id, actor=intake_key)
    cancelled = orders.cancel_order(order.id, reason="customer withdrew on the hotline", actor=intake_key)
    assert cancelled.status == "cancelled"
    assert event_count(order.id) == 2


def test_engineer_cannot_see_or_touch_a_colleagues_order(app, order, make_engineer):
    mine, theirs = make_engineer(), make_engineer()
    dispatching.assign_order(order.id, theirs.id, actor=DISPATCHER)
    before = event_count(order.id)
    me = user("engineer", engineer_id=mine.id)
    with pytest.raises(NotFound):
        orders.get_order(order.id, actor=me)
    with pytest.raises(NotFound):
        orders.suspend_order(order.id, reason_code="customer_postponed", note=None, until=None, actor=me)
    assert orders.list_orders(orders.OrderFilters(), page=1, page_size=10, actor=me)[1] == 0
    assert event_count(order.id) == before


def test_engineer_cannot_take_desk_actions_on_their_own_order(app, order, make_engineer):
    mine = make_engineer()
    dispatching.assign_order(order.id, mine.id, actor=DISPATCHER)
    me = user("engineer", engineer_id=mine.id)
    with pytest.raises(PermissionDenied):
        orders.cancel_order(order.id, reason="x", actor=me)
    with pytest.raises(PermissionDenied):
        dispatching.assign_order(order.id, mine.id, actor=me)
    db.session.refresh(order)
    assert order.status == "dispatched"


# --- intake -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", [DISPATCHER, user("admin"), key("billing")], ids=label)
def test_only_the_intake_scope_submits_orders(app, actor):
    data = OrderIntakeSchema().load(intake_payload())
    with pytest.raises(PermissionDenied):
        intake.intake_order(data, actor=actor)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Order)) == 0


# --- engineers --------------------------------------------------------------------------------------------


def _engineer_data(code: str) -> dict[str, Any]:
    return {
        "code": code,
        "name": "新工程师",
        "phone": "+8613900000001",
        "skills": ["repair"],
        "districts": [],
    }


@pytest.mark.parametrize("actor", [DISPATCHER, user("manager"), user("acceptance"), key("intake")], ids=label)
def test_only_admins_create_engineers(app, actor):
    with pytest.raises(PermissionDenied):
        engineers.create_engineer(_engineer_data("AUTHZ1"), actor=actor)
    assert db.session.scalar(sa.select(Engineer.id).where(Engineer.code == "AUTHZ1")) is None
    assert engineers.create_engineer(_engineer_data("AUTHZ1"), actor=user("admin")).code == "AUTHZ1"


@pytest.mark.parametrize("actor", [DISPATCHER, user("manager"), key("billing")], ids=label)
def test_only_admins_edit_engineers(app, make_engineer, actor):
    engineer = make_engineer(name="原名")
    with pytest.raises(PermissionDenied):
        engineers.update_engineer(engineer.id, {"name": "改名", "active": False}, actor=actor)
    db.session.refresh(engineer)
    assert engineer.name == "原名" and engineer.active


@pytest.mark.parametrize("actor", [user("acceptance"), key("intake"), key("billing")], ids=label)
def test_engineers_are_read_by_admins_dispatchers_and_managers_only(app, make_engineer, actor):
    engineer = make_engineer()
    with pytest.raises(PermissionDenied):
        engineers.list_engineers(actor=actor, page=1, page_size=10)
    with pytest.raises(PermissionDenied):
        engineers.get_engineer(engineer.id, actor=actor)
    for role in ("admin", "dispatcher", "manager"):
        assert engineers.get_engineer(engineer.id, actor=user(role)).id == engineer.id


# --- users and keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", [DISPATCHER, user("manager"), key("intake")], ids=label)
def test_only_admins_create_users_and_keys(app, actor):
    with pytest.raises(PermissionDenied):
        auth.create_user("sneaky", role="admin", password="password123", actor=actor)
    with pytest.raises(PermissionDenied):
        auth.create_api_key("sneaky-key", ["billing"], actor=actor)
    assert db.session.scalar(sa.select(User.id).where(User.username == "sneaky")) is None
    assert db.session.scalar(sa.select(ApiKey.id).where(ApiKey.name == "sneaky-key")) is None


def test_only_admins_revoke_api_keys(app, api_key):
    raw = api_key("billing")
    key_id = db.session.scalar(sa.select(ApiKey.id).where(ApiKey.prefix == raw.split("_")[1]))
    for actor in (DISPATCHER, key("billing")):
        with pytest.raises(PermissionDenied):
            auth.revoke_api_key(key_id, actor=actor)
    assert db.session.get(ApiKey, key_id).revoked_at is None
    auth.revoke_api_key(key_id, actor=user("admin"))
    assert db.session.get(ApiKey, key_id).revoked_at is not None
