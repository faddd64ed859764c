"""The SLA tick racing a workflow transition of the same order, on PostgreSQL (real commits, two sessions).

A transition locks its order (``SELECT … FOR UPDATE``), then its live clocks, and writes them at commit. The
tick claims due clocks, then inserts alerts, events and SMS rows that reference the order (each foreign-key
check takes a KEY SHARE lock on the order row). Each test forces one interleaving with threads:

* the transition first: the tick runs after the transition has read (and locked) the clocks;
* the tick first: the transition arrives after the tick has claimed the clock and before it writes its
  alert, event and SMS rows; the transition waits for the clock, and the tick must not then wait for the
  order (a lock cycle: PostgreSQL would abort one of them as a deadlock).

Neither side may fail, and the clock ends up either breached once or not breached at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from dispatch.actors import Actor
from dispatch.extensions import db
from dispatch.models import Alert, OrderEvent, SlaClock
from dispatch.services import orders
from dispatch.sla import clocks, tick
from tests.conftest import T0

DISPATCHER = Actor(kind="user", id=1, name="disp", role="dispatcher", source="api")
LATE = T0 + timedelta(hours=49)  # a broadband install's completion clock is due at T0 + 48 h


class Worker(threading.Thread):
    """``func()`` in its own app context (its own session and connection); the result or the error kept."""

    def __init__(self, app: Flask, func: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.app, self.func = app, func
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        with self.app.app_context():
            try:
                self.result = self.func()
            except BaseException as exc:  # checked by the test
                self.error = exc
                db.session.rollback()
            finally:
                db.session.remove()

    def finish(self, what: str) -> Any:
        self.join(timeout=30)
        assert not self.is_alive(), f"the {what} hung"
        assert self.error is None, f"the {what} failed: {self.error!r}"
        return self.result


def _completion(order_id: int) -> SlaClock:
    db.session.rollback()  # a fresh snapshot: the other threads' commits
    return db.session.scalars(
        sa.select(SlaClock).where(SlaClock.order_id == order_id, SlaClock.clock == "completion")
    ).one()


def _breach_records(clock_id: int) -> tuple[int, int]:
    db.session.rollback()
    alerts = db.session.scalar(
        sa.select(sa.func.count()).where(Alert.clock_id == clock_id, Alert.kind == "breach")
    )
    events = sum(
        1
        for payload in db.session.scalars(
            sa.select(OrderEvent.payload).where(OrderEvent.action == "sla_breach")
        )
        if payload.get("clock_id") == clock_id
    )
    return alerts, events


def _wait_for_lock_wait(app: Flask, timeout: float = 5) -> bool:
    """Until some backend of this database waits for a row lock (the transition, blocked by the tick)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = db.session.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
        )
        db.session.rollback()
        if waiting:
            return True
        time.sleep(0.02)
    return False


def _suspend(order_id: int) -> Any:
    return orders.suspend_order(
        order_id, reason_code="customer_postponed", note=None, until=None, actor=DISPATCHER
    )


def _cancel(order_id: int) -> Any:
    return orders.cancel_order(order_id, reason="customer withdrew", actor=DISPATCHER)


@pytest.mark.parametrize("transition", [_suspend, _cancel], ids=["suspend", "cancel"])
def test_transition_first_then_tick(pg_app, make_order, monkeypatch, transition):
    order_id = make_order().id
    clock_id = _completion(order_id).id
    pg_app.extensions["clock"].set(LATE)
    ticker = Worker(pg_app, lambda: tick.tick(LATE))
    original = clocks.live_clocks

    def live_clocks(order: Any) -> Any:
        live = original(order)
        if not ticker.is_alive() and ticker.ident is None:
            ticker.start()  # the tick runs now, while the transition holds the order and its clocks
            ticker.join(timeout=2)
        return live

    monkeypatch.setattr(clocks, "live_clocks", live_clocks)
    transition(order_id)
    monkeypatch.setattr(clocks, "live_clocks", original)
    result = ticker.finish("tick")

    assert result.breaches == 0  # the transition held the clock: the tick skipped it
    clock = _completion(order_id)
    assert clock.status == ("paused" if transition is _suspend else "cancelled")
    assert _breach_records(clock_id) == (0, 0)


@pytest.mark.parametrize("transition", [_suspend, _cancel], ids=["suspend", "cancel"])
def test_tick_first_then_transition(pg_app, make_order, monkeypatch, transition):
    order_id = make_order().id
    clock_id = _completion(order_id).id
    pg_app.extensions["clock"].set(LATE)
    claimed, go_on = threading.Event(), threading.Event()
    original = tick.claim_breaches

    def claim_breaches(now: Any, limit: int = tick.BATCH) -> list[int]:
        ids = original(now, limit)
        if ids:
            claimed.set()
            go_on.wait(timeout=10)  # the transition comes in here, before the alert, event and SMS rows
        return ids

    monkeypatch.setattr(tick, "claim_breaches", claim_breaches)
    ticker = Worker(pg_app, lambda: tick.tick(LATE))
    ticker.start()
    assert claimed.wait(timeout=10), "the tick claimed nothing"
    mover = Worker(pg_app, lambda: transition(order_id))
    mover.start()
    blocked = _wait_for_lock_wait(pg_app)
    go_on.set()
    result = ticker.finish("tick")
    mover.finish("transition")

    assert blocked, "the transition should have waited for the tick's clock"
    assert result.breaches == 1
    assert _breach_records(clock_id) == (1, 1)
    assert _completion(order_id).status == "breached"  # the transition found it no longer live
