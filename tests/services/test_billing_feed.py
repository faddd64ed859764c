"""The billing feed (CONTRACT "Billing feed"): dense numbering in commit order, cursor pages, dedupe, and the
daily settlement file reconciled to it. Events are written through ``feed.record`` as the workflow does."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from dispatch.billing import feed, settlement
from dispatch.extensions import db
from dispatch.models import BillingEvent
from dispatch.timeutil import business_day
from tests.conftest import T0

_keys = count(1)


def emit(
    type_: str = "order.completed",
    *,
    at: datetime = T0,
    payload: dict[str, Any] | None = None,
    order_id: int | None = None,
    key: str | None = None,
    commit: bool = True,
) -> str:
    """Write one event as a service would (in the session's transaction); its dedupe key."""
    dedupe_key = key or f"test:{next(_keys)}"
    feed.record(
        type_,
        dedupe_key=dedupe_key,
        occurred_at=at,
        payload=payload if payload is not None else {"n": dedupe_key},
        now=at,
        order_id=order_id,
    )
    if commit:
        db.session.commit()
    return dedupe_key


def seqs_by_key() -> dict[str, int | None]:
    return {key: seq for key, seq in db.session.execute(sa.select(BillingEvent.dedupe_key, BillingEvent.seq))}


def read_all(after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = feed.page(after, limit)
        if not page.events:
            return events
        events.extend(page.events)
        after = page.next_after


# --- numbering ----------------------------------------------------------------------------------------


def test_events_are_numbered_densely_from_one_in_commit_order(app: Flask) -> None:
    first = [emit() for _ in range(3)]
    assert feed.number_pending(T0) == 3
    second = [emit() for _ in range(2)]
    assert feed.number_pending(T0) == 2
    assert feed.number_pending(T0) == 0

    seqs = seqs_by_key()
    assert [seqs[k] for k in first + second] == [1, 2, 3, 4, 5]


def test_numbering_works_in_batches(app: Flask) -> None:
    keys = [emit(commit=False) for _ in range(7)]
    db.session.commit()

    assert feed.number_pending(T0, batch=3) == 7

    seqs = seqs_by_key()
    assert [seqs[k] for k in keys] == list(range(1, 8))


def test_an_unnumbered_event_is_not_in_the_feed(app: Flask) -> None:
    emit()
    assert feed.page(0, 10).events == []
    feed.number_pending(T0)
    assert [e["seq"] for e in feed.page(0, 10).events] == [1]


def test_a_second_write_with_the_same_dedupe_key_is_a_no_op(app: Flask) -> None:
    emit(key="order.completed:42", payload={"first": True})
    emit(key="order.completed:42", payload={"first": False})
    feed.number_pending(T0)

    events = read_all()
    assert len(events) == 1
    assert events[0]["payload"] == {"first": True}


def test_an_event_uncommitted_while_others_are_numbered_gets_a_later_seq(pg_app: Flask) -> None:
    """Transaction A writes first (the lower id) but commits last: its event must neither be visible nor
    hold back a seq while it is open, and must come after the events numbered meanwhile."""
    written, release, done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with pg_app.app_context():
                emit(key="slow", commit=False)
                db.session.flush()
                written.set()
                release.wait(10)
                db.session.commit()
                db.session.remove()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert written.wait(10)
    emit(key="fast-1")
    emit(key="fast-2")
    feed.number_pending(T0)
    assert [e["payload"]["n"] for e in read_all()] == ["fast-1", "fast-2"]

    release.set()
    assert done.wait(10) and not errors, errors
    thread.join()
    feed.number_pending(T0)

    events = read_all()
    assert [(e["seq"], e["payload"]["n"]) for e in events] == [(1, "fast-1"), (2, "fast-2"), (3, "slow")]
    ids = {e["payload"]["n"]: e["id"] for e in events}
    assert ids["slow"] < ids["fast-1"]  # it did take its id first


# --- pages and cursors --------------------------------------------------------------------------------


def test_pages_follow_the_cursor_until_nothing_is_left(app: Flask) -> None:
    for _ in range(5):
        emit()
    feed.number_pending(T0)

    first = feed.page(0, 2)
    assert [e["seq"] for e in first.events] == [1, 2] and first.next_after == 2
    second = feed.page(first.next_after, 2)
    assert [e["seq"] for e in second.events] == [3, 4] and second.next_after == 4
    third = feed.page(second.next_after, 2)
    assert [e["seq"] for e in third.events] == [5] and third.next_after == 5
    empty = feed.page(third.next_after, 2)
    assert empty.events == [] and empty.next_after == 5  # the cursor stays where it was

    emit()
    feed.number_pending(T0)
    assert [e["seq"] for e in feed.page(empty.next_after, 2).events] == [6]


def test_an_event_has_the_wire_shape_with_local_time(app: Flask, make_order: Callable[..., Any]) -> None:
    order = make_order()
    payload = {"order": {"id": order.id, "external_id": order.external_id}, "pay_mode": "install_then_pay"}
    emit("order.completed", at=datetime(2026, 11, 30, 2, 30, tzinfo=UTC), payload=payload, order_id=order.id)
    feed.number_pending(T0)

    (event,) = feed.page(0, 10).events
    assert set(event) == {"seq", "id", "type", "occurred_at", "payload"}
    assert event["seq"] == 1 and isinstance(event["id"], int)
    assert event["type"] == "order.completed"
    assert event["occurred_at"] == "2026-11-30T10:30:00+08:00"
    assert event["payload"] == payload


@pytest.mark.postgres
def test_concurrent_writers_and_a_polling_consumer_see_every_event_once_in_order(pg_app: Flask) -> None:
    """8 writer threads commit transactions of 1–5 events, sleeping inside them so that commits come out of
    id order, while a consumer numbers and reads by cursor: every event is seen once, seqs dense."""
    writers, per_writer = 8, 60
    stop = threading.Event()
    errors: list[BaseException] = []
    written: list[str] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        rng = random.Random(w)
        try:
            with pg_app.app_context():
                n = 0
                while n < per_writer:
                    size = min(rng.randint(1, 5), per_writer - n)
                    keys = []
                    for _ in range(size):
                        keys.append(emit(key=f"w{w}-{n}", commit=False))
                        n += 1
                        db.session.flush()  # the id is taken now, the commit comes later
                        time.sleep(rng.uniform(0, 0.01))
                    db.session.commit()
                    with lock:
                        written.extend(keys)
                db.session.remove()
        except BaseException as exc:
            errors.append(exc)

    seen: list[dict[str, Any]] = []

    def consumer() -> None:
        try:
            with pg_app.app_context():
                after = 0
                while True:
                    finished = stop.is_set()  # read before numbering: a last pass after the writers end
                    feed.number_pending(datetime.now(UTC))
                    page = feed.page(after, 50)
                    db.session.commit()
                    seen.extend(page.events)
                    after = page.next_after
                    if finished and not page.events:
                        break
                db.session.remove()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    reader = threading.Thread(target=consumer)
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    reader.join(60)

    assert not errors, errors
    assert len(written) == writers * per_writer
    assert [e["seq"] for e in seen] == list(range(1, len(written) + 1))
    assert sorted(e["payload"]["n"] for e in seen) == sorted(written)
    ids = [e["id"] for e in seen]
    assert ids != sorted(ids), "commits never came out of id order: the test proved nothing"


# --- settlement ---------------------------------------------------------------------------------------

DAY = date(2026, 11, 30)
# Asia/Shanghai is UTC+8: the business day 2026-11-30 is [2026-11-29T16:00Z, 2026-11-30T16:00Z).
BEFORE = datetime(2026, 11, 29, 15, 59, 59, tzinfo=UTC)
FIRST = datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
LAST = datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC)
AFTER = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)

COMPLETED = {
    "order": {"id": 1, "external_id": "10000-A1", "order_type": "broadband_install"},
    "customer": {"name": "张三", "phone": "13800000001"},
    "products": ["broadband_300m", "iptv_basic"],
    "pay_mode": "install_then_pay",
    "completed_at": "2026-11-30T10:00:00+08:00",
    "engineer": {"id": 3, "code": "E0003", "name": "李四"},
    "team": {"id": 2, "name": "五华装维一班, 二组"},
    "district": "五华区",
}
CANCELLED = {
    "order": {"id": 2, "external_id": "10000-A2", "order_type": "repair"},
    "pay_mode": "prepaid",
    "cancelled_at": "2026-11-30T11:00:00+08:00",
    "reason_code": "customer_withdrew",
    "reason": "客户撤销\n不装了",
}
COMPLAINT = {
    "complaint": {
        "id": 7,
        "external_id": "TS-9",
        "category": "escalated",
        "cause": "network",
        "received_at": "2026-11-30T12:00:00+08:00",
    },
    "order": {"id": 1, "external_id": "10000-A1", "order_type": "broadband_install"},
    "engineer": None,
    "team": {"id": 2, "name": "五华装维一班, 二组"},
}
KPI = {
    "day": "2026-11-30",
    "scope": "engineer",
    "engineer": {"id": 3, "code": "E0003", "name": "李四"},
    "figures": {
        "on_time_rate": {"numerator": 9, "denominator": 10, "value": 0.9, "target": 0.95, "met": False},
        "complaints": {"numerator": 0, "denominator": 1, "value": 0, "target": 0, "met": True},
    },
}


def day_events() -> list[str]:
    """Events around the business day 2026-11-30 (Asia/Shanghai), numbered; the keys of those inside it."""
    emit(at=BEFORE, payload=COMPLETED)
    inside = [
        emit("order.completed", at=FIRST, payload=COMPLETED),
        emit("order.cancelled", at=FIRST + timedelta(hours=3), payload=CANCELLED),
        emit("complaint.recorded", at=FIRST + timedelta(hours=4), payload=COMPLAINT),
        emit("kpi.daily", at=LAST, payload=KPI),
        emit("order.completed", at=FIRST + timedelta(hours=1), payload={"unexpected": ["shape"]}),
    ]
    emit(at=AFTER, payload=COMPLETED)
    return inside


def test_settlement_has_the_days_events_in_seq_order_and_reconciles_to_the_feed(
    app: Flask, tmp_path: Path
) -> None:
    inside = day_events()

    written = settlement.write_settlement(DAY, tmp_path, now=T0)

    assert written.path == tmp_path / "settlement-20261130.csv"
    lines = written.path.read_bytes().split(b"\r\n")
    assert lines[-1] == b"" and len(lines) == 1 + 5 + 1 + 1
    header = lines[0].decode()
    assert header.startswith("H,DISPATCH_BILLING_SETTLEMENT,20261130,") and header.endswith(",1")
    details = [line + b"\r\n" for line in lines[1:-2]]
    assert all(line.startswith(b"D,") for line in details)
    trailer = lines[-2].decode().split(",")
    assert trailer[:6] == ["T", "5", "2", "1", "1", "1"]
    assert trailer[6] == hashlib.sha256(b"".join(details)).hexdigest()

    # Reconciliation: exactly the feed's events of that business day, in seq order.
    feed_day = [e for e in read_all() if business_day(datetime.fromisoformat(e["occurred_at"])) == DAY]
    parsed = settlement.read_settlement(written.path)
    assert [int(d["seq"]) for d in parsed.details] == [e["seq"] for e in feed_day]
    assert [int(d["event_id"]) for d in parsed.details] == [e["id"] for e in feed_day]
    assert len(feed_day) == len(inside)
    assert parsed.details == written.details and parsed.trailer == lines[-2].decode()


def test_settlement_detail_fields_come_from_each_payload(app: Flask, tmp_path: Path) -> None:
    day_events()

    details = {
        d["event_type"] + d["seq"]: d for d in settlement.write_settlement(DAY, tmp_path, now=T0).details
    }

    completed, cancelled = details["order.completed2"], details["order.cancelled3"]
    complaint, kpi, odd = details["complaint.recorded4"], details["kpi.daily5"], details["order.completed6"]
    assert completed["occurred_at"] == "2026-11-30T00:00:00+08:00"
    assert completed["order_external_id"] == "10000-A1" and completed["order_type"] == "broadband_install"
    assert completed["pay_mode"] == "install_then_pay"
    assert completed["products"] == "broadband_300m|iptv_basic"
    assert completed["engineer_code"] == "E0003" and completed["team"] == "五华装维一班, 二组"
    assert completed["district"] == "五华区"
    assert cancelled["cancel_reason_code"] == "customer_withdrew" and cancelled["pay_mode"] == "prepaid"
    assert complaint["complaint_external_id"] == "TS-9" and complaint["complaint_cause"] == "network"
    assert complaint["engineer_code"] == "" and complaint["team"] == "五华装维一班, 二组"
    assert kpi["kpi_day"] == "2026-11-30" and kpi["kpi_scope"] == "engineer"
    assert kpi["engineer_code"] == "E0003"
    assert kpi["kpi_figures"] == "complaints:0:1:0:0:Y;on_time_rate:9:10:0.9:0.95:N"
    assert odd["order_external_id"] == "" and odd["products"] == ""


def test_writing_a_day_again_gives_the_same_bytes(app: Flask, tmp_path: Path) -> None:
    day_events()
    first = settlement.write_settlement(DAY, tmp_path / "a", now=T0).path.read_bytes()

    second = settlement.write_settlement(DAY, tmp_path / "b", now=T0 + timedelta(hours=5)).path.read_bytes()

    assert first == second
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["settlement-20261130.csv"]  # no temp left


def test_a_day_without_events_has_a_header_and_an_empty_trailer(app: Flask, tmp_path: Path) -> None:
    written = settlement.write_settlement(DAY, tmp_path, now=T0)

    parsed = settlement.read_settlement(written.path)
    assert parsed.details == [] and parsed.counts == dict.fromkeys(parsed.counts, 0)
    assert parsed.sha256 == hashlib.sha256(b"").hexdigest()
    assert parsed.generated_at == "2026-12-01T00:00:00+08:00"


def test_a_late_event_for_the_day_is_in_the_file_written_after_it(app: Flask, tmp_path: Path) -> None:
    day_events()
    before = settlement.write_settlement(DAY, tmp_path, now=T0)
    emit("order.completed", at=FIRST + timedelta(hours=6), payload=COMPLETED)

    after = settlement.write_settlement(DAY, tmp_path, now=T0)

    assert len(after.details) == len(before.details) + 1
    assert after.details[-1]["seq"] == "8"
    assert settlement.read_settlement(after.path).details == after.details


def test_a_tampered_settlement_file_does_not_verify(app: Flask, tmp_path: Path) -> None:
    day_events()
    path = settlement.write_settlement(DAY, tmp_path, now=T0).path
    data = path.read_bytes()

    path.write_bytes(data.replace(b"customer_withdrew", b"customer_withdrex"))
    with pytest.raises(settlement.SettlementFileError, match="SHA-256"):
        settlement.read_settlement(path)

    path.write_bytes(data[: data.index(b"\r\nT,") + 2])  # trailer lost
    with pytest.raises(settlement.SettlementFileError):
        settlement.read_settlement(path)
