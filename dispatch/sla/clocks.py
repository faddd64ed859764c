"""Which clocks each workflow transition starts, stops, pauses, resumes or cancels (DOMAIN.md "SLA clocks").

:func:`on_transition` is called by :func:`dispatch.workflow.apply` in the transition's own transaction, so
a status change and its clock changes commit together. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm.util import identity_key

from dispatch.extensions import db
from dispatch.models import Order, SlaClock, SlaPolicy
from dispatch.sla import policy as arithmetic
from dispatch.timeutil import business_tz
from dispatch.vocabulary import CUSTOMER_CAUSED_SUSPEND_REASONS

LIVE = ("running", "paused")
ENGINEER_CLOCKS = ("take", "contact", "arrival", "acceptance")


_POLICIES: sa.Table = SlaPolicy.__table__  # type: ignore[assignment]
_POLICY = sa.select(_POLICIES.c.target_seconds, _POLICIES.c.warn_percent).where(
    _POLICIES.c.order_type == sa.bindparam("order_type"), _POLICIES.c.clock == sa.bindparam("clock")
)


def policy_for(order_type: str, clock: str) -> arithmetic.Policy:
    """The policy in force now, read at every start (no per-process cache: an admin's change applies to
    the next clock started, in every worker). A policy row this session already holds wins, as with
    ``session.get``; otherwise a two-column Core read: no ORM object and no autoflush of the caller's
    pending rows (intake starts its clock in the middle of its own writes)."""
    session = db.session()
    held = session.identity_map.get(identity_key(SlaPolicy, (order_type, clock)))
    if held is not None:
        return arithmetic.Policy(held.target_seconds, held.warn_percent)
    row = session.connection().execute(_POLICY, {"order_type": order_type, "clock": clock}).first()
    if row is not None:
        return arithmetic.Policy(row.target_seconds, row.warn_percent)
    return arithmetic.default_policies()[(order_type, clock)]


def live_clocks(order: Order) -> dict[str, SlaClock]:
    db.session.flush()  # clocks started earlier in this transaction must be seen (also under no_autoflush)
    # Locked (PostgreSQL) and re-read: a tick that claimed one first makes it not live here, and the tick
    # skips the ones locked here, so a transition never pauses, stops or cancels a clock over its breach.
    rows = db.session.scalars(
        sa.select(SlaClock)
        .where(SlaClock.order_id == order.id, SlaClock.status.in_(LIVE))
        .order_by(SlaClock.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return {row.clock: row for row in rows}


def start(order: Order, clock: str, now: datetime) -> SlaClock:
    """Start ``clock`` for ``order`` under the policy in force now."""
    row = SlaClock(**clock_row(order, clock, now))
    db.session.add(row)
    return row


def clock_row(
    order: Order, clock: str, now: datetime, policy: arithmetic.Policy | None = None
) -> dict[str, Any]:
    """The columns of the row :func:`start` adds, every one but ``id`` (hotline intake writes them with
    Core, in the order's transaction, under the policy row it read in its own lookup:
    dispatch/services/intake.py)."""
    policy = policy or policy_for(order.order_type, clock)
    if clock == "arrival":
        assert order.appointment_start is not None
        deadline = arithmetic.arrival_deadline(
            now, order.appointment_start, policy, int(current_app.config.get("ARRIVAL_WARN_SECONDS", 1800))
        )
    else:
        deadline = arithmetic.deadline(now, policy)
        cutoff = arithmetic.parse_cutoff(str(current_app.config.get("REPAIR_CUTOFF") or ""))
        if clock == "completion" and order.order_type == "repair" and cutoff is not None:
            due = arithmetic.repair_same_day_deadline(now, cutoff, business_tz())
            warn = now + (due - now) * policy.warn_percent / 100
            deadline = arithmetic.Deadline(due, warn if warn < due else None)
    return {
        "order_id": order.id,
        "clock": clock,
        "status": "running",
        "engineer_id": order.engineer_id if clock in ENGINEER_CLOCKS else None,
        "target_seconds": int((deadline.due_at - now).total_seconds()),
        "warn_percent": policy.warn_percent,
        "started_at": now,
        "due_at": deadline.due_at,
        "warn_at": deadline.warn_at,
        "paused_at": None,
        "paused_seconds": 0,
        "warned_at": None,
        "breached_at": None,
        "stopped_at": None,
        "outcome": None,
    }


def stop(row: SlaClock, now: datetime, outcome: str | None = None) -> None:
    """Stop a clock because its condition was met: on time → met; late → breached (once)."""
    row.stopped_at = now
    if row.status == "breached":  # the tick already recorded the breach
        return
    if row.status == "paused":
        resume(row, now)
    row.status = arithmetic.met_or_breached(now, row.due_at)
    if row.status == "breached":
        row.breached_at = row.breached_at or now
    row.outcome = outcome


def stop_breached(order: Order, clock: str, now: datetime) -> None:
    """The condition of a clock the tick already breached (no longer live) is met late: it stops now."""
    rows = db.session.scalars(
        sa.select(SlaClock).where(
            SlaClock.order_id == order.id,
            SlaClock.clock == clock,
            SlaClock.status == "breached",
            SlaClock.stopped_at.is_(None),
        )
    )
    for row in rows:
        stop(row, now)


def cancel(row: SlaClock, now: datetime, outcome: str) -> None:
    if row.status in LIVE:
        row.status = "cancelled"
        row.stopped_at = now
        row.outcome = outcome


def pause(row: SlaClock, now: datetime) -> None:
    if row.status == "running":
        row.status = "paused"
        row.paused_at = now


def resume(row: SlaClock, now: datetime) -> None:
    """Resume a paused clock; its deadlines move by the paused time."""
    if row.status != "paused" or row.paused_at is None:
        return
    paused_for = now - row.paused_at
    row.paused_seconds += int(paused_for.total_seconds())
    row.due_at = row.due_at + paused_for
    row.warn_at = arithmetic.shifted(row.warn_at, paused_for)
    row.paused_at = None
    row.status = "running"


def _move_arrival(row: SlaClock, order: Order, now: datetime) -> None:
    """A customer reschedule: the same arrival clock, due at the new window start."""
    assert order.appointment_start is not None
    deadline = arithmetic.arrival_deadline(
        row.started_at,
        order.appointment_start,
        policy_for(order.order_type, "arrival"),
        int(current_app.config.get("ARRIVAL_WARN_SECONDS", 1800)),
    )
    row.due_at = deadline.due_at + timedelta(seconds=row.paused_seconds)
    row.warn_at = arithmetic.shifted(deadline.warn_at, timedelta(seconds=row.paused_seconds))
    if row.warn_at is not None and row.warn_at > now:
        row.warned_at = None  # the new deadline deserves its own warning


Handler = Callable[[Order, dict[str, SlaClock], datetime, Mapping[str, Any]], None]


def _on_intake(order: Order, live: dict[str, SlaClock], now: datetime, params: Mapping[str, Any]) -> None:
    start(order, "completion", now)


def _on_assign(order: Order, live: dict[str, SlaClock], now: datetime, params: Mapping[str, Any]) -> None:
    for name in ENGINEER_CLOCKS:
        if name in live:
            cancel(live[name], now, "reassigned")
    start(order, "take", now)


def _stop_then_start(stopped: str | None, started: str | None) -> Handler:
    def handler(order: Order, live: dict[str, SlaClock], now: datetime, params: Mapping[str, Any]) -> None:
        if stopped and stopped in live:
            stop(live[stopped], now)
        elif stopped:
            stop_breached(order, stopped, now)
        if started:
            start(order, started, now)

    return handler


def _on_reschedule(order: Order, live: dict[str, SlaClock], now: datetime, params: Mapping[str, Any]) -> None:
    arrival = live.get("arrival")
    if params.get("reason") == "customer" and arrival is not None:
        _move_arrival(arrival, order, now)
        return
    if arrival is not None:  # provider-caused: the old appointment counts as missed
        stop(arrival, now, "provider_reschedule")
        if arrival.status == "met":
            arrival.status = "breached"
            arrival.breached_at = now
    start(order, "arrival", now)


def _on_return(order: Order, live: dict[str, SlaClock], now: datetime, params: Mapping[str, Any]) -> None:
    for name in ENGINEER_CLOCKS:
        if name in live:
            cancel(live[name], now, "returned")


def _on_suspend(order: Order, live: dict[str, SlaClock], now: datetime, params: Mapping[str, Any]) -> None:
    # Provider-side reasons are recorded but stop no clock, unless a dispatcher approves the exclusion.
    if params.get("reason_code") in CUSTOMER_CAUSED_SUSPEND_REASONS or params.get("exclude_from_sla"):
        for row in live.values():
            pause(row, now)


def _on_resume(order: Order, live: dict[str, SlaClock], now: datetime, params: Mapping[str, Any]) -> None:
    for row in live.values():
        resume(row, now)


def _on_complete(order: Order, live: dict[str, SlaClock], now: datetime, params: Mapping[str, Any]) -> None:
    for name, row in live.items():
        if name == "completion":
            stop(row, now)
        else:
            cancel(row, now, "completed")
    if "completion" not in live:
        stop_breached(order, "completion", now)


def _on_cancel(order: Order, live: dict[str, SlaClock], now: datetime, params: Mapping[str, Any]) -> None:
    for row in live.values():
        cancel(row, now, "order_cancelled")


HANDLERS: dict[str, Handler] = {
    "intake": _on_intake,
    "assign": _on_assign,
    "reassign": _on_assign,
    "take": _stop_then_start("take", "contact"),
    "appoint": _stop_then_start("contact", "arrival"),
    "reschedule": _on_reschedule,
    "check_in": _stop_then_start("arrival", None),
    "submit": _stop_then_start(None, "acceptance"),
    "approve": _stop_then_start("acceptance", None),
    "reject": _stop_then_start("acceptance", None),
    "complete": _on_complete,
    "return": _on_return,
    "suspend": _on_suspend,
    "resume": _on_resume,
    "cancel": _on_cancel,
}


def on_transition(order: Order, action: str, *, now: datetime, params: Mapping[str, Any]) -> list[SlaClock]:
    """Apply the clock effects of ``action`` (already applied to ``order``'s status); return the clocks
    that reached their outcome (met or breached) here, for the KPIs."""
    handler = HANDLERS.get(action)
    if handler is None:
        return []
    if order.id is None:
        db.session.flush()
    live = live_clocks(order) if action != "intake" else {}
    handler(order, live, now, params)
    return [row for row in live.values() if row.status in ("met", "breached")]
