"""KPI rollups, maintained incrementally: deltas written with their cause, folded into daily totals.

Each transaction that changes a KPI writes :class:`~dispatch.models.KpiDelta` rows (insert only, so
concurrent transactions never queue on a hot counter row) next to the change itself. :func:`fold`, a
scheduler job, deletes a batch of deltas and adds them to :class:`~dispatch.models.KpiDaily` in one
transaction (``DELETE ... RETURNING``; on PostgreSQL over rows locked ``SKIP LOCKED``), so a delta counts
exactly once whichever scheduler folds it and whenever one dies. A report reads the daily totals plus the
deltas not folded yet, in one statement (one snapshot): exact at every moment, not only after the fold.

An order's contribution can change after it was counted (reassigned, completed, cancelled): its current
contribution is kept in :class:`~dispatch.models.KpiOrderFacts`, and a change writes the difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from dispatch.extensions import db
from dispatch.models import Engineer, KpiDaily, KpiDelta, KpiOrderFacts, Order, OrderEvent, SlaClock
from dispatch.models.reporting import GROUPINGS
from dispatch.reporting import kpi
from dispatch.timeutil import business_day
from dispatch.vocabulary import CUSTOMER_CAUSED_CANCEL_REASONS, CUSTOMER_CAUSED_RETURN_REASONS

BATCH = 5000
# The transitions that can change an order's facts (its engineer or its outcome).
FACT_ACTIONS = frozenset({"assign", "reassign", "return", "cancel", "complete"})

DELTAS: sa.Table = KpiDelta.__table__  # type: ignore[assignment]
_DAILY: sa.Table = KpiDaily.__table__  # type: ignore[assignment]

Projected = tuple[str, date, str, str, str]  # (grouping, day, key, order_type, metric)


# --- writing deltas -----------------------------------------------------------------------------------


def delta_rows(counter: Counter[kpi.Key]) -> list[dict[str, Any]]:
    return [
        {
            "day": day,
            "order_type": dims.order_type,
            "district": dims.district,
            "team_id": dims.team_id,
            "engineer_id": dims.engineer_id,
            "metric": metric,
            "value": value,
        }
        for (day, dims, metric), value in sorted(counter.items())
        if value
    ]


def emit(counter: Counter[kpi.Key]) -> None:
    """Write ``counter`` as deltas in the caller's transaction (nothing commits here)."""
    rows = delta_rows(counter)
    if rows:
        db.session.connection().execute(DELTAS.insert(), rows)


# --- an order's facts ---------------------------------------------------------------------------------


def initial_facts(order_type: str, district: str, created_at: datetime) -> kpi.OrderFacts:
    """An order as received: open, unassigned."""
    return kpi.OrderFacts(dims=kpi.Dims(order_type, district), received_day=business_day(created_at))


def _as_facts(row: KpiOrderFacts) -> kpi.OrderFacts:
    return kpi.OrderFacts(
        dims=kpi.Dims(row.order_type, row.district, row.team_id, row.engineer_id),
        received_day=row.received_day,
        outcome=row.outcome,
        on_time=row.on_time,
        completed_day=row.completed_day,
        single_visit=row.single_visit,
        repeated=row.repeated,
    )


def _facts_row(order_id: int) -> KpiOrderFacts | None:
    # A row added earlier in this transaction may not be flushed yet (several transitions under
    # no_autoflush, as the demo loader runs them): the session's own note of it comes first.
    pending: dict[int, KpiOrderFacts] = db.session.info.setdefault("kpi_order_facts", {})
    row = pending.get(order_id)
    if row is not None and row in db.session:
        return row
    return db.session.get(KpiOrderFacts, order_id)


def current_facts(order: Order) -> kpi.OrderFacts:
    """What ``order`` contributes now (as last recorded)."""
    row = _facts_row(order.id)
    if row is not None:
        return _as_facts(row)
    return initial_facts(order.order_type, order.address.district_name, order.created_at)


def team_of(engineer_id: int | None) -> int:
    if not engineer_id:
        return 0
    engineer = db.session.get(Engineer, engineer_id)
    return (engineer.team_id or 0) if engineer is not None else 0


def _facts_after(order: Order, before: kpi.OrderFacts, outcomes: Iterable[SlaClock]) -> kpi.OrderFacts:
    engineer_id = order.engineer_id or 0
    team_id = before.dims.team_id if engineer_id == before.dims.engineer_id else team_of(engineer_id)
    outcome = kpi.outcome_of(
        order.status,
        cancel_reason_code=order.cancel_reason_code,
        return_reason=order.return_reason,
        customer_cancel=CUSTOMER_CAUSED_CANCEL_REASONS,
        customer_return=CUSTOMER_CAUSED_RETURN_REASONS,
    )
    after = replace(before.assigned(engineer_id, team_id), outcome=outcome)
    if outcome == "completed" and before.outcome != "completed":
        assert order.completed_at is not None
        single_visit = order.order_type == "repair" and _visits(order.id) == 1
        after = replace(
            after,
            # Met here, or breached before (then it is not among this transition's outcomes).
            on_time=any(c.clock == "completion" and c.status == "met" for c in outcomes),
            completed_day=business_day(order.completed_at),
            single_visit=single_visit,
            repeated=single_visit and _repaired_again(order, order.completed_at),
        )
    return after


def _repaired_again(order: Order, completed_at: datetime) -> bool:
    """A later repair of the same customer is on record already: never in live operation (it would come
    in after the completion), but a history loaded out of order (the demo, a backfill) must count the same."""
    later = sa.select(Order.id).where(
        Order.customer_id == order.customer_id,
        Order.order_type == "repair",
        Order.id != order.id,
        Order.created_at >= completed_at,
        Order.created_at <= completed_at + timedelta(days=kpi.REPEAT_REPAIR_DAYS),
    )
    return db.session.scalar(sa.select(later.exists())) or False


def _visits(order_id: int) -> int:
    return int(
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(OrderEvent)
            .where(OrderEvent.order_id == order_id, OrderEvent.action == "check_in")
        )
        or 0
    )


def _save(order_id: int, facts: kpi.OrderFacts) -> None:
    row = _facts_row(order_id)
    if row is None:
        row = KpiOrderFacts(order_id=order_id)
        db.session.add(row)
        db.session.info.setdefault("kpi_order_facts", {})[order_id] = row
    row.received_day = facts.received_day
    row.order_type, row.district = facts.dims.order_type, facts.dims.district
    row.team_id, row.engineer_id = facts.dims.team_id, facts.dims.engineer_id
    row.outcome, row.on_time = facts.outcome, facts.on_time
    row.completed_day, row.single_visit, row.repeated = (
        facts.completed_day,
        facts.single_visit,
        facts.repeated,
    )


def on_order_change(order: Order, before: kpi.OrderFacts, outcomes: Iterable[SlaClock]) -> kpi.OrderFacts:
    """After a transition changed ``order`` (its clocks reached ``outcomes``): write the difference to its
    contribution, and remember it."""
    after = _facts_after(order, before, outcomes)
    if after != before:
        emit(kpi.change(before, after))
        _save(order.id, after)
    return after


def on_clock_outcomes(order: Order, clocks: Iterable[SlaClock], dims: kpi.Dims) -> None:
    """Clocks of ``order`` just met or breached in this transaction (dispatch.sla.clocks.on_transition)."""
    counter: Counter[kpi.Key] = Counter()
    for row in clocks:
        counter.update(
            clock_counter(row.clock, row.status, row.stopped_at, row.breached_at, row.due_at, dims)
        )
    emit(counter)


def clock_counter(
    clock: str,
    status: str,
    stopped_at: datetime | None,
    breached_at: datetime | None,
    due_at: datetime,
    dims: kpi.Dims,
) -> Counter[kpi.Key]:
    """A clock's outcome counts on the day it was decided: when met, or when breached (even if met late)."""
    decided = breached_at if status == "breached" else stopped_at
    assert decided is not None
    return kpi.clock_contributions(
        clock, status, outcome_day=business_day(decided), due_day=business_day(due_at), dims=dims
    )


def on_satisfaction(order: Order, score: int, now: datetime) -> None:
    """The customer's answer to the completion SMS, counted for the engineer who completed the order."""
    emit(kpi.satisfaction_contributions(score, day=business_day(now), dims=current_facts(order).dims))


def on_intake(
    order_type: str, district: str, *, order_id: int, customer_id: int | None, now: datetime
) -> None:
    """A new order: one more received, and for a repair, the customer's earlier repairs may not have held."""
    db.session.connection().execute(DELTAS.insert(), intake_deltas(order_type, district, now))
    if order_type == "repair" and customer_id is not None:
        mark_repeat_repairs(customer_id, order_id, now)


def intake_deltas(order_type: str, district: str, now: datetime) -> list[dict[str, Any]]:
    """The delta rows of an order received now (one: received; hotline intake writes it in its own INSERT)."""
    return delta_rows(kpi.order_contributions(initial_facts(order_type, district, now)))


def mark_repeat_repairs(customer_id: int, new_order_id: int, now: datetime) -> None:
    """A repair came in for ``customer_id``: the customer's single-visit repairs completed in the 30 days
    before were not first-time fixes after all (each is marked once, by the first repeat)."""
    since = now - timedelta(days=kpi.REPEAT_REPAIR_DAYS)
    rows = db.session.scalars(
        sa.select(KpiOrderFacts)
        .join(Order, Order.id == KpiOrderFacts.order_id)
        .where(
            Order.customer_id == customer_id,
            Order.order_type == "repair",
            Order.id != new_order_id,
            Order.completed_at >= since,
            Order.completed_at <= now,
            KpiOrderFacts.outcome == "completed",
            KpiOrderFacts.single_visit.is_(True),
            KpiOrderFacts.repeated.is_(False),
        )
    ).all()
    for row in rows:
        before = _as_facts(row)
        after = replace(before, repeated=True)
        emit(kpi.change(before, after))
        row.repeated = True


# --- folding and reading ------------------------------------------------------------------------------


def project(counter: Counter[kpi.Key]) -> Counter[Projected]:
    """The daily totals a counter adds to: every grouping of its dimensions, each split by order type."""
    out: Counter[Projected] = Counter()
    for (day, dims, metric), value in counter.items():
        for grouping, key in (
            ("order_type", ""),
            ("district", dims.district),
            ("team", str(dims.team_id)),
            ("engineer", str(dims.engineer_id)),
        ):
            out[(grouping, day, key, dims.order_type, metric)] += value
    return out


def _deleted_batch(limit: int) -> Any:
    pick = sa.select(DELTAS.c.id).order_by(DELTAS.c.id).limit(limit)
    if db.session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    return (
        sa.delete(DELTAS)
        .where(DELTAS.c.id.in_(pick.scalar_subquery()))
        .returning(
            DELTAS.c.day,
            DELTAS.c.order_type,
            DELTAS.c.district,
            DELTAS.c.team_id,
            DELTAS.c.engineer_id,
            DELTAS.c.metric,
            DELTAS.c.value,
        )
    )


def _upsert() -> Any:
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(_DAILY)
    return statement.on_conflict_do_update(
        index_elements=[_DAILY.c.grouping, _DAILY.c.day, _DAILY.c.key, _DAILY.c.order_type, _DAILY.c.metric],
        set_={"value": _DAILY.c.value + statement.excluded.value},
    )


@dataclass
class FoldResult:
    deltas: int = 0
    rows: int = 0

    def __bool__(self) -> bool:
        return bool(self.deltas)


def fold(*, batch: int = BATCH) -> FoldResult:
    """Move the deltas into the daily totals, one committed batch at a time."""
    result = FoldResult()
    while True:
        rows = db.session.execute(_deleted_batch(batch)).all()
        counter: Counter[kpi.Key] = Counter()
        for row in rows:
            dims = kpi.Dims(row.order_type, row.district, row.team_id, row.engineer_id)
            counter[(row.day, dims, row.metric)] += row.value
        # Sorted: two folding schedulers lock the rows they add to in the same order (no deadlock).
        totals = sorted((key, value) for key, value in project(counter).items() if value)
        if totals:
            db.session.execute(
                _upsert(),
                [
                    {"grouping": g, "day": d, "key": k, "order_type": t, "metric": m, "value": v}
                    for (g, d, k, t, m), v in totals
                ],
            )
        db.session.commit()
        result.deltas += len(rows)
        result.rows += len(totals)
        if len(rows) < batch:
            return result


def _delta_key(grouping: str) -> sa.ColumnElement[str]:
    if grouping == "order_type":
        return sa.literal("", sa.String)
    if grouping == "district":
        return DELTAS.c.district
    column = DELTAS.c.team_id if grouping == "team" else DELTAS.c.engineer_id
    return sa.cast(column, sa.String)


def totals(grouping: str, start: date, end: date, *, by_day: bool = False) -> list[Any]:
    """``(key, order_type, metric, value)`` (with ``day`` first when ``by_day``) summed over [start, end]:
    the daily totals plus the deltas not folded yet, read in one statement."""
    assert grouping in GROUPINGS
    folded = sa.select(
        _DAILY.c.day, _DAILY.c.key, _DAILY.c.order_type, _DAILY.c.metric, _DAILY.c.value
    ).where(_DAILY.c.grouping == grouping, _DAILY.c.day.between(start, end))
    pending = sa.select(
        DELTAS.c.day,
        _delta_key(grouping).label("key"),
        DELTAS.c.order_type,
        DELTAS.c.metric,
        DELTAS.c.value,
    ).where(DELTAS.c.day.between(start, end))
    both = sa.union_all(folded, pending).subquery()
    columns = [both.c.key, both.c.order_type, both.c.metric]
    if by_day:
        columns.insert(0, both.c.day)
    query = sa.select(*columns, sa.func.sum(both.c.value).label("value")).group_by(*columns)
    return list(db.session.execute(query).all())


def targets() -> kpi.Targets:
    return kpi.Targets.parse(
        current_app.config.get("KPI_COMPLETION_TARGETS"), current_app.config.get("KPI_COMPLAINT_TARGETS")
    )
