"""Issue 5's "done when": with SMS_BACKEND=twilio against a Twilio-compatible server, a dispatched order
produces exactly one engineer SMS, its delivery status arrives and shows, opted-out customers get nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from dispatch.clock import utcnow
from dispatch.messaging.relay import deliver_pending
from tests.conftest import bearer
from tests.services.test_sms_relay import fake, sms_settings, twilio  # noqa: F401  (fixtures)
from tests.support_twilio import signed_post


def notifications(client: Any, headers: dict[str, str], order_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/notifications?order_id={order_id}", headers=headers)
    assert response.status_code == 200
    return response.get_json()["items"]


def test_a_dispatched_order_sends_one_engineer_sms_whose_delivery_shows(
    client,
    token,
    make_order,
    make_engineer,
    twilio,  # noqa: F811
):
    desk = bearer(token("dispatcher"))
    engineer = make_engineer()
    order = make_order()
    assigned = client.post(
        f"/api/v1/orders/{order.id}/assign", json={"engineer_id": engineer.id}, headers=desk
    )
    assert assigned.status_code == 200, assigned.get_json()
    (pending,) = notifications(client, desk, order.id)
    assert (pending["to"], pending["status"], pending["template"]) == (
        engineer.phone,
        "pending",
        "dispatch_engineer",
    )

    for _ in range(3):  # the scheduler ticks again and again: still one message
        deliver_pending(utcnow())
    (body,) = twilio.bodies_to(engineer.phone)
    assert order.external_id in body
    (sent,) = notifications(client, desk, order.id)
    assert sent["status"] == "sent" and sent["provider_sid"] and sent["body"] == body

    assert twilio.post_status_callback(client, sent["provider_sid"], "delivered").status_code == 204
    detail = client.get(f"/api/v1/orders/{order.id}", headers=desk).get_json()
    assert [(n["template"], n["status"]) for n in detail["notifications"]] == [
        ("dispatch_engineer", "delivered")
    ]


def test_an_opted_out_customer_receives_nothing_until_start(
    app,
    client,
    token,
    make_order,
    make_engineer,
    twilio,  # noqa: F811
):
    from dispatch.services.orders import transition
    from tests.services.test_workflow import WINDOW, engineer_actor

    desk = bearer(token("dispatcher"))
    engineer = make_engineer()
    order = make_order()
    phone = order.customer.phone
    inbound = "https://dispatch.example.com/webhooks/twilio/inbound"
    stop = {
        "From": phone,
        "Body": "退订",
        "MessageSid": "SMin0000000000000000000000000001",
        "AccountSid": "AC",
        "To": "+15005550006",
    }
    assert signed_post(client, inbound, stop).status_code == 200

    client.post(f"/api/v1/orders/{order.id}/assign", json={"engineer_id": engineer.id}, headers=desk)
    me = engineer_actor(engineer)
    transition(order.id, "take", actor=me)
    transition(order.id, "appoint", actor=me, params={"appointment": WINDOW})
    deliver_pending(utcnow())
    assert twilio.bodies_to(phone) == []
    statuses = {n["template"]: n["status"] for n in notifications(client, desk, order.id)}
    assert statuses["appointment_customer"] == "suppressed"
    assert statuses["dispatch_engineer"] == "sent"  # staff messages are not affected

    start = {**stop, "Body": "START", "MessageSid": "SMin0000000000000000000000000002"}
    assert signed_post(client, inbound, start).status_code == 200
    later = {"start": WINDOW["start"] + timedelta(hours=4), "end": WINDOW["end"] + timedelta(hours=4)}
    transition(order.id, "reschedule", actor=me, params={"appointment": later, "reason": "customer"})
    deliver_pending(utcnow())
    (moved,) = twilio.bodies_to(phone)
    assert "13:00-16:00" in moved
