"""Twilio's webhooks under concurrent, repeated delivery (QUALITY.md "Reliability"), on PostgreSQL.

Status callbacks: 200 messages each go through 3–4 Twilio statuses; every callback is delivered three times,
all of them shuffled together and posted from 8 threads through the real webhook (signed, real commits). A
watcher polls the outbox meanwhile: no row may ever move backwards (pending → sent → a final status), and a
final status is never replaced. At the end every row holds the status that in-order delivery gives.

Inbound messages: one reply delivered by 8 threads at once is taken once; 8 different replies about one
order race for its single satisfaction score, and exactly one gets it.
"""

from __future__ import annotations

import functools
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from twilio.request_validator import RequestValidator

from dispatch.extensions import db
from dispatch.models import InboundMessage, OrderEvent, OutboxMessage, SatisfactionResponse, SmsOptOut
from dispatch.services.sms_inbound import TWILIO_STATUSES
from tests.conftest import T0
from tests.services.test_workflow import Flow

TOKEN = "twilio-reliability-token"
BASE = "https://dispatch.example.com"
PATH = "/webhooks/twilio/status"
MESSAGES, COPIES, THREADS = 200, 3, 8
SEQUENCES = [
    ["accepted", "queued", "sent", "delivered"],
    ["queued", "sending", "sent", "undelivered"],
    ["queued", "sent", "failed"],
    ["queued", "sent", "delivered"],
    ["accepted", "queued", "sending", "failed"],
]
ERROR_CODES = {"undelivered": "30003", "failed": "30008"}
RANK = {"pending": 0, "sent": 1, "delivered": 2, "undelivered": 2, "failed": 2}


def _messages(app: Flask, prefix: str) -> dict[str, list[str]]:
    """200 pending SMS rows with Twilio sids, committed; sid → the statuses Twilio will report."""
    rng = random.Random(7)  # the same plan for every prefix
    plan: dict[str, list[str]] = {}
    rows = []
    for n in range(MESSAGES):
        sid = f"{prefix}{n:032x}"
        plan[sid] = rng.choice(SEQUENCES)
        rows.append(
            OutboxMessage(
                kind="sms",
                dedupe_key=f"reliability:{sid}",
                recipient="+8613800138000",
                template="appointment_confirmed",
                body="您的预约已确认",
                payload={"recipient_role": "customer"},
                status="pending",
                attempts=1,
                next_attempt_at=T0,
                provider_sid=sid,
                created_at=T0,
            )
        )
    with app.app_context():
        db.session.add_all(rows)
        db.session.commit()
        db.session.remove()
    return plan


def _final_states(prefix: str) -> dict[str, tuple[Any, ...]]:
    """Row number → (status, error code, whether status_updated_at is set), for the rows of ``prefix``."""
    db.session.remove()
    rows = db.session.execute(
        sa.select(
            OutboxMessage.provider_sid,
            OutboxMessage.status,
            OutboxMessage.error_code,
            OutboxMessage.status_updated_at,
        ).where(OutboxMessage.provider_sid.startswith(prefix))
    )
    return {sid[len(prefix) :]: (status, code, updated is not None) for sid, status, code, updated in rows}


def _form(sid: str, status: str) -> dict[str, str]:
    form = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "AccountSid": "AC" + "0" * 32}
    if status in ERROR_CODES:
        form["ErrorCode"] = ERROR_CODES[status]
    return form


class Watcher(threading.Thread):
    """Polls every row's status on its own connection and records any step backwards."""

    def __init__(self, app: Flask) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.stop = threading.Event()
        self.seen: dict[str, str] = {}
        self.violations: list[str] = []
        self.polls = 0

    def run(self) -> None:
        with self.app.app_context():
            engine = db.engine
            while True:
                last = self.stop.is_set()
                with engine.connect() as conn:
                    rows = conn.execute(sa.select(OutboxMessage.provider_sid, OutboxMessage.status)).all()
                self.polls += 1
                for sid, status in rows:
                    before = self.seen.get(sid, "pending")
                    if RANK[status] < RANK[before] or (RANK[before] == 2 and status != before):
                        self.violations.append(f"{sid}: {before} → {status}")
                    self.seen[sid] = status
                if last:
                    return
                time.sleep(0.01)


@pytest.mark.slow
def test_callbacks_replayed_3x_in_random_order_from_8_threads_end_as_in_order_delivery(
    pg_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(pg_app.config, "TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setitem(pg_app.config, "PUBLIC_BASE_URL", BASE)
    validator = RequestValidator(TOKEN)

    def post(client: Any, sid: str, status: str) -> int:
        form = _form(sid, status)
        signature = validator.compute_signature(BASE + PATH, form)
        return int(client.post(PATH, data=form, headers={"X-Twilio-Signature": signature}).status_code)

    # The reference: the same plan delivered once each, in order, one at a time.
    control = _messages(pg_app, "SC")
    client = pg_app.test_client()
    for sid, statuses in control.items():
        for status in statuses:
            assert post(client, sid, status) == 204
    in_order = _final_states("SC")

    plan = _messages(pg_app, "SM")
    deliveries = [(sid, status) for sid, statuses in plan.items() for status in statuses * COPIES]
    random.Random(2026).shuffle(deliveries)
    work: queue.Queue[tuple[str, str]] = queue.Queue()
    for item in deliveries:
        work.put(item)

    answers: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def post_all() -> None:
        client = pg_app.test_client()
        try:
            while True:
                try:
                    sid, status = work.get_nowait()
                except queue.Empty:
                    return
                answer = post(client, sid, status)
                with lock:
                    answers.append(answer)
        except BaseException as exc:  # reported by the test
            with lock:
                errors.append(exc)

    watcher = Watcher(pg_app)
    watcher.start()
    threads = [threading.Thread(target=post_all, daemon=True) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    watcher.stop.set()
    watcher.join(timeout=30)

    assert not any(t.is_alive() for t in threads), "a sender thread hung"
    assert not errors, errors[:3]
    assert len(answers) == len(deliveries) and set(answers) == {204}
    assert watcher.polls > 1
    assert watcher.violations == []

    final = _final_states("SM")
    assert final == in_order
    expected = {
        sid[2:]: (
            TWILIO_STATUSES[statuses[-1]],
            int(ERROR_CODES[statuses[-1]]) if statuses[-1] in ERROR_CODES else None,
            True,
        )
        for sid, statuses in plan.items()
    }
    assert final == expected


# --- inbound messages -----------------------------------------------------------------------------------

INBOUND = "/webhooks/twilio/inbound"
CUSTOMER = "+8613912345678"


def _all_at_once(app: Flask, forms: list[dict[str, str]]) -> list[tuple[int, str]]:
    """Post each form from its own thread, released together; (status, body) of every answer."""
    validator = RequestValidator(TOKEN)
    barrier = threading.Barrier(len(forms))
    answers: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def post(form: dict[str, str]) -> None:
        client = app.test_client()
        headers = {"X-Twilio-Signature": validator.compute_signature(BASE + INBOUND, form)}
        try:
            barrier.wait(timeout=30)
            response = client.post(INBOUND, data=form, headers=headers)
            with lock:
                answers.append((response.status_code, response.get_data(as_text=True)))
        except BaseException as exc:  # reported by the test
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=post, args=(form,), daemon=True) for form in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert not errors, errors[:3]
    db.session.remove()  # read what was committed
    return answers


def _count(model: Any, *where: Any) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


@pytest.fixture
def customer_flow(
    pg_app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    make_order: Callable[..., Any],
    make_engineer: Callable[..., Any],
) -> Flow:
    monkeypatch.setitem(pg_app.config, "TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setitem(pg_app.config, "PUBLIC_BASE_URL", BASE)
    orders = functools.partial(make_order, customer={"name": "李四", "phone": CUSTOMER})
    return Flow(pg_app.extensions["clock"], orders, make_engineer)


def _inbound(sid: str, body: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": CUSTOMER,
        "To": "+8610000000000",
        "Body": body,
    }


@pytest.mark.slow
def test_one_reply_delivered_by_8_threads_at_once_is_taken_once(pg_app: Flask, customer_flow: Flow) -> None:
    order, _ = customer_flow.order_in("appointed")
    db.session.commit()
    order_id = order.id
    answers = _all_at_once(pg_app, [_inbound("SM" + "a" * 32, "2")] * THREADS)
    assert {status for status, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1
    assert _count(InboundMessage) == 1
    assert _count(OrderEvent, OrderEvent.action == "customer_reschedule_requested") == 1
    assert (
        _count(
            OutboxMessage, OutboxMessage.order_id == order_id, OutboxMessage.template == "reschedule_request"
        )
        == 1
    )


@pytest.mark.slow
def test_8_stops_from_one_number_at_once_make_one_opt_out(pg_app: Flask, customer_flow: Flow) -> None:
    answers = _all_at_once(pg_app, [_inbound(f"SM{n:032x}", "退订") for n in range(THREADS)])
    assert {status for status, _ in answers} == {200}
    assert _count(InboundMessage, InboundMessage.handled_as == "opt_out") == THREADS
    assert _count(SmsOptOut, SmsOptOut.phone == CUSTOMER) == 1


@pytest.mark.slow
def test_8_scores_racing_for_one_order_record_exactly_one(pg_app: Flask, customer_flow: Flow) -> None:
    order, _ = customer_flow.order_in("completed")
    db.session.commit()
    order_id = order.id
    answers = _all_at_once(pg_app, [_inbound(f"SM{n:032x}", str(3 + n % 3)) for n in range(THREADS)])
    assert {status for status, _ in answers} == {200}
    handled = db.session.scalars(sa.select(InboundMessage.handled_as)).all()
    assert sorted(handled) == ["satisfaction"] + ["unrecognised"] * (THREADS - 1)
    assert _count(SatisfactionResponse, SatisfactionResponse.order_id == order_id) == 1
    assert _count(OrderEvent, OrderEvent.action == "satisfaction_recorded") == 1
