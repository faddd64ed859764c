"""A past day's KPI counters recomputed from the events, to check the incremental rollup against.

The rollup (dispatch/reporting/rollup.py) counts each change as it happens; this module starts from the
record instead: each order's event log (intake, assignments with their team, returns, cancellations with
their cause, check-ins, completion), its clocks' outcomes, the complaints and the satisfaction answers. Both
go through the same formulas (dispatch/reporting/kpi.py), so any difference is a change the rollup missed
or counted twice. ``flask kpi-verify`` runs it for a range of days.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from dispatch.extensions import db
from dispatch.models import Address, Complaint, Order, OrderEvent, SatisfactionResponse, SlaClock
from dispatch.models.reporting import GROUPINGS
from dispatch.reporting import kpi, rollup
from dispatch.timeutil import business_day, local_day_bounds
from dispatch.vocabulary import CUSTOMER_CAUSED_CANCEL_REASONS, CUSTOMER_CAUSED_RETURN_REASONS


@dataclass
class _History:
    """One order as its events tell it."""

    order_type: str
    district: str
    created_at: datetime
    customer_id: int
    status: str = "new"
    cancel_reason_code: str | None = None
    return_reason: str | None = None
    completed_at: datetime | None = None
    check_ins: int = 0
    # (occurred_at, engineer_id, team_id) after each assignment change, in event order.
    assignments: list[tuple[datetime, int, int]] = field(default_factory=list)

    def assignment_at(self, when: datetime) -> tuple[int, int]:
        times = [a[0] for a in self.assignments]
        i = bisect.bisect_right(times, when)
        return self.assignments[i - 1][1:] if i else (0, 0)

    def dims_at(self, when: datetime) -> kpi.Dims:
        engineer_id, team_id = self.assignment_at(when)
        return kpi.Dims(self.order_type, self.district, team_id, engineer_id)


def _histories(order_ids: Iterable[int]) -> dict[int, _History]:
    ids = sorted(set(order_ids))
    histories: dict[int, _History] = {}
    if not ids:
        return histories
    for row in db.session.execute(
        sa.select(Order.id, Order.order_type, Order.created_at, Order.customer_id, Address.district_name)
        .join(Address, Address.id == Order.address_id)
        .where(Order.id.in_(ids))
    ):
        histories[row.id] = _History(row.order_type, row.district_name, row.created_at, row.customer_id)
    events = db.session.execute(
        sa.select(
            OrderEvent.order_id,
            OrderEvent.action,
            OrderEvent.to_status,
            OrderEvent.occurred_at,
            OrderEvent.payload,
        )
        .where(OrderEvent.order_id.in_(ids))
        .order_by(OrderEvent.id)
    )
    for event in events:
        history = histories[event.order_id]
        payload = event.payload or {}
        if event.to_status is not None:
            history.status = event.to_status
        if event.action in ("assign", "reassign"):
            engineer_id = int(payload.get("engineer_id") or 0)
            history.assignments.append((event.occurred_at, engineer_id, int(payload.get("team_id") or 0)))
        elif event.action == "return":
            history.return_reason = payload.get("reason_code")
            history.assignments.append((event.occurred_at, 0, 0))
        elif event.action == "cancel":
            history.cancel_reason_code = payload.get("reason_code")
        elif event.action == "check_in":
            history.check_ins += 1
        elif event.action == "complete":
            history.completed_at = event.occurred_at
    return histories


def _facts(history: _History, on_time: bool, repeated: bool) -> kpi.OrderFacts:
    engineer_id, team_id = history.assignments[-1][1:] if history.assignments else (0, 0)
    outcome = kpi.outcome_of(
        history.status,
        cancel_reason_code=history.cancel_reason_code,
        return_reason=history.return_reason,
        customer_cancel=CUSTOMER_CAUSED_CANCEL_REASONS,
        customer_return=CUSTOMER_CAUSED_RETURN_REASONS,
    )
    received = rollup.initial_facts(history.order_type, history.district, history.created_at)
    facts = replace(received.assigned(engineer_id, team_id), outcome=outcome)
    if outcome != "completed" or history.completed_at is None:
        return facts
    single_visit = history.order_type == "repair" and history.check_ins == 1
    return replace(
        facts,
        on_time=on_time,
        completed_day=business_day(history.completed_at),
        single_visit=single_visit,
        repeated=single_visit and repeated,
    )


def _repeated(history: _History, order_id: int) -> bool:
    """A repair of the same customer came in after this one's completion, within 30 days."""
    assert history.completed_at is not None
    until = history.completed_at + timedelta(days=kpi.REPEAT_REPAIR_DAYS)
    return (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Order)
            .where(
                Order.customer_id == history.customer_id,
                Order.order_type == "repair",
                Order.id != order_id,
                Order.created_at >= history.completed_at,
                Order.created_at <= until,
            )
        )
        or 0
    ) > 0


def counters_for_day(day: date) -> Counter[kpi.Key]:
    """Every counter of ``day`` (business day), from the record."""
    start, end = local_day_bounds(day)

    def in_day(column: Any) -> sa.ColumnElement[bool]:
        return sa.and_(column >= start, column < end)

    order_ids = set(
        db.session.scalars(
            sa.select(Order.id).where(
                sa.or_(
                    in_day(Order.created_at),
                    sa.and_(Order.order_type == "repair", in_day(Order.completed_at)),
                )
            )
        )
    )
    decided = sa.case((SlaClock.status == "breached", SlaClock.breached_at), else_=SlaClock.stopped_at)
    clocks = (
        db.session.execute(
            sa.select(SlaClock).where(
                SlaClock.status.in_(("met", "breached")),
                sa.or_(in_day(decided), sa.and_(SlaClock.clock == "arrival", in_day(SlaClock.due_at))),
            )
        )
        .scalars()
        .all()
    )
    answers = db.session.scalars(
        sa.select(SatisfactionResponse).where(in_day(SatisfactionResponse.received_at))
    ).all()
    completion_met = {
        row.order_id: row.status == "met"
        for row in db.session.execute(
            sa.select(SlaClock.order_id, SlaClock.status)
            .where(SlaClock.clock == "completion", SlaClock.order_id.in_(sorted(order_ids)))
            .order_by(SlaClock.id)
        )
    }
    histories = _histories(order_ids | {c.order_id for c in clocks} | {a.order_id for a in answers})

    out: Counter[kpi.Key] = Counter()
    for order_id in order_ids:
        history = histories[order_id]
        completed = history.status == "completed" and history.completed_at is not None
        repeated = completed and history.order_type == "repair" and _repeated(history, order_id)
        facts = _facts(history, completion_met.get(order_id, False), repeated)
        out.update(kpi.order_contributions(facts))
    for clock in clocks:
        when = clock.breached_at if clock.status == "breached" else clock.stopped_at
        assert when is not None
        dims = histories[clock.order_id].dims_at(when)
        out.update(
            rollup.clock_counter(
                clock.clock, clock.status, clock.stopped_at, clock.breached_at, clock.due_at, dims
            )
        )
    for answer in answers:
        dims = histories[answer.order_id].dims_at(answer.received_at)
        out.update(kpi.satisfaction_contributions(answer.score, day=day, dims=dims))
    for complaint in db.session.scalars(sa.select(Complaint).where(in_day(Complaint.received_at))):
        dims = kpi.Dims(
            complaint.order_type or "",
            complaint.district or "",
            complaint.team_id or 0,
            complaint.engineer_id or 0,
        )
        out.update(kpi.complaint_contributions(complaint.category, complaint.cause, day=day, dims=dims))
    return Counter({key: value for key, value in out.items() if key[0] == day and value})


def recomputed(day: date) -> Counter[rollup.Projected]:
    """``day``'s daily totals as the record says they should be."""
    return Counter({k: v for k, v in rollup.project(counters_for_day(day)).items() if v})


def stored(day: date) -> Counter[rollup.Projected]:
    """``day``'s daily totals as the rollup holds them (folded and not yet folded)."""
    out: Counter[rollup.Projected] = Counter()
    for grouping in GROUPINGS:
        for row in rollup.totals(grouping, day, day, by_day=True):
            if row.value:
                out[(grouping, row.day, row.key, row.order_type, row.metric)] += int(row.value)
    return out


def differences(day: date) -> dict[rollup.Projected, tuple[int, int]]:
    """``{total: (stored, recomputed)}`` where the two disagree; empty when the rollup is right."""
    have, want = stored(day), recomputed(day)
    return {
        key: (have.get(key, 0), want.get(key, 0))
        for key in sorted(set(have) | set(want))
        if have.get(key, 0) != want.get(key, 0)
    }
