"""SMS sending under failure, on PostgreSQL (shared/QUALITY.md "Reliability": "SMS sending with 10 % Twilio
5xx, 10 % timeouts after Twilio accepted, 5 sender kills, 2 000 messages → exactly one accepted send per
dedupe key"; reliability-anchors §2.3).

Two real ``flask run-scheduler`` processes (SMS_BACKEND=twilio, the real SDK) send 2 000 outbox rows through
the fake Twilio of tests/support_twilio.py, which runs in this test process. Every create the fake receives
fails with HTTP 500/503 with probability 0.1, and with probability 0.1 is accepted and then left unanswered
past the client's timeout. The senders are SIGKILLed 5 times and restarted: three kills land while the
victim waits for the answer to a message Twilio has just accepted (the fake tells which sender asked by the
``From`` number each one is given), two at random moments. Pass: every dedupe key has exactly one message
accepted at the fake and its row is ``sent`` with that message's sid; no job failed; every message whose
outcome was unknown had its sid recorded within 60 s of Twilio accepting it. ``-s`` shows the figures.
"""

from __future__ import annotations

import queue
import random
import time
from collections import Counter
from itertools import count
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.reliability.test_scheduler_reliability import Scheduler, autocommit_engine, percentile, schedulers
from tests.support_twilio import ACCOUNT_SID, AUTH_TOKEN, Chaos, FakeMessage, FakeTwilio

pytestmark = pytest.mark.slow

N = 2000
KILLS = 5
TIMEOUT = 0.25  # TWILIO_TIMEOUT_SECONDS of the senders
HANG = 0.75  # how long the fake holds back the answer for an accepted message (well past the timeout)
DEADLINE = 150.0  # seconds from the start for all 2 000 to be sent, kills and lease expiries included
RECONCILE_BAR = 60.0


def load_messages(conn: sa.Connection) -> None:
    """2 000 SMS rows due now, to 400 numbers (5 each, under the hourly limit), in every recipient role;
    the body names the dedupe key, so the fake's messages can be counted per key."""
    conn.execute(
        sa.text(
            "INSERT INTO outbox (kind, dedupe_key, recipient, template, body, payload, status, attempts,"
            " next_attempt_at, created_at) "
            "SELECT 'sms', 'rel-sms:' || g, '+86139' || lpad((g % 400)::text, 8, '0'), 'dispatch_engineer',"
            " '【可靠性】第' || g || '条 key=rel-sms:' || g,"
            " jsonb_build_object('recipient_role',"
            "   (ARRAY['engineer', 'customer', 'team_leader', 'dispatcher'])[1 + g % 4]),"
            " 'pending', 0, now(), now() "
            "FROM generate_series(1, :n) AS g"
        ),
        {"n": N},
    )
    conn.execute(sa.text("ANALYZE outbox"))


def key_of(body: str) -> str:
    return body.rsplit("key=", 1)[1]


def statuses(conn: sa.Connection) -> dict[str, int]:
    return dict(conn.execute(sa.text("SELECT status, count(*) FROM outbox GROUP BY status")).all())


def test_two_senders_with_failures_and_kills_send_each_message_exactly_once(
    pg_app: Flask, tmp_path: Path
) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    chaos = Chaos(random.Random(seed + 1), p_5xx=0.1, p_hang=0.1, hang=HANG)
    fake = FakeTwilio().start()
    fake.chooser = chaos
    hangs: queue.Queue[FakeMessage] = queue.Queue()
    fake.on_hang = hangs.put
    url = pg_app.config["SQLALCHEMY_DATABASE_URI"]
    engine = autocommit_engine(pg_app)
    numbers = count(1)
    live: dict[str, Scheduler] = {}  # by the TWILIO_FROM each sender was given

    def start_sender(name: str) -> Scheduler:
        sender_number = f"+1500555{next(numbers):04d}"
        process = Scheduler(
            url,
            tmp_path,
            name,
            SMS_BACKEND="twilio",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_FROM=sender_number,
            TWILIO_API_BASE_URL=fake.url,
            TWILIO_TIMEOUT_SECONDS=str(TIMEOUT),
            SMS_RETRY_SECONDS="1",
            SMS_MAX_ATTEMPTS="30",  # 0.2 ** 30: no message may give up here
            PUBLIC_BASE_URL="https://dispatch.example.com",
            QUIET_HOURS="",  # customer messages go out whatever the wall-clock time
        )
        live[sender_number] = process
        return process

    kills: list[str] = []
    started = time.monotonic()
    try:
        with engine.connect() as conn:
            load_messages(conn)
        with schedulers() as running, engine.connect() as conn:
            running.extend([start_sender("sms-a"), start_sender("sms-b")])
            for process in running:
                process.wait_started()
            for i in range(KILLS):
                victim: str | None = None
                how = "random"
                if i % 2 == 0:  # while Twilio holds back the answer to a message it just accepted
                    until = time.monotonic() + 10
                    while victim is None and time.monotonic() < until:
                        try:
                            hung = hangs.get(timeout=0.2)
                        except queue.Empty:
                            continue
                        victim = hung.from_ if hung.from_ in live else None
                    how = "mid-request, after Twilio accepted" if victim else "random (no hang seen)"
                else:
                    time.sleep(rng.uniform(0.5, 3))
                victim = victim or rng.choice(sorted(live))
                process = live.pop(victim)
                process.kill()
                kills.append(f"{process.name} {how}")
                time.sleep(rng.uniform(0, 1))
                running.append(start_sender(f"sms-k{i + 1}"))
                running[-1].wait_started()
                while not hangs.empty():  # only a hang after the restart aims the next kill
                    hangs.get_nowait()
            last_kill = time.monotonic()
            sent = 0
            while time.monotonic() < started + DEADLINE:
                sent = conn.execute(
                    sa.text("SELECT count(*) FROM outbox WHERE kind = 'sms' AND status = 'sent'")
                ).scalar_one()
                if sent == N:
                    break
                time.sleep(0.25)
            done_at = time.monotonic()
            assert sent == N, f"only {sent}/{N} sent {DEADLINE:.0f} s after the start: {statuses(conn)}"
            time.sleep(2.5)  # a couple more ticks: a second send of anything would show now
            codes = [process.stop() for process in live.values()]
            rows = conn.execute(
                sa.text(
                    "SELECT dedupe_key, status, provider_sid, attempts, sent_at FROM outbox"
                    " WHERE kind = 'sms'"
                )
            ).all()
        failures = [line for process in running for line in process.failures()]
        outputs = [process.output()[-2000:] for process in live.values()]
    finally:
        fake.stop()
        engine.dispose()

    assert codes == [0] * len(codes), outputs
    assert not failures, failures[:10]

    accepted = Counter(key_of(message.body) for message in fake.created)
    twice = {key: n for key, n in accepted.items() if n > 1}
    assert not twice, f"{len(twice)} dedupe keys accepted more than once, e.g. {list(twice.items())[:5]}"
    assert len(rows) == N and set(accepted) == {r.dedupe_key for r in rows}
    sid_of = {key_of(message.body): message.sid for message in fake.created}
    wrong = [r.dedupe_key for r in rows if r.status != "sent" or r.provider_sid != sid_of[r.dedupe_key]]
    assert not wrong, f"{len(wrong)} rows without the sid of their accepted message, e.g. {wrong[:5]}"

    # Messages accepted but never answered: how long until their row held the accepted sid.
    row_of = {r.provider_sid: r for r in rows}
    accepted_at = {message.sid: message.date_created for message in fake.created}
    reconciled = [(row_of[sid].sent_at - accepted_at[sid]).total_seconds() for sid in fake.hung_sids]
    attempts = Counter(r.attempts for r in rows)
    print(
        f"\nSMS reliability (seed {seed}): {N} messages, 2 senders, {KILLS} SIGKILLs: {'; '.join(kills)}\n"
        f"  creates at the fake {len(fake.creates())}: {chaos.counts['5xx']} answered 5xx,"
        f" {chaos.counts['hang']} accepted and left unanswered, {chaos.counts['ok']} answered 201\n"
        f"  accepted messages {len(fake.created)} for {len(accepted)} dedupe keys: 0 twice, 0 missing\n"
        f"  look-ups (list requests) {len(fake.lists())}; attempts per row {dict(sorted(attempts.items()))}\n"
        f"  unknown outcomes reconciled {len(reconciled)}: accepted → sid recorded"
        f" p50 {percentile(reconciled, 50):.1f} s, p99 {percentile(reconciled, 99):.1f} s,"
        f" max {max(reconciled):.1f} s (bar {RECONCILE_BAR:.0f} s)\n"
        f"  all sent {done_at - started:.1f} s after the start,"
        f" {done_at - last_kill:.1f} s after the last kill"
    )
    assert chaos.counts["5xx"] > 0 and chaos.counts["hang"] > 0
    assert max(reconciled) <= RECONCILE_BAR
