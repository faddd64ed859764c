"""Which transitions write which SMS (dispatch/messaging/triggers.py), and how they render (templates.py).

WINDOW (tests/services/test_workflow.py) is 2026-11-26 09:00–12:00 in Kunming; the clock starts 2026-11-25
09:00 local and moves one minute per step.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch.actors import Actor
from dispatch.clock import FakeClock
from dispatch.errors import NotFound, PermissionDenied, ValidationError
from dispatch.extensions import db
from dispatch.messaging import segments, templates
from dispatch.messaging.templates import ObsoleteMessage, render_message
from dispatch.models import Order, OutboxMessage
from dispatch.services import sms_templates
from tests.services.test_workflow import ADMIN, DISPATCHER, WINDOW, Flow, engineer_actor


@pytest.fixture
def flow(clock: FakeClock, make_order: Any, make_engineer: Any) -> Flow:
    return Flow(clock, make_order, make_engineer)


@pytest.fixture
def admin(make_user: Any) -> Actor:
    user = make_user("admin")
    return Actor(kind="user", id=user.id, name=user.username, role="admin")


def sms_of(order: Order, template: str | None = None) -> list[OutboxMessage]:
    query = sa.select(OutboxMessage).where(OutboxMessage.order_id == order.id, OutboxMessage.kind == "sms")
    if template:
        query = query.where(OutboxMessage.template == template)
    return list(db.session.scalars(query.order_by(OutboxMessage.id)))


def test_dispatch_sends_the_engineer_the_order_and_the_take_deadline(flow: Flow) -> None:
    order, engineer = flow.order_in("dispatched")
    (message,) = sms_of(order)
    assert (message.template, message.recipient, message.status) == (
        "dispatch_engineer",
        engineer.phone,
        "pending",
    )
    assert message.payload["recipient_role"] == "engineer"
    text = render_message(message)
    assert order.external_id in text and "宽带新装" in text and "五华区" in text
    assert "11月25日 09:16" in text  # dispatched at 09:01, the take clock runs 15 minutes
    assert segments.count(text).parts <= 2


def test_a_reassignment_tells_the_new_engineer(flow: Flow, make_engineer: Any) -> None:
    from dispatch.services import dispatching

    order, first = flow.order_in("dispatched")
    second = make_engineer()
    dispatching.assign_order(order.id, second.id, actor=DISPATCHER)
    recipients = [m.recipient for m in sms_of(order, "dispatch_engineer")]
    assert recipients == [first.phone, second.phone]


def test_an_appointment_tells_the_customer_and_schedules_a_reminder_an_hour_before(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    (agreed,) = sms_of(order, "appointment_customer")
    assert (agreed.recipient, agreed.payload["recipient_role"]) == (order.customer.phone, "customer")
    text = render_message(agreed)
    assert engineer.name in text and engineer.code in text and "11月26日 09:00-12:00" in text
    (reminder,) = sms_of(order, "reminder_customer")
    assert reminder.next_attempt_at == WINDOW["start"] - timedelta(hours=1)
    assert "11月26日 09:00-12:00" in render_message(reminder)


def test_a_reschedule_tells_the_customer_and_makes_the_old_reminder_obsolete(flow: Flow) -> None:
    order, engineer = flow.order_in("appointed")
    later = {"start": WINDOW["start"] + timedelta(hours=5), "end": WINDOW["end"] + timedelta(hours=5)}
    flow.act(order, "reschedule", engineer_actor(engineer), {"appointment": later, "reason": "customer"})
    (moved,) = sms_of(order, "reschedule_customer")
    assert "11月26日 14:00-17:00" in render_message(moved)
    old, new = sms_of(order, "reminder_customer")
    with pytest.raises(ObsoleteMessage):
        render_message(old)
    assert "14:00-17:00" in render_message(new)
    flow.act(order, "check_in", engineer_actor(engineer))
    with pytest.raises(ObsoleteMessage):  # once on site, no reminder is due any more
        render_message(new)


def test_an_appointment_within_the_hour_gets_no_reminder(flow: Flow) -> None:
    order, engineer = flow.order_in("taken")
    soon = {"start": flow.clock.now() + timedelta(minutes=30), "end": flow.clock.now() + timedelta(hours=2)}
    flow.act(order, "appoint", engineer_actor(engineer), {"appointment": soon})
    assert [m.template for m in sms_of(order)] == ["dispatch_engineer", "appointment_customer"]


def test_completion_asks_the_customer_for_a_score(flow: Flow) -> None:
    order, _ = flow.order_in("completed")
    (done,) = sms_of(order, "completion_customer")
    text = render_message(done)
    assert "竣工" in text and "1-5" in text
    assert done.recipient == order.customer.phone


def test_a_long_address_is_shortened_so_that_the_message_fits_two_parts(flow: Flow) -> None:
    order, _ = flow.order_in("dispatched")
    order.address.text = "昆明市五华区" + "某某街道某某社区某某小区" * 20
    db.session.flush()
    text = render_message(sms_of(order)[0])
    assert segments.count(text).parts == 2
    assert order.external_id in text and "…" in text


# --- templates editable by admins ---------------------------------------------------------------------------


def test_an_admin_rewrites_a_template_and_the_next_message_uses_it(flow: Flow, admin: Actor) -> None:
    body = "【派单】{external_id}，{take_deadline}前接单"
    described = sms_templates.set_template("dispatch_engineer", body, actor=admin)
    assert described["customized"] and described["segments"]["parts"] == 1
    order, _ = flow.order_in("dispatched")
    assert render_message(sms_of(order)[0]) == f"【派单】{order.external_id}，11月25日 09:16前接单"
    restored = sms_templates.set_template("dispatch_engineer", None, actor=admin)
    assert restored["body"] == templates.DEFAULTS["dispatch_engineer"] and not restored["customized"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("工单{order_number}", "Unknown field"),
        ("工单{external_id!r}", "plain"),
        ("工单{external_id", "expected"),
        ("长" * 140, "SMS parts"),
    ],
)
def test_a_template_with_unknown_fields_or_too_long_is_refused(app: Any, body: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        sms_templates.set_template("dispatch_engineer", body, actor=ADMIN)
    assert message.lower() in str(info.value.errors["body"]).lower()
    assert sms_templates.list_templates(actor=ADMIN)[0]["customized"] is False


def test_only_admins_edit_templates_and_unknown_ones_are_404(app: Any) -> None:
    with pytest.raises(PermissionDenied):
        sms_templates.set_template("dispatch_engineer", "x", actor=DISPATCHER)
    with pytest.raises(NotFound):
        sms_templates.set_template("nonexistent", "x", actor=ADMIN)
    listed = sms_templates.list_templates(actor=DISPATCHER)
    assert {t["key"] for t in listed} == set(templates.DEFAULTS)
    assert all(t["segments"]["parts"] <= 2 and t["segments"]["encoding"] == "UCS-2" for t in listed)


def test_every_default_template_renders_within_two_parts_with_long_data() -> None:
    worst = {key: value * 3 for key, value in templates.SAMPLE.items()}
    for key, body in templates.DEFAULTS.items():
        assert segments.count(templates.fit(body, worst)).parts <= 2, key
