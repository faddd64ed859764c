"""Twilio's webhooks (CONTRACT §5): delivery statuses and inbound SMS, authenticated by X-Twilio-Signature.

Requests are signed as Twilio signs them: ``RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(url, form)``
with ``url`` = PUBLIC_BASE_URL + path (+ query string), the URL Twilio requested. The Flask test client's own
URL (http://localhost/...) is what a proxy would forward, and a signature over it must not pass.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from dispatch.clock import FakeClock
from dispatch.extensions import db
from dispatch.models import (
    Engineer,
    IdempotencyRecord,
    InboundMessage,
    Order,
    OrderEvent,
    OutboxMessage,
    SatisfactionResponse,
    SmsOptOut,
)
from dispatch.services import sms_inbound
from tests.conftest import T0, bearer
from tests.services.test_workflow import Flow

TOKEN = "twilio-test-auth-token-0123456789"
BASE = "https://dispatch.example.com"
STATUS, INBOUND = "/webhooks/twilio/status", "/webhooks/twilio/inbound"
CUSTOMER_PHONE, CUSTOMER_E164 = "13912345678", "+8613912345678"

_sids = count(1)


def new_sid(prefix: str = "SM") -> str:
    return f"{prefix}{next(_sids):032x}"


@pytest.fixture(autouse=True)
def twilio_config(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", BASE)


def signature(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


def post_signed(
    client: FlaskClient,
    path: str,
    params: dict[str, str],
    *,
    signed_url: str | None = None,
    token: str = TOKEN,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST ``params`` as Twilio does: a form, signed over the URL Twilio requested."""
    sig = signature(signed_url if signed_url is not None else BASE + path, params, token)
    return client.post(path, data=params, headers={"X-Twilio-Signature": sig, **(headers or {})})


def status_form(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "0" * 32,
        "To": "+8613800138000",
        "From": "+8610000000000",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def inbound_form(body: str, *, sid: str | None = None, sender: str = CUSTOMER_E164) -> dict[str, str]:
    return {
        "MessageSid": sid or new_sid(),
        "SmsMessageSid": sid or "",
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": "+8610000000000",
        "Body": body,
        "NumMedia": "0",
        "FromCountry": "CN",
    }


# --- outbox rows and their state ------------------------------------------------------------------------


@pytest.fixture
def sent_message(app: Flask) -> Callable[..., OutboxMessage]:
    """An SMS outbox row that the sender handed to Twilio (it has Twilio's sid)."""

    def factory(status: str = "sent", sid: str | None = None) -> OutboxMessage:
        sid = sid or new_sid()
        message = OutboxMessage(
            kind="sms",
            dedupe_key=f"test:{sid}",
            recipient="+8613800138000",
            template="appointment_confirmed",
            body="您的预约已确认",
            payload={"recipient_role": "customer"},
            status=status,
            attempts=1,
            next_attempt_at=T0,
            provider_sid=sid,
            created_at=T0,
            sent_at=T0 if status != "pending" else None,
        )
        db.session.add(message)
        db.session.commit()
        return message

    return factory


def row(message: OutboxMessage) -> tuple[Any, ...]:
    """The row as stored now (not as this session last saw it)."""
    found = db.session.execute(
        sa.select(OutboxMessage.status, OutboxMessage.error_code, OutboxMessage.status_updated_at).where(
            OutboxMessage.id == message.id
        )
    ).one()
    return tuple(found)


def count_rows(model: Any, *where: Any) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


def everything() -> dict[str, Any]:
    """What a webhook could write: compared before and after a request that must write nothing."""
    return {
        "outbox": sorted(
            tuple(r)
            for r in db.session.execute(
                sa.select(
                    OutboxMessage.id,
                    OutboxMessage.status,
                    OutboxMessage.error_code,
                    OutboxMessage.status_updated_at,
                )
            )
        ),
        "inbound": count_rows(InboundMessage),
        "opt_outs": count_rows(SmsOptOut),
        "scores": count_rows(SatisfactionResponse),
        "events": count_rows(OrderEvent),
    }


# --- the signature --------------------------------------------------------------------------------------


def forgeries(path: str, params: dict[str, str]) -> dict[str, dict[str, str]]:
    """Headers of requests that must be refused, each named by how it is wrong."""
    tampered = {**params, "MessageStatus": "failed", "Body": "退订"}
    return {
        "missing": {},
        "empty": {"X-Twilio-Signature": ""},
        "garbage": {"X-Twilio-Signature": "not-a-signature"},
        "wrong auth token": {"X-Twilio-Signature": signature(BASE + path, params, token="someone-else")},
        "other form fields": {"X-Twilio-Signature": signature(BASE + path, tampered)},
        "proxy's url (http://localhost)": {
            "X-Twilio-Signature": signature("http://localhost" + path, params)
        },
        "http instead of https": {
            "X-Twilio-Signature": signature(BASE.replace("https", "http") + path, params)
        },
        "another webhook's path": {
            "X-Twilio-Signature": signature(BASE + (INBOUND if path == STATUS else STATUS), params)
        },
        "without the query string": {"X-Twilio-Signature": signature(BASE + path, params)},
    }


@pytest.mark.parametrize("path", [STATUS, INBOUND])
def test_forged_missing_or_misaddressed_signatures_get_403_and_write_nothing(
    client: FlaskClient, sent_message: Callable[..., OutboxMessage], path: str
) -> None:
    message = sent_message()
    params = status_form(message.provider_sid or "", "delivered") if path == STATUS else inbound_form("TD")
    before = everything()
    for name, headers in forgeries(path, params).items():
        url = path + "?attempt=1" if name == "without the query string" else path
        response = client.post(url, data=params, headers=headers)
        assert response.status_code == 403, name
        assert response.get_json() == {"code": 403, "message": "Missing or invalid X-Twilio-Signature"}, name
    assert everything() == before


def test_a_bearer_token_is_no_substitute_for_the_signature(
    client: FlaskClient, token: Callable[..., str], sent_message: Callable[..., OutboxMessage]
) -> None:
    message = sent_message()
    response = client.post(
        STATUS, data=status_form(message.provider_sid or "", "delivered"), headers=bearer(token("admin"))
    )
    assert response.status_code == 403
    assert row(message)[0] == "sent"


def test_without_a_configured_auth_token_every_webhook_is_refused(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(app.config, "TWILIO_AUTH_TOKEN", None)
    params = inbound_form("TD")
    with caplog.at_level(logging.ERROR, logger="dispatch"):
        response = client.post(
            INBOUND, data=params, headers={"X-Twilio-Signature": signature("", params, "x")}
        )
    assert response.status_code == 403
    assert "TWILIO_AUTH_TOKEN" in caplog.text
    assert count_rows(InboundMessage) == 0


def test_the_signed_url_includes_the_query_string_twilio_requested(
    client: FlaskClient, sent_message: Callable[..., OutboxMessage]
) -> None:
    message = sent_message()
    params = status_form(message.provider_sid or "", "delivered")
    path = STATUS + "?outbox=7&n=%E4%B8%AD"
    assert post_signed(client, path, params).status_code == 204
    assert row(message)[0] == "delivered"


def test_a_trailing_slash_in_public_base_url_does_not_break_the_signature(
    app: Flask,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    sent_message: Callable[..., OutboxMessage],
) -> None:
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", BASE + "/")
    message = sent_message()
    assert (
        post_signed(client, STATUS, status_form(message.provider_sid or "", "delivered")).status_code == 204
    )
    assert row(message)[0] == "delivered"


def test_an_idempotency_key_on_a_webhook_is_ignored_not_stored(
    client: FlaskClient, sent_message: Callable[..., OutboxMessage]
) -> None:
    """Twilio's retries are made idempotent by the sid; a stored replay would hide the second status."""
    sid = sent_message("pending").provider_sid or ""
    headers = {"Idempotency-Key": "twilio-retry-1"}
    for status in ("sent", "delivered"):
        assert post_signed(client, STATUS, status_form(sid, status), headers=headers).status_code == 204
    assert db.session.scalar(sa.select(OutboxMessage.status).where(OutboxMessage.provider_sid == sid)) == (
        "delivered"
    )
    assert count_rows(IdempotencyRecord) == 0


# --- malformed forms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        (STATUS, {"MessageStatus": "delivered"}, "MessageSid"),
        (STATUS, {"MessageSid": "SM" + "1" * 32}, "MessageStatus"),
        (STATUS, {"MessageSid": "SM" + "1" * 32, "MessageStatus": "exploded"}, "MessageStatus"),
        (STATUS, {"MessageSid": "SM" + "1" * 32, "MessageStatus": "failed", "ErrorCode": "x1"}, "ErrorCode"),
        (
            STATUS,
            {"MessageSid": "SM" + "1" * 32, "MessageStatus": "failed", "ErrorCode": "9" * 12},
            "ErrorCode",
        ),
        (STATUS, {"MessageSid": "SM'; DROP TABLE outbox;--", "MessageStatus": "sent"}, "MessageSid"),
        (STATUS, {"MessageSid": "S" * 65, "MessageStatus": "sent"}, "MessageSid"),
        (INBOUND, {"From": CUSTOMER_E164, "Body": "TD"}, "MessageSid"),
        (INBOUND, {"MessageSid": "SM" + "2" * 32, "Body": "TD"}, "From"),
        (INBOUND, {"MessageSid": "SM" + "2" * 32, "From": "", "Body": "TD"}, "From"),
        (INBOUND, {"MessageSid": "SM" + "2" * 32, "From": "+" + "1" * 40, "Body": "TD"}, "From"),
        (INBOUND, {"MessageSid": "SM" + "2" * 32, "From": CUSTOMER_E164, "Body": "x" * 1601}, "Body"),
        (INBOUND, {"MessageSid": "SM" + "2" * 32, "From": CUSTOMER_E164, "Body": "T\x00D"}, "Body"),
    ],
)
def test_a_signed_but_malformed_form_is_a_422_with_the_field_named(
    client: FlaskClient, path: str, params: dict[str, str], field: str
) -> None:
    before = everything()
    response = post_signed(client, path, params)
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == 422 and body["message"]
    assert field in body["errors"]
    assert everything() == before


@pytest.mark.parametrize("path", [STATUS, INBOUND])
def test_an_unsigned_json_body_gets_403_not_a_validation_error(client: FlaskClient, path: str) -> None:
    response = client.post(path, json={"MessageSid": "SM1", "MessageStatus": "sent"})
    assert response.status_code == 403


@pytest.mark.parametrize("path", [STATUS, INBOUND])
def test_only_post_is_routed(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 405
    assert response.get_json()["code"] == 405


# --- status callbacks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "twilio_status", "ours"),
    [
        ("pending", "accepted", "sent"),
        ("pending", "queued", "sent"),
        ("pending", "sending", "sent"),
        ("pending", "sent", "sent"),
        ("deferred", "sent", "sent"),
        ("sent", "delivered", "delivered"),
        ("sent", "undelivered", "undelivered"),
        ("sent", "failed", "failed"),
        ("pending", "delivered", "delivered"),
    ],
)
def test_each_twilio_status_maps_to_ours_with_the_time_it_was_reported(
    client: FlaskClient,
    clock: FakeClock,
    sent_message: Callable[..., OutboxMessage],
    start: str,
    twilio_status: str,
    ours: str,
) -> None:
    message = sent_message(start)
    now = clock.advance(minutes=3)
    response = post_signed(client, STATUS, status_form(message.provider_sid or "", twilio_status))
    assert response.status_code == 204
    assert response.get_data() == b""
    assert row(message) == (ours, None, now)


@pytest.mark.parametrize(("twilio_status", "code"), [("failed", 30008), ("undelivered", 30003)])
def test_the_error_code_of_a_failure_is_kept(
    client: FlaskClient, sent_message: Callable[..., OutboxMessage], twilio_status: str, code: int
) -> None:
    message = sent_message()
    form = status_form(message.provider_sid or "", twilio_status, ErrorCode=str(code))
    assert post_signed(client, STATUS, form).status_code == 204
    assert row(message)[:2] == (twilio_status, code)


def test_an_empty_error_code_is_no_error_code(
    client: FlaskClient, sent_message: Callable[..., OutboxMessage]
) -> None:
    message = sent_message()
    assert (
        post_signed(
            client, STATUS, status_form(message.provider_sid or "", "delivered", ErrorCode="")
        ).status_code
        == 204
    )
    assert row(message)[:2] == ("delivered", None)


@pytest.mark.parametrize(
    ("first", "then", "final"),
    [
        ("delivered", "sent", "delivered"),
        ("delivered", "queued", "delivered"),
        ("failed", "sending", "failed"),
        ("undelivered", "delivered", "undelivered"),  # the first final status wins
        ("delivered", "failed", "delivered"),
        ("failed", "delivered", "failed"),
    ],
)
def test_statuses_never_move_backwards_and_the_first_final_status_wins(
    client: FlaskClient,
    clock: FakeClock,
    sent_message: Callable[..., OutboxMessage],
    first: str,
    then: str,
    final: str,
) -> None:
    message = sent_message()
    sid = message.provider_sid or ""
    at = clock.advance(minutes=1)
    assert post_signed(client, STATUS, status_form(sid, first, ErrorCode="30003")).status_code == 204
    settled = row(message)
    clock.advance(minutes=1)
    assert post_signed(client, STATUS, status_form(sid, then, ErrorCode="30008")).status_code == 204
    assert row(message) == settled
    assert settled[0] == final and settled[2] == at


def test_a_duplicate_sent_callback_changes_nothing(
    app: Flask, clock: FakeClock, sent_message: Callable[..., OutboxMessage]
) -> None:
    message = sent_message("pending")
    form = status_form(message.provider_sid or "", "queued")
    assert sms_inbound.record_status(form, now=clock.advance(minutes=1)) is True
    first = row(message)
    assert sms_inbound.record_status(form, now=clock.advance(minutes=1)) is False
    assert (
        sms_inbound.record_status(status_form(message.provider_sid or "", "sent"), now=clock.now()) is False
    )
    assert row(message) == first


SEQUENCES = [
    ["accepted", "queued", "sent", "delivered"],
    ["queued", "sending", "sent", "undelivered"],
    ["queued", "sent", "failed"],
    ["queued", "sent", "delivered"],
    ["accepted", "queued", "sending", "failed"],
]


@pytest.mark.parametrize("seed", range(6))
def test_callbacks_replayed_three_times_in_random_order_end_as_in_order_delivery(
    client: FlaskClient, sent_message: Callable[..., OutboxMessage], seed: int
) -> None:
    """QUALITY.md: Twilio status callbacks replayed 3× in random order → same final state, never backwards."""
    in_order = {}
    for sequence in SEQUENCES:
        message = sent_message("pending")
        for status in sequence:
            post_signed(client, STATUS, status_form(message.provider_sid or "", status, ErrorCode="30003"))
        in_order[tuple(sequence)] = row(message)[:2]

    rank = {"pending": 0, "sent": 1, "delivered": 2, "undelivered": 2, "failed": 2}
    rng = random.Random(seed)
    messages = {tuple(sequence): sent_message("pending") for sequence in SEQUENCES}
    deliveries = [(m, s) for sequence, m in messages.items() for s in sequence * 3]
    rng.shuffle(deliveries)
    seen: dict[int, str] = {}
    for message, status in deliveries:
        form = status_form(message.provider_sid or "", status, ErrorCode="30003")
        assert post_signed(client, STATUS, form).status_code == 204
        now = row(message)[0]
        before = seen.get(message.id, "pending")
        assert rank[now] >= rank[before], f"{before} → {now}"
        assert rank[before] < 2 or now == before, f"final {before} replaced by {now}"
        seen[message.id] = now
    for sequence, message in messages.items():
        assert row(message)[:2] == in_order[sequence], sequence


def test_an_unknown_sid_is_answered_204_logged_and_writes_nothing(
    client: FlaskClient, sent_message: Callable[..., OutboxMessage], caplog: pytest.LogCaptureFixture
) -> None:
    sent_message()
    before = everything()
    unknown = new_sid()
    with caplog.at_level(logging.WARNING, logger="dispatch"):
        response = post_signed(client, STATUS, status_form(unknown, "delivered"))
    assert response.status_code == 204
    assert everything() == before
    assert unknown in caplog.text and "unknown" in caplog.text


@pytest.mark.parametrize(
    "twilio_status", ["scheduled", "canceled", "read", "receiving", "partially_delivered"]
)
def test_a_status_we_do_not_track_is_accepted_and_changes_nothing(
    client: FlaskClient, sent_message: Callable[..., OutboxMessage], twilio_status: str
) -> None:
    message = sent_message()
    before = row(message)
    assert (
        post_signed(client, STATUS, status_form(message.provider_sid or "", twilio_status)).status_code == 204
    )
    assert row(message) == before


def test_a_suppressed_message_is_never_revived_by_a_callback(
    client: FlaskClient, sent_message: Callable[..., OutboxMessage]
) -> None:
    message = sent_message("suppressed")
    assert (
        post_signed(client, STATUS, status_form(message.provider_sid or "", "delivered")).status_code == 204
    )
    assert row(message)[0] == "suppressed"


# --- inbound: replies, orders, customers ----------------------------------------------------------------


def post_inbound(client: FlaskClient, body: str, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    form = inbound_form(body, **kwargs)
    response = post_signed(client, INBOUND, form)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/xml"
    assert response.get_data(as_text=True).endswith("<Response/>")
    return response, form


def handled_as(form: dict[str, str]) -> str | None:
    return db.session.scalar(
        sa.select(InboundMessage.handled_as).where(InboundMessage.message_sid == form["MessageSid"])
    )


def opt_out_of(phone: str) -> tuple[Any, ...] | None:
    found = db.session.execute(
        sa.select(SmsOptOut.keyword, SmsOptOut.opted_out_at).where(SmsOptOut.phone == phone)
    ).one_or_none()
    return tuple(found) if found is not None else None


def events(order: Order, action: str) -> list[OrderEvent]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            sa.select(OrderEvent).where(OrderEvent.order_id == order.id, OrderEvent.action == action)
        )
    )


@pytest.fixture
def flow(
    app: Flask, clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]
) -> Flow:
    """Orders of the customer with CUSTOMER_PHONE, driven through the real workflow."""
    customers_order = functools.partial(make_order, customer={"name": "李四", "phone": CUSTOMER_PHONE})
    return Flow(clock, customers_order, make_engineer)


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("STOP", "STOP"),
        ("TD", "TD"),
        ("退订", "退订"),
        ("  td \n", "TD"),
        ("Stop", "STOP"),
        ("ＳＴＯＰ", "STOP"),  # full width
        ("STOP  ALL", "STOP ALL"),
        ("unsubscribe", "UNSUBSCRIBE"),
        ("退订。", "退订"),
    ],
)
def test_stop_td_and_退订_opt_the_number_out(
    client: FlaskClient, clock: FakeClock, body: str, keyword: str
) -> None:
    now = clock.advance(minutes=5)
    _, form = post_inbound(client, body)
    assert opt_out_of(CUSTOMER_E164) == (keyword, now)
    assert handled_as(form) == "opt_out"


def test_the_sender_is_normalised_to_e164(client: FlaskClient) -> None:
    _, form = post_inbound(client, "TD", sender="+86 139-1234-5678")
    assert opt_out_of(CUSTOMER_E164) is not None
    stored = db.session.scalar(
        sa.select(InboundMessage.from_phone).where(InboundMessage.message_sid == form["MessageSid"])
    )
    assert stored == CUSTOMER_E164


def test_start_opts_the_number_back_in_and_a_replayed_stop_does_not_undo_it(
    client: FlaskClient, clock: FakeClock
) -> None:
    _, stop = post_inbound(client, "退订")
    assert opt_out_of(CUSTOMER_E164) is not None
    clock.advance(minutes=1)
    _, start = post_inbound(client, "start")
    assert opt_out_of(CUSTOMER_E164) is None
    assert handled_as(start) == "opt_in"
    response = post_signed(client, INBOUND, stop)  # Twilio retries the old STOP
    assert response.status_code == 200
    assert opt_out_of(CUSTOMER_E164) is None


def test_start_without_an_opt_out_is_harmless(client: FlaskClient) -> None:
    _, form = post_inbound(client, "START")
    assert handled_as(form) == "opt_in"
    assert count_rows(SmsOptOut) == 0


def test_an_opt_out_replayed_is_taken_once_and_answered_the_same(
    client: FlaskClient, clock: FakeClock
) -> None:
    first_at = clock.now()
    first, form = post_inbound(client, "TD")
    for _ in range(3):
        clock.advance(minutes=1)
        again = post_signed(client, INBOUND, form)
        assert (again.status_code, again.get_data()) == (first.status_code, first.get_data())
    assert count_rows(InboundMessage) == 1
    assert opt_out_of(CUSTOMER_E164) == ("TD", first_at)
    # Another STOP from the same number (a new message): still one opt-out, the first one.
    _, second = post_inbound(client, "STOP")
    assert handled_as(second) == "opt_out"
    assert opt_out_of(CUSTOMER_E164) == ("TD", first_at)
    assert count_rows(InboundMessage) == 2


def test_a_replay_returns_what_the_first_delivery_was_handled_as(app: Flask, clock: FakeClock) -> None:
    form = inbound_form("TD")
    assert sms_inbound.handle_inbound(form, now=clock.now()) == "opt_out"
    db.session.execute(sa.delete(SmsOptOut))
    assert sms_inbound.handle_inbound(form, now=clock.advance(minutes=1)) == "opt_out"
    assert count_rows(SmsOptOut) == 0  # the replay did nothing, not even re-opt-out


@pytest.mark.parametrize(
    "sender", ["+15005550006", "+441632960961", "10086", "+8601087654321", "not-a-number"]
)
def test_a_message_from_a_number_that_is_not_a_cn_mobile_is_recorded_as_ignored(
    client: FlaskClient, sender: str
) -> None:
    _, form = post_inbound(client, "STOP", sender=sender)
    assert handled_as(form) == "ignored"
    assert count_rows(SmsOptOut) == 0
    stored = db.session.scalar(
        sa.select(InboundMessage.from_phone).where(InboundMessage.message_sid == form["MessageSid"])
    )
    assert stored == sender


@pytest.mark.parametrize("body", ["你好", "6", "0", "12", "1 2", "", "STOP please", "确认"])
def test_anything_else_is_recorded_as_unrecognised(client: FlaskClient, flow: Flow, body: str) -> None:
    flow.order_in("appointed")
    before = everything()
    _, form = post_inbound(client, body)
    assert handled_as(form) == "unrecognised"
    after = everything()
    assert after == {**before, "inbound": before["inbound"] + 1}


def test_1_confirms_the_appointment_of_the_latest_appointed_order(
    client: FlaskClient, clock: FakeClock, flow: Flow
) -> None:
    older, _ = flow.order_in("appointed")
    latest, _ = flow.order_in("appointed")
    now = clock.advance(minutes=10)
    _, form = post_inbound(client, "1")
    assert handled_as(form) == "confirm"
    [event] = events(latest, "customer_confirmed")
    assert (event.from_status, event.to_status) == ("appointed", "appointed")
    assert (event.actor_type, event.actor_id, event.actor_name, event.source) == (
        "system",
        None,
        "sms-inbound",
        "sms",
    )
    assert event.occurred_at == now
    assert event.payload["message_sid"] == form["MessageSid"]
    assert event.payload["appointment"]["start"] == latest.appointment_start.isoformat()
    assert events(older, "customer_confirmed") == []
    db.session.refresh(latest)
    assert latest.status == "appointed"
    stored = db.session.scalar(
        sa.select(InboundMessage.order_id).where(InboundMessage.message_sid == form["MessageSid"])
    )
    assert stored == latest.id


def test_a_replayed_confirmation_appends_one_event(client: FlaskClient, flow: Flow) -> None:
    order, _ = flow.order_in("appointed")
    _, form = post_inbound(client, "１")  # full width
    for _ in range(2):
        assert post_signed(client, INBOUND, form).status_code == 200
    assert len(events(order, "customer_confirmed")) == 1


def test_2_asks_for_a_new_time_and_alerts_the_engineer(
    client: FlaskClient, clock: FakeClock, flow: Flow
) -> None:
    order, engineer = flow.order_in("appointed")
    now = clock.advance(minutes=10)
    _, form = post_inbound(client, "2")
    assert handled_as(form) == "reschedule"
    [event] = events(order, "customer_reschedule_requested")
    assert (event.from_status, event.to_status, event.actor_name) == ("appointed", "appointed", "sms-inbound")
    assert event.payload["message_sid"] == form["MessageSid"]
    alert = db.session.scalars(
        sa.select(OutboxMessage).where(
            OutboxMessage.order_id == order.id, OutboxMessage.template == "reschedule_request"
        )
    ).one()
    assert alert.dedupe_key == f"inbound:{form['MessageSid']}:engineer"
    assert (alert.kind, alert.recipient, alert.body, alert.status, alert.attempts) == (
        "sms",
        engineer.phone,
        None,
        "pending",
        0,
    )
    assert alert.next_attempt_at == now and alert.created_at == now
    assert alert.payload["recipient_role"] == "engineer"
    assert alert.payload["order_id"] == order.id
    # Replayed: still one event and one SMS.
    assert post_signed(client, INBOUND, form).status_code == 200
    assert len(events(order, "customer_reschedule_requested")) == 1
    assert count_rows(OutboxMessage, OutboxMessage.template == "reschedule_request") == 1


@pytest.mark.parametrize("status", ["taken", "on_site", "dispatched", "new"])
def test_1_and_2_without_an_appointed_order_are_unrecognised(
    client: FlaskClient, flow: Flow, status: str
) -> None:
    order, _ = flow.order_in(status)
    for body in ("1", "2"):
        _, form = post_inbound(client, body)
        assert handled_as(form) == "unrecognised"
    assert events(order, "customer_confirmed") == events(order, "customer_reschedule_requested") == []
    assert count_rows(OutboxMessage, OutboxMessage.template == "reschedule_request") == 0


def test_a_digit_from_an_unknown_number_is_unrecognised(client: FlaskClient, flow: Flow) -> None:
    flow.order_in("appointed")
    _, form = post_inbound(client, "1", sender="+8613700000001")
    assert handled_as(form) == "unrecognised"
    assert count_rows(OrderEvent, OrderEvent.action == "customer_confirmed") == 0


# --- inbound: satisfaction scores -----------------------------------------------------------------------


def scores() -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in db.session.execute(
            sa.select(
                SatisfactionResponse.order_id,
                SatisfactionResponse.phone,
                SatisfactionResponse.score,
                SatisfactionResponse.received_at,
                SatisfactionResponse.message_sid,
            )
        )
    ]


@pytest.mark.parametrize(
    ("body", "score"), [("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5", 5), ("５", 5), ("３", 3), (" 4 ", 4)]
)
def test_a_score_after_completion_is_recorded_once(
    client: FlaskClient, clock: FakeClock, flow: Flow, body: str, score: int
) -> None:
    order, _ = flow.order_in("completed")
    now = clock.advance(hours=2)
    _, form = post_inbound(client, body)
    assert handled_as(form) == "satisfaction"
    assert scores() == [(order.id, CUSTOMER_E164, score, now, form["MessageSid"])]
    [event] = events(order, "satisfaction_recorded")
    assert (event.from_status, event.to_status, event.actor_name) == ("completed", "completed", "sms-inbound")
    assert event.payload == {"message_sid": form["MessageSid"], "score": score}
    # the same message again, and a second answer: the first score stands
    assert post_signed(client, INBOUND, form).status_code == 200
    _, second = post_inbound(client, "5" if score != 5 else "1")
    assert handled_as(second) == "unrecognised"
    assert scores() == [(order.id, CUSTOMER_E164, score, now, form["MessageSid"])]
    assert len(events(order, "satisfaction_recorded")) == 1


def test_no_score_for_an_order_completed_more_than_7_days_ago(
    client: FlaskClient, clock: FakeClock, flow: Flow
) -> None:
    order, _ = flow.order_in("completed")
    clock.advance(days=7, minutes=1)
    _, form = post_inbound(client, "5")
    assert handled_as(form) == "unrecognised"
    assert scores() == []
    assert events(order, "satisfaction_recorded") == []


def test_a_score_just_inside_7_days_counts(client: FlaskClient, clock: FakeClock, flow: Flow) -> None:
    order, _ = flow.order_in("completed")
    clock.advance(days=6, hours=23)
    _, form = post_inbound(client, "4")
    assert handled_as(form) == "satisfaction"
    assert [s[:3] for s in scores()] == [(order.id, CUSTOMER_E164, 4)]


@pytest.mark.parametrize("status", ["in_progress", "on_site", "cancelled"])
def test_no_score_for_an_order_that_is_not_completed(client: FlaskClient, flow: Flow, status: str) -> None:
    flow.order_in(status)
    _, form = post_inbound(client, "4")
    assert handled_as(form) == "unrecognised"
    assert scores() == []


def test_1_with_an_appointed_order_confirms_rather_than_scores(client: FlaskClient, flow: Flow) -> None:
    done, _ = flow.order_in("completed")
    upcoming, _ = flow.order_in("appointed")
    _, confirm = post_inbound(client, "1")
    assert handled_as(confirm) == "confirm"
    assert len(events(upcoming, "customer_confirmed")) == 1
    assert scores() == []
    _, score = post_inbound(client, "4")  # not 1 or 2: the completed order's score
    assert handled_as(score) == "satisfaction"
    assert [s[:3] for s in scores()] == [(done.id, CUSTOMER_E164, 4)]


def test_the_latest_completed_order_without_a_score_gets_it(
    client: FlaskClient, clock: FakeClock, flow: Flow
) -> None:
    first, _ = flow.order_in("completed")
    second, _ = flow.order_in("completed")
    post_inbound(client, "5")
    post_inbound(client, "3")
    assert sorted(s[:3] for s in scores()) == sorted(
        [(second.id, CUSTOMER_E164, 5), (first.id, CUSTOMER_E164, 3)]
    )


def test_a_forged_inbound_message_writes_nothing(client: FlaskClient, flow: Flow) -> None:
    order, _ = flow.order_in("completed")
    before = everything()
    form = inbound_form("5")
    response = client.post(
        INBOUND, data=form, headers={"X-Twilio-Signature": signature(BASE + INBOUND, {**form, "Body": "4"})}
    )
    assert response.status_code == 403
    assert everything() == before
    assert events(order, "satisfaction_recorded") == []


# --- the reply normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        ("  stop\t", "STOP"),
        ("ＴＤ", "TD"),
        ("１", "1"),
        ("退订！", "退订"),
        ("Stop   All", "STOP ALL"),
        ("", ""),
    ],
)
def test_replies_are_compared_trimmed_case_folded_and_half_width(body: str, reply: str) -> None:
    assert sms_inbound.normalise_reply(body) == reply
