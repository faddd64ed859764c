"""The KPI formulas of DOMAIN.md ("KPIs"), pure: what an order contributes, and figures from counters.

Counters are named metrics summed per business day and dimensions. Everything here works on plain values
(no app, no database): the incremental rollup (dispatch/reporting/rollup.py), the recomputation from the
events (dispatch/reporting/recompute.py) and the report all go through these functions, so the two ways of
counting can only disagree on the facts they read, which is what the reproducibility test checks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from dispatch.vocabulary import (
    COMPLAINT_CATEGORIES,
    COMPLAINT_CAUSES,
    ESCALATED_TARGET_CAUSES,
    ORDER_TYPES,
    parse_pairs,
)

# Targets from the deck (DOMAIN.md); overridable with KPI_COMPLETION_TARGETS / KPI_COMPLAINT_TARGETS.
COMPLETION_TARGETS: dict[str, float] = {"broadband_install": 0.98, "opportunity": 0.80, "iptv_install": 1.0}
COMPLAINT_TARGETS_PER_DAY: dict[str, float] = {"backend_first_contact": 60, "appointment": 8}
ESCALATED_TARGET = 0  # escalated complaints caused by installation service or network, in the period
SATISFIED_MIN_SCORE = 4  # of 1–5
REPEAT_REPAIR_DAYS = 30
SLA_CLOCKS = ("take", "contact", "arrival", "acceptance", "completion")

# Counter names.
RECEIVED, EXCLUDED, COMPLETED, ON_TIME = (
    "orders.received",
    "orders.excluded",
    "orders.completed",
    "orders.completed_on_time",
)
REPAIRS, SINGLE_VISIT, REPEATED = "repairs.completed", "repairs.single_visit", "repairs.repeated"
KEPT, MISSED = "appointments.kept", "appointments.missed"
ANSWERS, SATISFIED = "satisfaction.answers", "satisfaction.satisfied"


def sla_metric(clock: str, status: str) -> str:
    return f"sla.{clock}.{status}"


def complaint_metric(category: str, cause: str) -> str:
    return f"complaints.{category}.{cause}"


@dataclass(frozen=True, order=True)
class Dims:
    """Who and what a counter is about: '' and 0 when unknown (unassigned; a complaint without an order)."""

    order_type: str
    district: str
    team_id: int = 0
    engineer_id: int = 0


Key = tuple[date, Dims, str]  # (business day, dimensions, metric)


@dataclass(frozen=True)
class OrderFacts:
    """An order as the completion-rate and first-time-fix formulas see it.

    ``outcome``: ``completed``; ``excluded`` (cancelled by the customer, or returned for a customer-caused
    reason: out of the denominator); else ``open`` (still in the denominator, including orders the provider
    cancelled). The order counts in the day it was received, under its current assignment; a repair's
    first-time fix counts in the day it was completed.
    """

    dims: Dims
    received_day: date
    outcome: str = "open"
    on_time: bool = False
    completed_day: date | None = None
    single_visit: bool = False
    repeated: bool = False

    def assigned(self, engineer_id: int, team_id: int) -> OrderFacts:
        return replace(self, dims=replace(self.dims, engineer_id=engineer_id, team_id=team_id))


def outcome_of(
    status: str,
    *,
    cancel_reason_code: str | None,
    return_reason: str | None,
    customer_cancel: frozenset[str],
    customer_return: frozenset[str],
) -> str:
    """``completed``, ``excluded`` or ``open`` for an order in ``status`` (see :class:`OrderFacts`)."""
    if status == "completed":
        return "completed"
    if status == "cancelled" and cancel_reason_code in customer_cancel:
        return "excluded"
    if status == "returned" and return_reason in customer_return:
        return "excluded"
    return "open"


def order_contributions(facts: OrderFacts | None) -> Counter[Key]:
    """The counters one order adds to the rollup (none for ``None``)."""
    out: Counter[Key] = Counter()
    if facts is None:
        return out
    day, dims = facts.received_day, facts.dims
    out[(day, dims, RECEIVED)] += 1
    if facts.outcome == "excluded":
        out[(day, dims, EXCLUDED)] += 1
    if facts.outcome == "completed":
        out[(day, dims, COMPLETED)] += 1
        if facts.on_time:
            out[(day, dims, ON_TIME)] += 1
        if dims.order_type == "repair" and facts.completed_day is not None:
            out[(facts.completed_day, dims, REPAIRS)] += 1
            if facts.single_visit:
                out[(facts.completed_day, dims, SINGLE_VISIT)] += 1
                if facts.repeated:  # a single visit that did not hold: no first-time fix after all
                    out[(facts.completed_day, dims, REPEATED)] += 1
    return out


def change(before: OrderFacts | None, after: OrderFacts | None) -> Counter[Key]:
    """What to add to the rollup when an order's facts go from ``before`` to ``after`` (zeros dropped)."""
    delta = order_contributions(after)
    delta.subtract(order_contributions(before))
    return Counter({key: value for key, value in delta.items() if value})


def clock_contributions(
    clock: str, status: str, *, outcome_day: date, due_day: date, dims: Dims
) -> Counter[Key]:
    """A clock that was met or breached: SLA compliance on the day of the outcome; an arrival clock is also
    an appointment kept or missed, on the day it was due."""
    out: Counter[Key] = Counter({(outcome_day, dims, sla_metric(clock, status)): 1})
    if clock == "arrival":
        out[(due_day, dims, KEPT if status == "met" else MISSED)] += 1
    return out


def complaint_contributions(category: str, cause: str, *, day: date, dims: Dims) -> Counter[Key]:
    return Counter({(day, dims, complaint_metric(category, cause)): 1})


def satisfaction_contributions(score: int, *, day: date, dims: Dims) -> Counter[Key]:
    out: Counter[Key] = Counter({(day, dims, ANSWERS): 1})
    if score >= SATISFIED_MIN_SCORE:
        out[(day, dims, SATISFIED)] += 1
    return out


# --- figures ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    completion: Mapping[str, float]
    complaints_per_day: Mapping[str, float]
    escalated: int = ESCALATED_TARGET

    @classmethod
    def parse(cls, completion: str | None, complaints: str | None) -> Targets:
        """From ``KPI_COMPLETION_TARGETS`` (``broadband_install=0.98,...``) and ``KPI_COMPLAINT_TARGETS``
        (``backend_first_contact=60,appointment=8,escalated=0``); empty keeps the deck's."""
        completion_targets = dict(COMPLETION_TARGETS)
        completion_targets.update(_pairs(completion, ORDER_TYPES))
        complaint_targets = dict(COMPLAINT_TARGETS_PER_DAY)
        escalated = ESCALATED_TARGET
        for name, value in _pairs(complaints, COMPLAINT_CATEGORIES).items():
            if name == "escalated":
                escalated = int(value)
            else:
                complaint_targets[name] = value
        return cls(completion_targets, complaint_targets, escalated)


def _pairs(text: str | None, allowed: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, raw in parse_pairs(text, allowed).items():
        try:
            out[name] = float(raw)
        except ValueError:
            raise ValueError(f"{name}: not a number: {raw!r}") from None
    return out


def ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator <= 0 else numerator / denominator


def _figure(
    numerator: int, denominator: int, target: float | None = None, *, at_most: bool = False
) -> dict[str, Any]:
    value = ratio(numerator, denominator)
    met = None
    if target is not None and value is not None:
        met = value <= target if at_most else value >= target
    return {"numerator": numerator, "denominator": denominator, "value": value, "target": target, "met": met}


def figures(totals: Mapping[tuple[str, str], int], *, days: int, targets: Targets) -> dict[str, Any]:
    """Every KPI of one group from its counters summed over the period: ``totals[(order_type, metric)]``."""

    # Summed once per metric (a report by engineer asks this of thousands of groups).
    by_metric: Counter[str] = Counter()
    for (_, metric), value in totals.items():
        by_metric[metric] += value

    def total(metric: str, order_type: str | None = None) -> int:
        return by_metric[metric] if order_type is None else totals.get((order_type, metric), 0)

    completion = []
    for order_type in ORDER_TYPES:
        received = total(RECEIVED, order_type)
        eligible = received - total(EXCLUDED, order_type)
        completed = total(COMPLETED, order_type)
        if not received:
            continue
        target = targets.completion.get(order_type)
        completion.append(
            {
                "order_type": order_type,
                "received": received,
                "excluded": received - eligible,
                "completed": completed,
                "completed_on_time": total(ON_TIME, order_type),
                "rate": _figure(completed, eligible, target),
                "on_time_rate": _figure(total(ON_TIME, order_type), eligible, target),
            }
        )
    complaints = []
    for category in COMPLAINT_CATEGORIES:
        count = sum(total(complaint_metric(category, cause)) for cause in COMPLAINT_CAUSES)
        per_day = _figure(count, days, targets.complaints_per_day.get(category), at_most=True)
        entry: dict[str, Any] = {"category": category, "count": count, "per_day": per_day}
        if category == "escalated":
            by_cause = {cause: total(complaint_metric(category, cause)) for cause in COMPLAINT_CAUSES}
            targeted = sum(by_cause[c] for c in ESCALATED_TARGET_CAUSES)
            entry["by_cause"] = by_cause
            entry["installation_or_network"] = {
                "count": targeted,
                "target": targets.escalated,
                "met": targeted <= targets.escalated,
            }
        complaints.append(entry)
    sla = []
    for clock in SLA_CLOCKS:
        met, breached = total(sla_metric(clock, "met")), total(sla_metric(clock, "breached"))
        if met or breached:
            sla.append(
                {"clock": clock, "met": met, "breached": breached, "compliance": _figure(met, met + breached)}
            )
    kept, missed = total(KEPT), total(MISSED)
    repairs = total(REPAIRS)
    fixed = total(SINGLE_VISIT) - total(REPEATED)
    return {
        "completion": completion,
        "complaints": complaints,
        "sla": sla,
        "appointment_kept": _figure(kept, kept + missed),
        "first_time_fix": _figure(fixed, repairs),
        "satisfaction": _figure(total(SATISFIED), total(ANSWERS)),
    }


def add(into: Counter[Key], items: Iterable[tuple[Key, int]]) -> Counter[Key]:
    for key, value in items:
        into[key] += value
    return into


def flat(group: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """A group's figures as ``(kpi, item, figure)`` rows: for exports and the ``kpi.daily`` events."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for entry in group["completion"]:
        out.append(("completion_rate", entry["order_type"], entry["rate"]))
        out.append(("completion_on_time_rate", entry["order_type"], entry["on_time_rate"]))
    for entry in group["complaints"]:
        out.append(("complaints_per_day", entry["category"], entry["per_day"]))
        if entry["category"] == "escalated":
            targeted = entry["installation_or_network"]
            count = targeted["count"]
            figure = {"numerator": count, "denominator": None, "value": count}
            out.append(("escalated_installation_or_network", "", {**figure, **targeted}))
    for entry in group["sla"]:
        out.append(("sla_compliance", entry["clock"], entry["compliance"]))
    for name in ("appointment_kept", "first_time_fix", "satisfaction"):
        out.append((name, "", group[name]))
    return out
