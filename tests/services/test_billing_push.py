"""The billing push (dispatch/billing/push.py) against a local HTTP receiver: signed batches in seq order,
backoff on failures measured on the fake clock, every event delivered after recovery, one pusher at a time."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from dispatch import scheduling
from dispatch.billing import feed, push
from dispatch.clock import FakeClock
from dispatch.config import ConfigError, load_config
from dispatch.extensions import db
from dispatch.models import BillingPushState
from tests.conftest import T0
from tests.support_http import LocalServer

SECRET = "boss-shared-secret"
_keys = count(1)


@dataclass(frozen=True)
class Seen:
    headers: dict[str, str]
    body: bytes
    status: int | None  # None: held past the client's timeout

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)["events"]
        return events


class Receiver(LocalServer):
    """BOSS's webhook: records every request; answers from ``plan`` (a status, or ``"hang"`` to hold the
    answer past the client's timeout), 200 once the plan is used up; ``hold`` delays every answer."""

    name = "fake-boss"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self.plan: deque[int | str] = deque()
        self.hold = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    action = receiver.plan.popleft() if receiver.plan else 200
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    if receiver.hold:
                        time.sleep(receiver.hold)
                    status = None if action == "hang" else int(action)
                    with receiver._lock:
                        receiver.seen.append(Seen(dict(self.headers), body, status))
                    if status is None:
                        receiver._release.wait(2.0)
                        return
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("Location", "/elsewhere")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def delivered(self) -> list[int]:
        """The seqs of the batches answered 2xx, in the order they arrived."""
        return [e["seq"] for s in self.seen if s.status and 200 <= s.status < 300 for e in s.events]

    def received(self) -> list[int]:
        """Every seq that reached the receiver, answered or not (duplicates included)."""
        return [e["seq"] for s in self.seen for e in s.events]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def configured(app: Flask, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The push pointed at the receiver, with a short timeout; the test's fake clock."""
    monkeypatch.setitem(app.config, "BILLING_WEBHOOK_URL", receiver.url + "/boss/billing-events")
    monkeypatch.setitem(app.config, "BILLING_WEBHOOK_SECRET", SECRET)
    monkeypatch.setitem(app.config, "BILLING_WEBHOOK_TIMEOUT_SECONDS", 0.3)
    clock: FakeClock = app.extensions["clock"]
    return clock


def emit(n: int, *, at: datetime = T0) -> None:
    for _ in range(n):
        key = f"push:{next(_keys)}"
        feed.record("order.completed", dedupe_key=key, occurred_at=at, payload={"key": key}, now=at)
    db.session.commit()


def state() -> BillingPushState:
    row = db.session.get(BillingPushState, push.STATE_ID, populate_existing=True)
    assert row is not None
    return row


def test_without_a_url_events_are_numbered_and_nothing_is_sent(app: Flask, receiver: Receiver) -> None:
    assert not app.config["BILLING_WEBHOOK_URL"]
    emit(3)

    result = push.relay(T0)

    assert (result.numbered, result.pushed, result.error) == (3, 0, None)
    assert receiver.seen == []
    assert [e["seq"] for e in feed.page(0, 10).events] == [1, 2, 3]
    assert db.session.get(BillingPushState, push.STATE_ID) is None


def test_a_batch_is_signed_over_the_exact_body(app: Flask, configured: FakeClock, receiver: Receiver) -> None:
    emit(3)

    result = push.relay(T0)

    assert (result.numbered, result.pushed, result.batches, result.error) == (3, 3, 1, None)
    (request,) = receiver.seen
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Billing-Signature"], expected)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Billing-Timestamp"] == str(int(T0.timestamp()))
    assert json.loads(request.body) == {"events": feed.page(0, 10).events}  # the feed's wire shape
    forged = request.body.replace(b'"seq":1', b'"seq":9')
    assert push.sign(forged, SECRET) != request.headers["X-Billing-Signature"]
    assert (state().last_seq, state().attempts, state().last_error) == (3, 0, None)


def test_batches_go_in_seq_order_and_each_event_once(
    app: Flask, configured: FakeClock, receiver: Receiver
) -> None:
    emit(7)

    result = push.relay(T0, batch=3)

    assert (result.pushed, result.batches) == (7, 3)
    assert [len(s.events) for s in receiver.seen] == [3, 3, 1]
    assert receiver.delivered() == list(range(1, 8)) == receiver.received()

    assert push.relay(T0, batch=3).pushed == 0  # nothing new: nothing sent
    emit(2)
    assert push.relay(T0 + timedelta(seconds=5), batch=3).pushed == 2
    assert receiver.delivered() == list(range(1, 10)) == receiver.received()
    assert state().last_seq == 9


def test_a_5xx_is_retried_with_backoff_and_not_sent_before_then(
    app: Flask, configured: FakeClock, receiver: Receiver
) -> None:
    emit(4)
    receiver.plan.extend([503, 500])

    first = push.relay(T0)

    assert first.error == "HTTP 503" and first.pushed == 0
    row = state()
    assert (row.last_seq, row.attempts, row.last_error) == (0, 1, "HTTP 503")
    assert row.next_attempt_at == T0 + timedelta(seconds=10)

    emit(1)  # written during the outage
    early = push.relay(T0 + timedelta(seconds=9))
    assert early.numbered == 1 and early.pushed == 0 and len(receiver.seen) == 1  # numbered, not sent

    second = push.relay(T0 + timedelta(seconds=10))
    assert second.error == "HTTP 500"
    assert (state().attempts, state().next_attempt_at) == (2, T0 + timedelta(seconds=30))
    assert push.relay(T0 + timedelta(seconds=29)).pushed == 0 and len(receiver.seen) == 2

    recovered = push.relay(T0 + timedelta(seconds=30))
    assert recovered.pushed == 5 and recovered.error is None
    row = state()
    assert (row.last_seq, row.attempts, row.last_error, row.next_attempt_at) == (5, 0, None, None)
    assert receiver.delivered() == [1, 2, 3, 4, 5]
    assert [[e["seq"] for e in s.events] for s in receiver.seen] == [
        [1, 2, 3, 4],
        [1, 2, 3, 4, 5],
        [1, 2, 3, 4, 5],
    ]


def test_a_timeout_is_retried_later_and_the_receiver_sees_every_event_at_least_once(
    app: Flask, configured: FakeClock, receiver: Receiver
) -> None:
    emit(3)
    receiver.plan.append("hang")

    first = push.relay(T0)

    assert first.error is not None and "timed out" in first.error
    assert (state().last_seq, state().attempts) == (0, 1)
    assert receiver.received() == [1, 2, 3]  # it did arrive: the answer was lost

    retried = push.relay(T0 + timedelta(seconds=10))

    assert retried.pushed == 3 and state().last_seq == 3
    assert receiver.delivered() == [1, 2, 3]
    assert sorted(set(receiver.received())) == [1, 2, 3]  # at least once; the receiver dedupes by id/seq


def test_a_refused_connection_and_a_redirect_are_failures(
    app: Flask, configured: FakeClock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    emit(2)
    receiver.plan.append(302)

    redirected = push.relay(T0)
    assert redirected.error == "HTTP 302" and state().attempts == 1

    receiver.stop()
    refused = push.relay(T0 + timedelta(seconds=10))
    assert refused.error is not None and refused.error.startswith("connection failed")
    assert (state().attempts, state().next_attempt_at) == (2, T0 + timedelta(seconds=30))

    receiver.start()  # the same port
    assert push.relay(T0 + timedelta(seconds=30)).pushed == 2
    assert receiver.delivered() == [1, 2]


def test_backoff_doubles_up_to_the_cap(
    app: Flask, configured: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [push.backoff(n, 10, 3600).total_seconds() for n in (1, 2, 3, 9, 10, 500)] == [
        10,
        20,
        40,
        2560,
        3600,
        3600,
    ]
    monkeypatch.setitem(app.config, "BILLING_WEBHOOK_URL", "http://127.0.0.1:9/nothing-listens")
    monkeypatch.setitem(app.config, "BILLING_MAX_BACKOFF_SECONDS", 25.0)
    emit(1)
    now = T0
    for _ in range(3):
        assert push.relay(now).error is not None
        now = state().next_attempt_at or now
    assert state().attempts == 3 and state().next_attempt_at == T0 + timedelta(seconds=10 + 20 + 25)


def test_the_scheduler_job_runs_the_relay(app: Flask, configured: FakeClock, receiver: Receiver) -> None:
    job = next(j for j in scheduling.JOBS if j.id == "billing-feed")
    emit(2)

    result = job.func(app, T0)

    assert result.pushed == 2 and receiver.delivered() == [1, 2]
    assert job.seconds(app) == app.config["SCHEDULER_TICK_SECONDS"]


def test_push_settings_are_checked_at_start() -> None:
    with pytest.raises(ConfigError, match="BILLING_WEBHOOK_SECRET"):
        load_config({"BILLING_WEBHOOK_URL": "https://boss.example/events", "BILLING_WEBHOOK_SECRET": None})
    with pytest.raises(ConfigError, match="http"):
        load_config({"BILLING_WEBHOOK_URL": "ftp://boss.example/", "BILLING_WEBHOOK_SECRET": "s"})
    with pytest.raises(ConfigError, match="BILLING_RETRY_SECONDS"):
        load_config({"BILLING_RETRY_SECONDS": 0})
    with pytest.raises(ConfigError, match="BILLING_MAX_BACKOFF_SECONDS"):
        load_config({"BILLING_MAX_BACKOFF_SECONDS": 5})
    with pytest.raises(ConfigError, match="BILLING_WEBHOOK_TIMEOUT_SECONDS"):
        load_config({"BILLING_WEBHOOK_TIMEOUT_SECONDS": -1})


@pytest.mark.postgres
def test_two_pushers_never_send_at_the_same_time(
    pg_app: Flask, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two schedulers' relays run side by side against a slow receiver: the state row's lock lets one push
    at a time, and every event is delivered exactly once, in seq order."""
    monkeypatch.setitem(pg_app.config, "BILLING_WEBHOOK_URL", receiver.url + "/events")
    monkeypatch.setitem(pg_app.config, "BILLING_WEBHOOK_SECRET", SECRET)
    receiver.hold = 0.05
    emit(60)
    db.session.remove()
    errors: list[BaseException] = []
    runs: list[list[tuple[float, float, int]]] = [[], []]  # per pusher: (start, end, events pushed)

    def pusher(i: int) -> None:
        try:
            with pg_app.app_context():
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    result = push.relay(datetime.now(UTC), batch=4)
                    runs[i].append((started, time.monotonic(), result.pushed))
                    if state().last_seq == 60:
                        break
                db.session.remove()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)

    assert not errors, errors
    assert receiver.max_in_flight == 1
    assert receiver.delivered() == list(range(1, 61)) == receiver.received()
    met = [
        (a, b)
        for a in runs[0]
        for b in runs[1]
        if a[0] < b[1] and b[0] < a[1] and (a[2] or b[2])  # one pushed while the other ran
    ]
    assert met, "the relays never ran side by side: the test proved nothing"
    assert db.session.scalar(sa.select(BillingPushState.last_seq)) == 60
