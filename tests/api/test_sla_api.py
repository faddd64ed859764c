"""SLA policies, alerts, notifications, the orders' ``sla`` filter (CONTRACT §5; DOMAIN.md "SLA clocks")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.extensions import db
from dispatch.models import Alert, Order, OutboxMessage, SlaClock
from dispatch.services.orders import cancel_order
from dispatch.sla.tick import tick
from dispatch.vocabulary import ORDER_TYPES
from tests.conftest import INTAKE_ACTOR, T0, bearer

POLICIES = "/api/v1/sla-policies"
ALERTS = "/api/v1/alerts"
NOTIFICATIONS = "/api/v1/notifications"
ORDERS = "/api/v1/orders"
HOUR = 3600
DESK_PHONE = "+8613800000000"
COMPLETION = {
    "broadband_install": 48 * HOUR,
    "iptv_install": 48 * HOUR,
    "move": 48 * HOUR,
    "opportunity": 72 * HOUR,
    "repair": 24 * HOUR,
}
FIXED = {"take": 900, "contact": 3600, "arrival": 0, "acceptance": 600}


@pytest.fixture(autouse=True)
def long_tokens(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests move the clock by days; the desk's tokens (12 h) must outlive that."""
    monkeypatch.setitem(app.config, "TOKEN_TTL_SECONDS", 30 * 24 * HOUR)


@pytest.fixture
def desk(token: Any) -> dict[str, str]:
    return bearer(token("dispatcher"))


@pytest.fixture
def admin(token: Any) -> dict[str, str]:
    return bearer(token("admin"))


@pytest.fixture
def desk_phone(app: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The dispatch desk's phone, so that breaches (and unassigned orders' warnings) produce SMS rows."""
    monkeypatch.setitem(app.config, "DISPATCH_DESK_PHONE", DESK_PHONE)
    return DESK_PHONE


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.get_json()
    return response.get_json()


def clocks_of(client: Any, headers: dict[str, str], order_id: int) -> dict[str, dict[str, Any]]:
    """The order JSON's ``sla`` list, by clock name (live or most recent of each kind)."""
    body = ok(client.get(f"{ORDERS}/{order_id}", headers=headers))
    return {row["clock"]: row for row in body["sla"]}


def order_ids(client: Any, headers: dict[str, str], query: str) -> set[int]:
    body = ok(client.get(f"{ORDERS}?{query}&page_size=200", headers=headers))
    assert body["total"] == len(body["items"])
    return {item["id"] for item in body["items"]}


def local(delta: timedelta) -> str:
    """T0 + delta as the API shows it (Asia/Shanghai)."""
    from dispatch.timeutil import to_local

    return to_local(T0 + delta).isoformat()


# --- policies -----------------------------------------------------------------------------------------


def test_policies_list_every_order_type_and_clock_with_domain_defaults(client, token):
    for role in ("dispatcher", "manager", "admin"):
        items = ok(client.get(POLICIES, headers=bearer(token(role))))
        assert len(items) == 25
        got = {(p["order_type"], p["clock"]): (p["target_seconds"], p["warn_percent"]) for p in items}
        expected = {
            (order_type, clock): (target, 75)
            for order_type in ORDER_TYPES
            for clock, target in {**FIXED, "completion": COMPLETION[order_type]}.items()
        }
        assert got == expected
        assert {"order_type", "clock", "target_seconds", "warn_percent"} <= set(items[0])


def test_admin_changes_a_policy(client, admin, desk, clock):
    clock.advance(minutes=5)
    body = ok(
        client.put(
            f"{POLICIES}/repair/contact", json={"target_seconds": 1800, "warn_percent": 50}, headers=admin
        )
    )
    assert body["order_type"] == "repair" and body["clock"] == "contact"
    assert (body["target_seconds"], body["warn_percent"]) == (1800, 50)
    assert body["updated_at"] == local(timedelta(minutes=5))
    listed = {(p["order_type"], p["clock"]): p for p in ok(client.get(POLICIES, headers=desk))}
    assert listed[("repair", "contact")]["target_seconds"] == 1800
    assert listed[("repair", "contact")]["warn_percent"] == 50
    assert listed[("move", "contact")]["target_seconds"] == 3600  # the others are untouched
    # the limits themselves are accepted
    for target, warn in ((0, 1), (30 * 24 * HOUR, 100)):
        body = ok(
            client.put(
                f"{POLICIES}/move/arrival",
                json={"target_seconds": target, "warn_percent": warn},
                headers=admin,
            )
        )
        assert (body["target_seconds"], body["warn_percent"]) == (target, warn)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"target_seconds": -1, "warn_percent": 75}, {"target_seconds"}),
        ({"target_seconds": 30 * 24 * HOUR + 1, "warn_percent": 75}, {"target_seconds"}),
        ({"target_seconds": 3600, "warn_percent": 0}, {"warn_percent"}),
        ({"target_seconds": 3600, "warn_percent": 101}, {"warn_percent"}),
        ({"target_seconds": "an hour", "warn_percent": 75}, {"target_seconds"}),
        ({"target_seconds": 3600.5, "warn_percent": 75}, {"target_seconds"}),
        ({"target_seconds": None, "warn_percent": 75}, {"target_seconds"}),
        ({"target_seconds": True, "warn_percent": 75}, {"target_seconds"}),
        ({"target_seconds": "3600", "warn_percent": 75}, {"target_seconds"}),
        ({"target_seconds": 3600}, {"warn_percent"}),
        ({}, {"target_seconds", "warn_percent"}),
    ],
)
def test_policy_validation(client, admin, body, fields):
    response = client.put(f"{POLICIES}/repair/completion", json=body, headers=admin)
    error = ok(response, 422)
    assert error["code"] == 422
    assert fields <= set(error["errors"]), error
    listed = {(p["order_type"], p["clock"]): p for p in ok(client.get(POLICIES, headers=admin))}
    assert listed[("repair", "completion")]["target_seconds"] == 24 * HOUR


@pytest.mark.parametrize("path", ["fax_install/completion", "repair/lunch", "REPAIR/completion"])
def test_unknown_order_type_or_clock_is_404(client, admin, path):
    error = ok(
        client.put(f"{POLICIES}/{path}", json={"target_seconds": 60, "warn_percent": 75}, headers=admin), 404
    )
    assert error["code"] == 404 and error["message"]


@pytest.mark.parametrize("role", ["dispatcher", "manager", "acceptance"])
def test_only_admins_change_policies(client, token, admin, role):
    response = client.put(
        f"{POLICIES}/repair/completion",
        json={"target_seconds": 60, "warn_percent": 75},
        headers=bearer(token(role)),
    )
    assert ok(response, 403)["code"] == 403
    listed = {(p["order_type"], p["clock"]): p for p in ok(client.get(POLICIES, headers=admin))}
    assert listed[("repair", "completion")]["target_seconds"] == 24 * HOUR


def test_a_policy_change_applies_to_clocks_started_afterwards(client, admin, desk, clock, make_order):
    first = make_order(order_type="broadband_install")
    before = clocks_of(client, desk, first.id)["completion"]
    assert before == {
        "clock": "completion",
        "status": "running",
        "started_at": local(timedelta(0)),
        "due_at": local(timedelta(hours=48)),
        "stopped_at": None,
        "breached_at": None,
    }
    ok(
        client.put(
            f"{POLICIES}/broadband_install/completion",
            json={"target_seconds": 2 * HOUR, "warn_percent": 50},
            headers=admin,
        )
    )
    clock.advance(minutes=10)
    second = make_order(order_type="broadband_install")
    other_type = make_order(order_type="move")

    assert clocks_of(client, desk, first.id)["completion"] == before  # the running clock keeps its deadline
    after = clocks_of(client, desk, second.id)["completion"]
    assert after["started_at"] == local(timedelta(minutes=10))
    assert after["due_at"] == local(timedelta(minutes=130))
    assert clocks_of(client, desk, other_type.id)["completion"]["due_at"] == local(
        timedelta(minutes=10, hours=48)
    )
    row = db.session.scalar(sa.select(SlaClock).where(SlaClock.order_id == second.id))
    assert row is not None and row.warn_at == T0 + timedelta(minutes=70)  # 50 % of two hours

    # the new warning threshold is what the tick goes by: the second order warns, the first does not yet
    clock.advance(hours=1, seconds=1)
    result = tick(clock.now())
    assert (result.warnings, result.breaches) == (1, 0)
    assert [a["order_id"] for a in ok(client.get(ALERTS, headers=desk))["items"]] == [second.id]


# --- alerts -------------------------------------------------------------------------------------------


def test_alerts_one_warning_and_one_breach_per_clock_however_often_the_tick_runs(
    client, desk, clock, make_order
):
    order = make_order(order_type="repair")  # completion: 24 h, warning at 18 h
    quiet = make_order(order_type="opportunity")  # 72 h: nothing within this test's day
    assert not tick(clock.now())
    assert ok(client.get(ALERTS, headers=desk))["items"] == []

    clock.advance(hours=18, seconds=1)
    assert (tick(clock.now()).warnings, tick(clock.now()).warnings) == (1, 0)
    clock.advance(hours=6)
    result = tick(clock.now())
    assert (result.warnings, result.breaches) == (0, 1)
    for _ in range(3):
        clock.advance(minutes=1)
        assert not tick(clock.now())

    body = ok(client.get(ALERTS, headers=desk))
    assert body["total"] == 2 and body["page"] == 1 and body["page_size"] == 50
    breach, warning = body["items"]  # newest first
    assert (breach["kind"], breach["clock"], breach["order_id"]) == ("breach", "completion", order.id)
    assert (warning["kind"], warning["clock"], warning["order_id"]) == ("warning", "completion", order.id)
    assert breach["created_at"] == local(timedelta(hours=24, seconds=1))
    assert warning["created_at"] == local(timedelta(hours=18, seconds=1))
    assert breach["acknowledged_at"] is None
    assert {"id", "order_id", "kind", "clock", "created_at", "acknowledged_at"} <= set(breach)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Alert)) == 2

    completion = clocks_of(client, desk, order.id)["completion"]
    assert completion["status"] == "breached"
    assert completion["breached_at"] == local(timedelta(hours=24, seconds=1))
    assert ok(client.get(f"{ALERTS}?order_id={quiet.id}", headers=desk))["items"] == []
    assert ok(client.get(f"{ALERTS}?order_id={order.id}", headers=desk))["total"] == 2


def test_acknowledge_is_idempotent_and_filters_follow(client, token, make_user, clock, make_order):
    order = make_order(order_type="repair")
    other = make_order(order_type="repair")
    clock.advance(hours=24, seconds=1)
    assert tick(clock.now()).breaches == 2
    first_user, second_user = make_user("dispatcher"), make_user("admin")
    first, second = bearer(token(user=first_user)), bearer(token(user=second_user))
    alert_id = ok(client.get(f"{ALERTS}?order_id={order.id}", headers=first))["items"][0]["id"]

    clock.advance(minutes=3)
    acked = ok(client.post(f"{ALERTS}/{alert_id}/acknowledge", headers=first))
    assert acked["id"] == alert_id and acked["kind"] == "breach"
    assert acked["acknowledged_at"] == local(timedelta(hours=24, minutes=3, seconds=1))
    assert acked["acknowledged_by"] == first_user.id
    clock.advance(minutes=3)
    again = ok(client.post(f"{ALERTS}/{alert_id}/acknowledge", headers=second))
    assert again == acked  # the first time and user stay

    def listed(query: str) -> list[tuple[int, int]]:
        body = ok(client.get(f"{ALERTS}?{query}", headers=first))
        assert body["total"] == len(body["items"])
        return [(a["order_id"], a["id"]) for a in body["items"]]

    assert [o for o, _ in listed("status=acknowledged")] == [order.id]
    assert [o for o, _ in listed("status=open")] == [other.id]
    assert listed(f"status=open&order_id={order.id}") == []
    assert len(listed("")) == 2
    page = ok(client.get(f"{ALERTS}?page=2&page_size=1", headers=first))
    assert page["total"] == 2 and len(page["items"]) == 1


@pytest.mark.parametrize("alert_id", [999_999, 2**31, 2**63])
def test_acknowledging_an_unknown_alert_is_404(client, desk, alert_id):
    assert ok(client.post(f"{ALERTS}/{alert_id}/acknowledge", headers=desk), 404)["code"] == 404


@pytest.mark.parametrize(
    "query", ["status=closed", "order_id=0", "order_id=abc", f"order_id={2**31}", "page=0", "page_size=201"]
)
def test_alert_query_validation(client, desk, query):
    error = ok(client.get(f"{ALERTS}?{query}", headers=desk), 422)
    assert error["errors"]


# --- the orders' sla filter ---------------------------------------------------------------------------


def test_orders_sla_filter_at_risk_and_breached(client, desk, clock, make_order):
    repair = make_order(order_type="repair")  # warn 18 h, due 24 h
    install = make_order(order_type="broadband_install")  # warn 36 h, due 48 h
    opportunity = make_order(order_type="opportunity")  # warn 54 h, due 72 h
    cancelled = make_order(order_type="repair")
    late_cancelled = make_order(order_type="repair")
    cancel_order(cancelled.id, reason="客户撤销", actor=INTAKE_ACTOR)

    assert order_ids(client, desk, "sla=at_risk") == set()
    assert order_ids(client, desk, "sla=breached") == set()

    clock.advance(hours=18)  # the repairs' warnings are due (at counts)
    assert order_ids(client, desk, "sla=at_risk") == {repair.id, late_cancelled.id}
    assert order_ids(client, desk, "sla=breached") == set()

    clock.advance(hours=6)  # due at exactly now: past due from the next instant
    assert order_ids(client, desk, "sla=at_risk") == set()
    clock.advance(seconds=1)
    tick(clock.now())
    assert order_ids(client, desk, "sla=at_risk") == set()
    assert order_ids(client, desk, "sla=breached") == {repair.id, late_cancelled.id}
    # a breached order that was then cancelled is no longer one to chase
    cancel_order(late_cancelled.id, reason="客户撤销", actor=INTAKE_ACTOR)
    assert order_ids(client, desk, "sla=breached") == {repair.id}

    clock.advance(hours=12)  # 36 h: the install's warning
    assert order_ids(client, desk, "sla=at_risk") == {install.id}
    assert order_ids(client, desk, "sla=at_risk&order_type=repair") == set()
    clock.advance(hours=13)  # 49 h: the install is past due even before the tick records it
    assert order_ids(client, desk, "sla=breached") == {repair.id, install.id}
    tick(clock.now())
    assert order_ids(client, desk, "sla=breached") == {repair.id, install.id}
    assert order_ids(client, desk, "sla=breached&order_type=broadband_install") == {install.id}
    clock.advance(hours=6)  # 55 h: the opportunity's warning
    assert order_ids(client, desk, "sla=at_risk") == {opportunity.id}
    assert cancelled.id not in order_ids(client, desk, "status=cancelled&sla=breached")


def test_orders_sla_filter_validation(client, desk):
    error = ok(client.get(f"{ORDERS}?sla=late", headers=desk), 422)
    assert "sla" in error["errors"]


# --- notifications ------------------------------------------------------------------------------------


def test_notifications_list_the_sms_rows_the_tick_wrote(
    client, desk, desk_phone, clock, make_order, make_engineer
):
    order = make_order(order_type="repair")
    other = make_order(order_type="opportunity")
    db.session.add(  # not an SMS: not a notification
        OutboxMessage(
            kind="billing",
            dedupe_key=f"billing-test:{order.id}",
            order_id=order.id,
            payload={},
            status="pending",
            next_attempt_at=clock.now(),
            created_at=clock.now(),
        )
    )
    db.session.commit()
    clock.advance(hours=18, seconds=1)
    tick(clock.now())
    clock.advance(hours=6)
    tick(clock.now())
    tick(clock.now())

    body = ok(client.get(f"{NOTIFICATIONS}?order_id={order.id}", headers=desk))
    # unassigned: the warning goes to the desk; the breach to the desk (no team leader without an engineer)
    assert body["total"] == 2
    breach, warning = body["items"]  # newest first
    assert (breach["template"], breach["to"], breach["status"]) == ("sla_breach", desk_phone, "pending")
    assert (warning["template"], warning["to"]) == ("sla_warning", desk_phone)
    assert breach["order_id"] == order.id
    assert breach["created_at"] == local(timedelta(hours=24, seconds=1))
    assert breach["sent_at"] is None and breach["provider_sid"] is None
    assert {
        "id",
        "order_id",
        "to",
        "template",
        "body",
        "status",
        "provider_sid",
        "created_at",
        "sent_at",
    } <= set(breach)
    assert ok(client.get(f"{NOTIFICATIONS}?order_id={other.id}", headers=desk))["total"] == 0
    everything = ok(client.get(NOTIFICATIONS, headers=desk))
    assert everything["total"] == 2 and all(n["template"].startswith("sla_") for n in everything["items"])
    # the same rows appear in the order's own detail
    detail = ok(client.get(f"{ORDERS}/{order.id}", headers=desk))
    assert {n["id"] for n in detail["notifications"]} == {n["id"] for n in body["items"]}


def test_notifications_validation_and_pagination(client, desk, desk_phone, clock, make_order):
    for _ in range(3):
        make_order(order_type="repair")
    clock.advance(hours=24, seconds=1)
    assert tick(clock.now()).breaches == 3
    page = ok(client.get(f"{NOTIFICATIONS}?page=2&page_size=2", headers=desk))
    assert page["total"] == 3 and len(page["items"]) == 1 and page["page"] == 2
    assert ok(client.get(f"{NOTIFICATIONS}?order_id=-1", headers=desk), 422)["code"] == 422


# --- the tick, through what the desk sees -------------------------------------------------------------


def test_a_customer_reschedule_after_the_arrival_warning_rearms_it_without_breaking_the_tick(
    client, desk, desk_phone, clock, make_order, make_engineer, make_user
):
    """The arrival warning fired; the customer moved the visit; the new window gets its own warning and the
    tick keeps running (it used to fail on the alert's and SMS's unique keys, stopping every later tick)."""
    from dispatch.services.dispatching import assign_order

    engineer = make_engineer()
    user = make_user("engineer", engineer=engineer)
    order = make_order(order_type="repair")
    dispatcher = make_user("dispatcher")
    assign_order(
        order.id, engineer.id, actor=Actor(kind="user", id=dispatcher.id, name="d", role="dispatcher")
    )
    pda = Actor(kind="user", id=user.id, name=user.username, role="engineer", engineer_id=engineer.id)
    row = db.session.get(Order, order.id)
    assert row is not None
    now = clock.now()
    workflow.apply(row, "take", pda, now=now)
    window = {"start": now + timedelta(hours=2), "end": now + timedelta(hours=4)}
    workflow.apply(row, "appoint", pda, now=now, params={"appointment": window})
    db.session.commit()

    clock.advance(hours=1, minutes=31)  # arrival warns 30 min before the window
    assert tick(clock.now()).warnings == 1
    row = db.session.get(Order, order.id)
    assert row is not None
    later = {"start": clock.now() + timedelta(hours=3), "end": clock.now() + timedelta(hours=5)}
    workflow.apply(
        row, "reschedule", pda, now=clock.now(), params={"appointment": later, "reason": "customer"}
    )
    db.session.commit()

    clock.advance(hours=2, minutes=31)
    assert tick(clock.now()).warnings == 1  # the new deadline's warning
    alerts = ok(client.get(f"{ALERTS}?order_id={order.id}", headers=desk))["items"]
    arrival = [a for a in alerts if a["clock"] == "arrival"]
    assert [a["kind"] for a in arrival] == ["warning"]  # one alert per clock and kind, reopened
    assert arrival[0]["created_at"] == local(timedelta(hours=4, minutes=2))
    sms = ok(client.get(f"{NOTIFICATIONS}?order_id={order.id}", headers=desk))["items"]
    assert [n["to"] for n in sms if n["template"] == "sla_warning"] == [engineer.phone, engineer.phone]
    clock.advance(hours=1)
    assert tick(clock.now()).breaches == 1  # past the new window start: the arrival breach


def test_a_clock_the_tick_breached_still_records_when_it_was_met(
    client, desk, clock, make_order, make_engineer, make_user
):
    """The take clock breached (tick); the engineer takes the order later: ``stopped_at`` says when."""
    from dispatch.services.dispatching import assign_order

    engineer = make_engineer()
    user = make_user("engineer", engineer=engineer)
    dispatcher = make_user("dispatcher")
    order = make_order(order_type="repair")
    assign_order(
        order.id, engineer.id, actor=Actor(kind="user", id=dispatcher.id, name="d", role="dispatcher")
    )
    clock.advance(minutes=15, seconds=1)
    assert tick(clock.now()).breaches == 1
    take = clocks_of(client, desk, order.id)["take"]
    assert (take["status"], take["breached_at"], take["stopped_at"]) == (
        "breached",
        local(timedelta(minutes=15, seconds=1)),
        None,
    )
    clock.advance(minutes=5)
    row = db.session.get(Order, order.id)
    assert row is not None
    pda = Actor(kind="user", id=user.id, name=user.username, role="engineer", engineer_id=engineer.id)
    workflow.apply(row, "take", pda, now=clock.now())
    db.session.commit()
    take = clocks_of(client, desk, order.id)["take"]
    assert (take["status"], take["stopped_at"]) == ("breached", local(timedelta(minutes=20, seconds=1)))
    assert take["breached_at"] == local(timedelta(minutes=15, seconds=1))  # the breach itself stays
    assert clocks_of(client, desk, order.id)["contact"]["status"] == "running"
    assert len(ok(client.get(f"{ALERTS}?order_id={order.id}", headers=desk))["items"]) == 1
