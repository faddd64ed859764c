"""The SMS relay (dispatch/messaging/relay.py): outbox rows delivered exactly once per dedupe key.

``SMS_BACKEND=twilio`` runs the real twilio SDK against the local fake in tests/support_twilio.py: 5xx and
timeouts are retried with backoff, a timeout after Twilio accepted is reconciled by listing the recipient's
messages instead of sending again, permanent refusals fail without a retry, opted-out customers are
suppressed, quiet hours and the per-number limit defer. No test sleeps for a backoff: the job gets ``now``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from dispatch import scheduling
from dispatch.config import ConfigError, load_config
from dispatch.extensions import db
from dispatch.messaging import relay, twilio_sms
from dispatch.messaging.relay import UNCONFIRMED, UNKNOWN_MARK, RelayResult, deliver_pending, limited_until
from dispatch.models import OutboxMessage, SmsOptOut
from tests.conftest import T0
from tests.support_nominatim import dead_port
from tests.support_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio

PUBLIC = "https://dispatch.example.com"
CALLBACK = PUBLIC + "/webhooks/twilio/status"
SENDER = "+15005550006"
ENGINEER = "+8613900000001"
CUSTOMER = "+8613800000001"
TIMEOUT = 0.3
_keys = count(1)


@pytest.fixture(autouse=True)
def sms_settings(session_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default SMS settings for every test, whatever the environment says."""
    settings = {
        "SMS_BACKEND": "outbox",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM": SENDER,
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{dead_port()}",  # the outbox backend must not call it
        "TWILIO_TIMEOUT_SECONDS": TIMEOUT,
        "SMS_PER_NUMBER_PER_HOUR": 10,
        "SMS_MAX_ATTEMPTS": 8,
        "SMS_RETRY_SECONDS": 30.0,
        "PUBLIC_BASE_URL": PUBLIC,
        "QUIET_HOURS": "21:00-08:00",
        "DISPATCH_TZ": "Asia/Shanghai",
    }
    for key, value in settings.items():
        monkeypatch.setitem(session_app.config, key, value)


@pytest.fixture
def fake(session_app: Flask) -> Iterator[FakeTwilio]:
    """A fake Twilio that dates its messages by the app's (fake) clock."""
    server = FakeTwilio(clock=lambda: session_app.extensions["clock"].now()).start()
    yield server
    server.stop()


@pytest.fixture
def twilio(session_app: Flask, fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> FakeTwilio:
    """SMS_BACKEND=twilio pointing at the fake."""
    monkeypatch.setitem(session_app.config, "SMS_BACKEND", "twilio")
    monkeypatch.setitem(session_app.config, "TWILIO_API_BASE_URL", fake.url)
    return fake


@pytest.fixture
def make_sms(ctx_app: Flask) -> Callable[..., int]:
    """Insert an SMS outbox row (committed) → its id."""

    def factory(
        recipient: str = ENGINEER,
        *,
        role: str = "engineer",
        body: str | None = "default",
        template: str = "dispatch_engineer",
        at: datetime = T0,
        order_id: int | None = None,
        **values: Any,
    ) -> int:
        n = next(_keys)
        fields: dict[str, Any] = {
            "kind": "sms",
            "dedupe_key": f"test:{n}",
            "order_id": order_id,
            "recipient": recipient,
            "template": template,
            "body": f"【测试】消息{n}" if body == "default" else body,
            "payload": {"recipient_role": role},
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": at,
            "created_at": at,
        }
        row = OutboxMessage(**{**fields, **values})
        db.session.add(row)
        db.session.commit()
        return row.id

    return factory


def row(message_id: int) -> OutboxMessage:
    """The row as the database has it now (the relay writes with Core, past the session)."""
    message = db.session.get(OutboxMessage, message_id, populate_existing=True)
    assert message is not None
    return message


def sent_bodies(fake: FakeTwilio) -> Counter[str]:
    return Counter(message.body for message in fake.created)


# --- pure parts -----------------------------------------------------------------------------------------


def test_retry_delay_doubles_from_the_base_and_stops_at_an_hour() -> None:
    delays = [relay.retry_delay(n, 30).total_seconds() for n in (1, 2, 3, 4, 8, 50)]
    assert delays == [30, 60, 120, 240, 3600, 3600]


def test_limited_until_is_when_enough_sends_have_left_the_hour() -> None:
    sends = [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)]
    now = T0 + timedelta(minutes=20)
    assert limited_until(sends, 4, now) is None
    assert limited_until(sends, 3, now) == T0 + timedelta(hours=1)  # the oldest leaves
    assert limited_until(sends, 2, now) == T0 + timedelta(minutes=5, hours=1)  # two must leave
    assert limited_until(sends, 3, T0 + timedelta(hours=1)) is None  # the oldest has left


def test_lease_covers_a_look_up_and_a_send_at_the_timeout() -> None:
    assert relay.lease_length(10) == timedelta(seconds=60)


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (500, None, "retryable"),
        (503, None, "retryable"),
        (429, 20429, "retryable"),
        (401, 20003, "retryable"),
        (400, 21610, "permanent"),
        (400, 21211, "permanent"),
        (400, 21614, "permanent"),
        (404, 20404, "permanent"),
    ],
)
def test_twilio_errors_are_classified_by_status(status: int, code: int | None, outcome: str) -> None:
    from twilio.base.exceptions import TwilioRestException

    error = twilio_sms.classify(TwilioRestException(status, "/Messages.json", "refused", code or status))
    assert error.outcome == outcome
    assert error.code == code and error.status == status


def test_connection_errors_are_unknown_unless_no_connection_was_made() -> None:
    import requests

    assert twilio_sms.classify(requests.exceptions.ReadTimeout()).outcome == "unknown"
    assert twilio_sms.classify(requests.exceptions.ConnectionError("reset")).outcome == "unknown"
    assert twilio_sms.classify(requests.exceptions.ConnectTimeout()).outcome == "retryable"


# --- configuration --------------------------------------------------------------------------------------


def test_config_refuses_an_unknown_backend_and_twilio_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM", "QUIET_HOURS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="SMS_BACKEND must be one of outbox, twilio"):
        load_config({"SMS_BACKEND": "carrier-pigeon"})
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM"):
        load_config({"SMS_BACKEND": "twilio"})
    with pytest.raises(ConfigError, match="TWILIO_FROM"):
        load_config({"SMS_BACKEND": "twilio", "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "t"})
    with pytest.raises(ConfigError, match="SMS_MAX_ATTEMPTS"):
        load_config({"SMS_MAX_ATTEMPTS": 0})
    with pytest.raises(ConfigError, match="TWILIO_TIMEOUT_SECONDS"):
        load_config({"TWILIO_TIMEOUT_SECONDS": 0})
    ok = load_config(
        {
            "SMS_BACKEND": "twilio",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_FROM": "x",
        }
    )
    assert ok["SMS_BACKEND"] == "twilio"


def test_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SMS_BACKEND", "TWILIO_TIMEOUT_SECONDS", "SMS_PER_NUMBER_PER_HOUR", "SMS_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    cfg = load_config()
    assert cfg["SMS_BACKEND"] == "outbox"
    assert (cfg["TWILIO_TIMEOUT_SECONDS"], cfg["SMS_PER_NUMBER_PER_HOUR"], cfg["SMS_MAX_ATTEMPTS"]) == (
        10,
        10,
        8,
    )


def test_twilio_backend_without_credentials_claims_nothing(
    app: Flask, make_sms: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "SMS_BACKEND", "twilio")
    monkeypatch.setitem(app.config, "TWILIO_AUTH_TOKEN", None)
    message_id = make_sms()
    with pytest.raises(ConfigError):
        deliver_pending(T0)
    assert row(message_id).attempts == 0 and row(message_id).next_attempt_at == T0


# --- the outbox backend ---------------------------------------------------------------------------------


def test_outbox_backend_marks_due_rows_sent_without_any_network(
    app: Flask, make_sms: Callable[..., int], fake: FakeTwilio
) -> None:
    due = [make_sms(), make_sms(CUSTOMER, role="customer")]
    later = make_sms(at=T0 + timedelta(minutes=5))

    assert deliver_pending(T0) == RelayResult(sent=2)
    assert deliver_pending(T0) == RelayResult()

    for message_id in due:
        message = row(message_id)
        assert (message.status, message.provider_sid, message.sent_at) == ("sent", None, T0)
        assert message.attempts == 1 and message.last_error is None
    assert row(later).status == "pending" and row(later).attempts == 0
    assert fake.requests == []


def test_a_row_without_a_body_is_rendered_from_its_order_and_the_body_kept(
    app: Flask, make_sms: Callable[..., int], make_order: Callable[..., Any]
) -> None:
    order = make_order()
    message_id = make_sms(body=None, order_id=order.id, template="dispatch_engineer")

    assert deliver_pending(T0) == RelayResult(sent=1)

    body = row(message_id).body
    assert body is not None and order.external_id in body and "五华区" in body


def test_a_row_whose_template_cannot_be_rendered_fails_without_a_retry(
    app: Flask, make_sms: Callable[..., int], make_order: Callable[..., Any]
) -> None:
    message_id = make_sms(body=None, order_id=make_order().id, template="no_such_template")

    assert deliver_pending(T0) == RelayResult(failed=1)
    assert deliver_pending(T0 + timedelta(hours=2)) == RelayResult()

    message = row(message_id)
    assert message.status == "failed" and "no_such_template" in (message.last_error or "")
    assert message.body is None


# --- the twilio backend ---------------------------------------------------------------------------------


def test_twilio_backend_sends_through_the_sdk_with_the_status_callback(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    message_id = make_sms(body="【装维派单】工单10000-1，请接单。")

    assert deliver_pending(T0) == RelayResult(sent=1)
    assert deliver_pending(T0 + timedelta(hours=1)) == RelayResult()

    [create] = twilio.creates()
    assert create.authorized
    assert create.params["To"] == ENGINEER and create.params["From"] == SENDER
    assert create.params["Body"] == "【装维派单】工单10000-1，请接单。"
    assert create.params["StatusCallback"] == CALLBACK
    [accepted] = twilio.created
    message = row(message_id)
    assert (message.status, message.provider_sid, message.sent_at) == ("sent", accepted.sid, T0)
    assert message.attempts == 1 and message.last_error is None
    assert twilio.lists() == []  # nothing was uncertain: no look-up


def test_5xx_is_retried_with_backoff_and_the_message_sent_once(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    message_id = make_sms()
    twilio.fail_next(1, status=500)
    twilio.fail_next(1, status=503)

    assert deliver_pending(T0) == RelayResult(retried=1)
    first = row(message_id)
    assert (first.status, first.attempts, first.next_attempt_at) == ("pending", 1, T0 + timedelta(seconds=30))
    assert "HTTP 500" in (first.last_error or "") and first.provider_sid is None

    assert deliver_pending(T0 + timedelta(seconds=29)) == RelayResult()
    assert deliver_pending(T0 + timedelta(seconds=30)) == RelayResult(retried=1)
    second = row(message_id)
    assert second.attempts == 2 and second.next_attempt_at == T0 + timedelta(seconds=90)
    assert "HTTP 503" in (second.last_error or "")

    assert deliver_pending(T0 + timedelta(seconds=90)) == RelayResult(sent=1)
    assert len(twilio.creates()) == 3
    assert sent_bodies(twilio) == {row(message_id).body: 1}
    assert row(message_id).provider_sid == twilio.created[0].sid
    assert twilio.lists() == []  # a 5xx is a definite "no": nothing to look up


def test_retries_give_up_after_the_maximum_attempts(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "SMS_MAX_ATTEMPTS", 3)
    message_id = make_sms()
    twilio.fail_next(10, status=503)

    results = [deliver_pending(T0 + timedelta(hours=h)) for h in range(5)]

    assert results == [
        RelayResult(retried=1),
        RelayResult(retried=1),
        RelayResult(failed=1),
        RelayResult(),
        RelayResult(),
    ]
    assert len(twilio.creates()) == 3
    message = row(message_id)
    assert message.status == "failed" and "gave up after 3 attempts" in (message.last_error or "")


def test_an_outage_costs_three_requests_per_run_and_the_rest_waits_without_an_attempt(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    ids = [make_sms(f"+86139{n:08d}") for n in range(10)]
    twilio.fail_next(100, status=503)

    assert deliver_pending(T0) == RelayResult(retried=10)

    assert len(twilio.creates()) == relay.UNAVAILABLE_AFTER == 3
    rows = [row(i) for i in ids]
    assert [r.attempts for r in rows] == [1, 1, 1] + [0] * 7
    assert {r.next_attempt_at for r in rows} == {T0 + timedelta(seconds=30)}
    assert all(r.status == "pending" for r in rows)
    assert [r.last_error is None for r in rows] == [False] * 3 + [True] * 7


def test_timeout_after_twilio_accepted_is_found_by_the_next_attempt_and_not_sent_again(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    message_id = make_sms()
    twilio.accept_then_hang_next(1, seconds=TIMEOUT * 5)

    assert deliver_pending(T0) == RelayResult(retried=1)
    unsure = row(message_id)
    assert unsure.status == "pending" and unsure.provider_sid is None
    assert (unsure.last_error or "").startswith(UNKNOWN_MARK) and unsure.payload[UNCONFIRMED] is True
    [accepted] = twilio.created

    assert deliver_pending(T0 + timedelta(seconds=30)) == RelayResult(sent=1)

    assert len(twilio.creates()) == 1  # looked up, not sent again
    [look_up] = twilio.lists()
    assert look_up.params["To"] == ENGINEER and look_up.params["DateSent>"] == "2026-11-25"
    message = row(message_id)
    assert (message.status, message.provider_sid) == ("sent", accepted.sid)
    assert sent_bodies(twilio) == {message.body: 1}


def test_a_delivery_reported_before_the_sid_was_known_is_taken_from_twilio_on_adoption(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    message_id = make_sms()
    twilio.accept_then_hang_next(1, seconds=TIMEOUT * 5)
    deliver_pending(T0)
    [accepted] = twilio.created
    # Twilio delivered it and called back while we still had no sid: that callback found no row.
    assert twilio.post_status_callback(app.test_client(), accepted.sid, "delivered").status_code == 204
    assert row(message_id).status == "pending"

    assert deliver_pending(T0 + timedelta(seconds=30)) == RelayResult(sent=1)

    message = row(message_id)
    assert (message.status, message.provider_sid) == ("delivered", accepted.sid)
    assert len(twilio.creates()) == 1


def test_a_message_still_queued_at_twilio_is_found_without_a_send_date(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    twilio.hold_date_sent = True  # Twilio fills date_sent only once it has sent the message
    message_id = make_sms()
    twilio.accept_then_hang_next(1, seconds=TIMEOUT * 5)

    deliver_pending(T0)
    assert deliver_pending(T0 + timedelta(seconds=30)) == RelayResult(sent=1)

    assert len(twilio.creates()) == 1
    assert [("DateSent>" in r.params) for r in twilio.lists()] == [True, False]
    assert row(message_id).provider_sid == twilio.created[0].sid


def test_a_sender_killed_mid_request_leaves_a_mark_and_the_next_attempt_looks_first(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    # What a sender that died between its mark and the answer leaves behind; Twilio never got the message.
    message_id = make_sms(attempts=1, last_error=f"{UNKNOWN_MARK}: attempt 1 in flight")

    assert deliver_pending(T0) == RelayResult(sent=1)

    assert len(twilio.lists()) == 2  # dated look-up, then the newest messages: nothing there
    assert len(twilio.creates()) == 1
    assert row(message_id).attempts == 2 and row(message_id).provider_sid == twilio.created[0].sid


def test_a_look_up_that_fails_sends_nothing_and_tries_again_later(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    message_id = make_sms(attempts=1, last_error=f"{UNKNOWN_MARK}: attempt 1 in flight")
    twilio.fail_next_lists(1, status=503)

    assert deliver_pending(T0) == RelayResult(retried=1)
    assert twilio.creates() == []
    message = row(message_id)
    assert message.status == "pending" and message.payload[UNCONFIRMED] is True

    assert deliver_pending(T0 + timedelta(minutes=5)) == RelayResult(sent=1)
    assert len(twilio.creates()) == 1


def test_a_look_up_never_adopts_the_message_of_another_row_with_the_same_text(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    # The desk and a team leader with one phone get the same breach text twice: two messages, two sids.
    body = "【超时告警】工单10000-7（五华区）接单已超时。"
    earlier = twilio.add_message(ENGINEER, body, sent=T0)
    make_sms(body=body, status="sent", provider_sid=earlier, sent_at=T0, attempts=1)
    message_id = make_sms(body=body, attempts=1, last_error=f"{UNKNOWN_MARK}: attempt 1 in flight")

    assert deliver_pending(T0) == RelayResult(sent=1)

    assert len(twilio.creates()) == 1
    assert row(message_id).provider_sid not in (None, earlier)
    assert twilio.bodies_to(ENGINEER) == [body, body]


@pytest.mark.parametrize("code", [21610, 21211, 21614])
def test_a_permanent_refusal_fails_without_a_retry(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio, code: int
) -> None:
    message_id = make_sms()
    twilio.reject_next(1, code=code)

    assert deliver_pending(T0) == RelayResult(failed=1)
    assert deliver_pending(T0 + timedelta(hours=2)) == RelayResult()

    assert len(twilio.creates()) == 1 and twilio.created == []
    message = row(message_id)
    assert (message.status, message.error_code, message.provider_sid) == ("failed", code, None)
    assert str(code) in (message.last_error or "")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SmsOptOut)) == 0  # STOP feeds opt-outs


def test_an_opted_out_customer_is_suppressed_while_staff_messages_to_the_number_still_go(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    db.session.add(SmsOptOut(phone=CUSTOMER, keyword="TD", opted_out_at=T0 - timedelta(days=1)))
    db.session.commit()
    customer = make_sms(CUSTOMER, role="customer", template="appointment_customer")
    staff = make_sms(CUSTOMER, role="engineer")

    assert deliver_pending(T0) == RelayResult(sent=1, suppressed=1)
    assert deliver_pending(T0 + timedelta(days=1)) == RelayResult()

    assert row(customer).status == "suppressed" and row(customer).provider_sid is None
    assert row(staff).status == "sent"
    assert twilio.bodies_to(CUSTOMER) == [row(staff).body]


def test_quiet_hours_defer_customer_messages_to_the_window_end_and_send_them_then(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    evening = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # 22:00 in Asia/Shanghai
    morning = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)  # 08:00 the next day
    app.extensions["clock"].set(evening)
    customer = make_sms(CUSTOMER, role="customer", at=evening)
    staff = make_sms(ENGINEER, role="engineer", at=evening)

    assert deliver_pending(evening) == RelayResult(sent=1, deferred=1)
    assert row(staff).status == "sent"
    deferred = row(customer)
    assert (deferred.status, deferred.next_attempt_at, deferred.attempts) == ("deferred", morning, 0)

    assert deliver_pending(morning - timedelta(seconds=1)) == RelayResult()
    app.extensions["clock"].set(morning)
    assert deliver_pending(morning) == RelayResult(sent=1)

    assert row(customer).status == "sent" and row(customer).sent_at == morning
    assert twilio.bodies_to(CUSTOMER) == [row(customer).body]


def test_empty_quiet_hours_send_customer_messages_at_night(
    app: Flask, make_sms: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "QUIET_HOURS", "")
    night = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 23:00 in Asia/Shanghai
    make_sms(CUSTOMER, role="customer", at=night)
    assert deliver_pending(night) == RelayResult(sent=1)


def test_per_number_limit_defers_until_the_oldest_send_leaves_the_hour(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "SMS_PER_NUMBER_PER_HOUR", 3)
    clock = app.extensions["clock"]

    def customer_sms(recipient: str = CUSTOMER, **kw: Any) -> int:
        return make_sms(recipient, role="customer", template="appointment_customer", **kw)

    early = [customer_sms(), customer_sms()]
    assert deliver_pending(T0) == RelayResult(sent=2)
    ten = clock.set(T0 + timedelta(minutes=10))
    third = customer_sms(at=ten)
    assert deliver_pending(ten) == RelayResult(sent=1)
    twenty = clock.set(T0 + timedelta(minutes=20))
    late = [customer_sms(at=twenty), customer_sms(at=twenty)]
    other = customer_sms("+8613900000099", at=twenty)

    assert deliver_pending(twenty) == RelayResult(sent=1, deferred=2)
    assert row(other).status == "sent"
    assert [(row(i).status, row(i).next_attempt_at) for i in late] == [
        ("deferred", T0 + timedelta(hours=1))
    ] * 2

    # At T0 + 1 h both T0 sends have left the hour; the 10-minute one still counts: two fit.
    clock.set(T0 + timedelta(hours=1))
    assert deliver_pending(T0 + timedelta(hours=1)) == RelayResult(sent=2)
    assert all(row(i).status == "sent" for i in [*early, third, *late])
    assert len(twilio.bodies_to(CUSTOMER)) == 5


def test_staff_numbers_get_every_escalation_at_once(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "SMS_PER_NUMBER_PER_HOUR", 3)
    breaches = [make_sms(role="dispatcher", template="sla_breach") for _ in range(6)]
    assert deliver_pending(T0) == RelayResult(sent=6)
    assert all(row(i).status == "sent" for i in breaches)
    assert len(twilio.bodies_to(ENGINEER)) == 6


def test_rows_whose_outcome_is_unknown_are_claimed_before_an_earlier_due_backlog(
    app: Flask, make_sms: Callable[..., int]
) -> None:
    backlog = [make_sms(at=T0 + timedelta(seconds=n)) for n in range(4)]
    refused = make_sms(at=T0 - timedelta(seconds=1), last_error="HTTP 503: try later")
    unknown = [
        make_sms(at=T0 + timedelta(seconds=9), last_error=f"{UNKNOWN_MARK}: ReadTimeout"),
        make_sms(at=T0 + timedelta(seconds=8), last_error=f"{UNKNOWN_MARK}: attempt 1 in flight"),
    ]

    def claim(limit: int) -> set[int]:
        claimed = relay._claim(T0 + timedelta(seconds=10), T0 + timedelta(minutes=1), limit)
        db.session.commit()
        return {c.message.id for c in claimed}

    # The look-ups first (earliest due first among them), then the rest earliest due first.
    assert claim(1) == {unknown[1]}
    assert claim(2) == {unknown[0], refused}
    assert claim(10) == set(backlog)


def test_a_sender_that_lost_its_lease_writes_nothing(app: Flask, make_sms: Callable[..., int]) -> None:
    message_id = make_sms()
    [claimed] = relay._claim(T0, T0 + timedelta(minutes=1), 10)
    db.session.commit()
    # Stalled past the lease, the row went to another sender, which claimed it again.
    db.session.execute(
        sa.update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(attempts=OutboxMessage.attempts + 1)
    )
    db.session.commit()

    assert relay._write(claimed, status="sent", sent_at=T0) is False
    assert row(message_id).status == "pending"


# --- transactions, races, the scheduler ------------------------------------------------------------------


def _database_locked_or_in_transaction(app: Flask) -> bool:
    """Whether some connection of this test holds a transaction open right now."""
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        probe = sqlite3.connect(uri.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # every transaction of the app holds the write lock
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            busy = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                )
            ).scalar_one()
        return bool(busy)
    finally:
        engine.dispose()


def test_no_database_transaction_is_open_while_twilio_is_asked(
    committed_app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    make_sms()
    make_sms(attempts=1, last_error=f"{UNKNOWN_MARK}: attempt 1 in flight")  # looked up first
    db.session.remove()
    seen: list[bool] = []
    twilio.on_create = lambda form: seen.append(_database_locked_or_in_transaction(committed_app))
    original = twilio._handle_list

    def spying_list(handler: Any, params: dict[str, str]) -> None:
        seen.append(_database_locked_or_in_transaction(committed_app))
        original(handler, params)

    twilio._handle_list = spying_list  # type: ignore[method-assign]

    assert deliver_pending(T0) == RelayResult(sent=2)
    assert seen == [False] * 4  # two look-ups, two creates


def test_two_relays_racing_send_each_message_once(
    committed_app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    ids = [make_sms(f"+86139{n:08d}") for n in range(120)]
    db.session.remove()
    results: list[RelayResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def sender() -> None:
        with committed_app.app_context():
            try:
                start.wait()
                results.append(deliver_pending(T0, limit=7))
            except BaseException as exc:
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sum(r.sent for r in results) == 120
    assert sent_bodies(twilio).most_common(1)[0][1] == 1 and len(twilio.created) == 120
    sids = {row(i).provider_sid for i in ids}
    assert len(sids) == 120 and None not in sids
    if committed_app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        assert sum(r.sent > 0 for r in results) >= 2, results  # SKIP LOCKED: they worked side by side


def test_status_callbacks_for_a_relayed_message_reach_its_row(
    app: Flask, make_sms: Callable[..., int], twilio: FakeTwilio
) -> None:
    message_id = make_sms()
    deliver_pending(T0)
    sid = row(message_id).provider_sid
    assert sid is not None

    response = twilio.post_status_callback(app.test_client(), sid, "delivered")

    assert response.status_code == 204
    assert row(message_id).status == "delivered"


def test_the_scheduler_runs_the_relay_as_its_sms_relay_job(
    committed_app: Flask, make_sms: Callable[..., int]
) -> None:
    message_id = make_sms()
    db.session.remove()
    job = next(j for j in scheduling.JOBS if j.id == "sms-relay")

    assert job.seconds(committed_app) == committed_app.config["SCHEDULER_TICK_SECONDS"]
    assert scheduling.run_job(committed_app, job) == RelayResult(sent=1)
    assert scheduling.run_job(committed_app, job) == RelayResult()
    assert row(message_id).status == "sent"
