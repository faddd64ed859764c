"""THE order lifecycle: one transition table, its guards, and the only code that changes an order's status.

Each entry says from which statuses an action is legal, where it leads, who may take it and what must be
true first. :func:`apply` checks, in this order: visibility (an engineer acting on someone else's order
gets 404), the actor's role (403), the current status (409 with the status), the guard (409 naming what is
missing, or 422 for bad parameters); then it changes the order and appends exactly one event in the same
session, so the change and its audit row commit or roll back together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dispatch.actors import Actor
from dispatch.billing import events as billing_events
from dispatch.errors import InvalidTransition, NotFound, PermissionDenied, PreconditionFailed, ValidationError
from dispatch.extensions import db
from dispatch.messaging import triggers
from dispatch.models import AssignmentExclusion, Order, OrderEvent
from dispatch.reporting import rollup
from dispatch.sla import clocks
from dispatch.vocabulary import (
    CANCEL_REASONS,
    CLOSED_STATUSES,
    RESCHEDULE_REASONS,
    RETURN_REASONS,
    STATUSES,
    SUSPEND_REASONS,
)


@dataclass(frozen=True)
class Rules:
    """Configurable numbers the guards use."""

    optical_power_min_dbm: float = -27.0
    optical_power_max_dbm: float = -8.0


@dataclass(frozen=True)
class Step:
    """Everything a guard and an effect may look at."""

    order: Order
    actor: Actor
    now: datetime
    params: Mapping[str, Any]
    rules: Rules
    attachment_kinds: frozenset[str] = frozenset()


Guard = Callable[[Step], None]
Effect = Callable[[Step], None]


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[str]
    target: str | None  # None: the effect decides (resume returns to the status before the suspension)
    allowed: frozenset[str]  # roles, API-key scopes or "system"
    guards: tuple[Guard, ...] = ()
    effect: Effect | None = None
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --- guards -------------------------------------------------------------------------------------------


def _window(step: Step) -> tuple[datetime, datetime]:
    window = step.params.get("appointment")
    if not window or not window.get("start") or not window.get("end"):
        raise ValidationError(errors={"appointment": ["An appointment window is required."]})
    start, end = window["start"], window["end"]
    if end <= start:
        raise ValidationError(errors={"appointment": ["The window must end after it starts."]})
    return start, end


def _needs_window(step: Step) -> None:
    _window(step)


def _needs_reschedule_reason(step: Step) -> None:
    if step.params.get("reason") not in RESCHEDULE_REASONS:
        raise ValidationError(errors={"reason": [f"Must be one of: {', '.join(RESCHEDULE_REASONS)}."]})


def _needs_engineer(step: Step) -> None:
    if not step.params.get("engineer_id"):
        raise ValidationError(errors={"engineer_id": ["An engineer is required."]})


def _reason_in(allowed: tuple[str, ...]) -> Guard:
    def guard(step: Step) -> None:
        if step.params.get("reason_code") not in allowed:
            raise ValidationError(errors={"reason_code": [f"Must be one of: {', '.join(allowed)}."]})

    return guard


def _optional_reason_in(allowed: tuple[str, ...]) -> Guard:
    def guard(step: Step) -> None:
        if step.params.get("reason_code") is not None:
            _reason_in(allowed)(step)

    return guard


def _until_in_future(step: Step) -> None:
    until = step.params.get("until")
    if until is not None and until <= step.now:
        raise ValidationError(errors={"until": ["Must be in the future."]})


def _install_then_pay_only(step: Step) -> None:
    if step.order.pay_mode != "install_then_pay":
        raise InvalidTransition(
            "submit",
            step.order.status,
            "Only install-then-pay orders go to the acceptance desk",
        )


def _not_install_then_pay(step: Step) -> None:
    if step.order.pay_mode == "install_then_pay":
        raise InvalidTransition(
            "start_work",
            step.order.status,
            "Install-then-pay orders start work when the acceptance desk approves them",
        )


def _submission_complete(step: Step) -> None:
    missing = []
    if "id_card" not in step.attachment_kinds:
        missing.append("id_card_photo")
    if not (step.order.box_id and step.order.port):
        missing.append("resources")
    if missing:
        raise PreconditionFailed("Submission needs the ID photo and the terminal resources", missing=missing)


def _accepted_before_completion(step: Step) -> None:
    if step.order.pay_mode == "install_then_pay" and step.order.status != "in_progress":
        raise InvalidTransition(
            "complete",
            step.order.status,
            "An install-then-pay order is completed only after the acceptance desk approves it",
        )


_INSTALL_CHECKLIST = ("resources", "ont_sn", "optical_power", "after_photo", "signature")
CHECKLISTS: dict[str, tuple[str, ...]] = {
    "broadband_install": _INSTALL_CHECKLIST,
    "iptv_install": _INSTALL_CHECKLIST,
    "move": _INSTALL_CHECKLIST,
    "opportunity": ("after_photo",),
    "repair": ("repair_cause", "after_photo"),
}


def missing_for_completion(step: Step) -> list[str]:
    """The checklist items of DOMAIN.md ("Field data") that this order still lacks."""
    order, kinds, rules = step.order, step.attachment_kinds, step.rules
    present = {
        "resources": bool(order.box_id and order.port),
        "ont_sn": bool(order.ont_sn),
        "optical_power": order.optical_power_dbm is not None
        and rules.optical_power_min_dbm <= order.optical_power_dbm <= rules.optical_power_max_dbm,
        "after_photo": "after" in kinds,
        "signature": "signature" in kinds,
        "repair_cause": bool(step.params.get("cause_code") or order.repair_cause),
    }
    return [item for item in CHECKLISTS[order.order_type] if not present[item]]


def _checklist_passes(step: Step) -> None:
    missing = missing_for_completion(step)
    if missing:
        raise PreconditionFailed("The completion checklist is not complete", missing=missing)


# --- effects ------------------------------------------------------------------------------------------


def _set_engineer(step: Step) -> None:
    step.order.engineer_id = int(step.params["engineer_id"])


def _set_appointment(step: Step) -> None:
    step.order.appointment_start, step.order.appointment_end = _window(step)


def _suspend(step: Step) -> None:
    order = step.order
    order.status_before_suspend = order.status
    order.suspend_reason = step.params["reason_code"]
    order.suspended_until = step.params.get("until")


def _resume(step: Step) -> None:
    order = step.order
    order.status = order.status_before_suspend or "new"
    order.status_before_suspend = None
    order.suspend_reason = None
    order.suspended_until = None


def _return(step: Step) -> None:
    order = step.order
    engineer_id = order.engineer_id
    # Auto-dispatch must not hand the order straight back to the engineer who returned it. (The exclusions
    # are loaded before anything on the order changes: a load flushes, and each flush bumps its version.)
    if engineer_id is not None and not any(e.engineer_id == engineer_id for e in order.exclusions):
        order.exclusions.append(
            AssignmentExclusion(engineer_id=engineer_id, reason="returned", created_at=step.now)
        )
    order.return_reason = step.params["reason_code"]
    order.engineer_id = None


def _cancel(step: Step) -> None:
    order = step.order
    order.cancel_reason = step.params.get("reason")
    # The hotline cancels on the customer's word (a withdrawal: out of the completion-rate denominator).
    default = "customer_withdrew" if step.actor.kind == "api_key" else "other"
    order.cancel_reason_code = step.params.get("reason_code") or default
    order.status_before_suspend = order.suspend_reason = order.suspended_until = None


def _complete(step: Step) -> None:
    if step.params.get("cause_code"):
        step.order.repair_cause = step.params["cause_code"]
    step.order.completed_at = step.now


# --- the table ----------------------------------------------------------------------------------------

_ENGINEER = frozenset({"engineer"})
_DESK = frozenset({"dispatcher", "admin"})
_ASSIGNED = frozenset({"dispatched", "taken", "appointed", "on_site", "pending_acceptance", "in_progress"})
_OPEN = frozenset(STATUSES) - CLOSED_STATUSES
# An accepted day plan's ETA stops holding when the order goes to someone else, back, or away.
_CLEARS_PLANNED_ETA = frozenset({"assign", "reassign", "return", "cancel"})


def _t(
    action: str, sources: frozenset[str] | set[str], target: str | None, allowed: frozenset[str], **kw: Any
) -> Transition:
    return Transition(action=action, sources=frozenset(sources), target=target, allowed=allowed, **kw)


TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in (
        _t(
            "assign",
            {"new", "returned"},
            "dispatched",
            _DESK | {"system"},
            guards=(_needs_engineer,),
            effect=_set_engineer,
            label="派单",
        ),
        _t(
            "reassign",
            {"dispatched", "taken", "appointed"},
            "dispatched",
            _DESK | {"system"},  # the system: re-dispatch after a take breach (AUTO_REDISPATCH)
            guards=(_needs_engineer,),
            effect=_set_engineer,
            label="改派",
        ),
        _t("take", {"dispatched"}, "taken", _ENGINEER, label="接单"),
        _t("contact_attempt", {"taken"}, "taken", _ENGINEER, label="联系未果"),
        _t(
            "appoint",
            {"taken"},
            "appointed",
            _ENGINEER,
            guards=(_needs_window,),
            effect=_set_appointment,
            label="预约",
        ),
        _t(
            "reschedule",
            {"appointed"},
            "appointed",
            _ENGINEER,
            guards=(_needs_window, _needs_reschedule_reason),
            effect=_set_appointment,
            label="改约",
        ),
        _t("check_in", {"appointed"}, "on_site", _ENGINEER, label="上门签到"),
        _t(
            "submit",
            {"on_site"},
            "pending_acceptance",
            _ENGINEER,
            guards=(_install_then_pay_only, _submission_complete),
            label="提交受理",
        ),
        _t(
            "approve",
            {"pending_acceptance"},
            "in_progress",
            frozenset({"acceptance", "dispatcher"}),
            label="受理通过",
        ),
        _t(
            "reject",
            {"pending_acceptance"},
            "on_site",
            frozenset({"acceptance", "dispatcher"}),
            label="受理驳回",
        ),
        _t(
            "start_work",
            {"on_site"},
            "in_progress",
            _ENGINEER,
            guards=(_not_install_then_pay,),
            label="开始施工",
        ),
        _t(
            "complete",
            {"on_site", "in_progress"},
            "completed",
            _ENGINEER,
            guards=(_accepted_before_completion, _checklist_passes),
            effect=_complete,
            label="竣工",
        ),
        _t(
            "return",
            _ASSIGNED,
            "returned",
            _ENGINEER,
            guards=(_reason_in(RETURN_REASONS),),
            effect=_return,
            label="退单",
        ),
        _t(
            "suspend",
            _OPEN - {"suspended"},
            "suspended",
            _ENGINEER | _DESK,
            guards=(_reason_in(SUSPEND_REASONS), _until_in_future),
            effect=_suspend,
            label="挂起",
        ),
        _t("resume", {"suspended"}, None, _DESK | {"system"}, effect=_resume, label="解挂"),
        _t(
            "cancel",
            _OPEN,
            "cancelled",
            _DESK | {"intake"},
            guards=(_optional_reason_in(CANCEL_REASONS),),
            effect=_cancel,
            label="撤单",
        ),
    )
}


def allowed_actions(order: Order, actor: Actor) -> list[str]:
    """Actions whose status and role conditions hold now (guards not evaluated): for UIs."""
    if actor.is_engineer and (actor.engineer_id is None or order.engineer_id != actor.engineer_id):
        return []
    return [
        t.action for t in TRANSITIONS.values() if order.status in t.sources and actor.principals & t.allowed
    ]


def ensure_visible(order: Order, actor: Actor) -> None:
    """Engineers see only the orders assigned to them; anything else does not exist for them (404)."""
    # An engineer login not linked to an engineer sees nothing (not every unassigned order).
    if actor.is_engineer and (actor.engineer_id is None or order.engineer_id != actor.engineer_id):
        raise NotFound("Order not found")


def check(order: Order, action: str, actor: Actor) -> Transition:
    """Visibility (404), role (403) and status (409) for ``action``; guards come later, in :func:`apply`."""
    transition = TRANSITIONS.get(action)
    if transition is None:
        raise ValueError(f"unknown action {action!r}")
    ensure_visible(order, actor)
    if not actor.principals & transition.allowed:
        raise PermissionDenied(f"{actor.role or actor.kind} may not {action} orders")
    if order.status not in transition.sources:
        raise InvalidTransition(action, order.status)
    return transition


def apply(
    order: Order,
    action: str,
    actor: Actor,
    *,
    now: datetime,
    params: Mapping[str, Any] | None = None,
    device_time: datetime | None = None,
    attachment_kinds: frozenset[str] = frozenset(),
    rules: Rules | None = None,
    event_payload: Mapping[str, Any] | None = None,
    clock_now: datetime | None = None,
) -> OrderEvent:
    """Perform ``action`` on ``order`` for ``actor`` and return the event appended to its log.

    The caller owns the session and commits; nothing here commits, so the status change and its event
    always land together. ``clock_now`` (default ``now``) is when the SLA clocks start or stop: a PDA's
    trusted device time, while the event and the order keep the server's ``now``.
    """
    transition = check(order, action, actor)
    step = Step(order, actor, now, params or {}, rules or Rules(), attachment_kinds)
    for guard in transition.guards:
        guard(step)

    from_status = order.status
    before = None
    if action in rollup.FACT_ACTIONS:
        with db.session.no_autoflush:  # read before anything changes; no flush (each bumps the version)
            before = rollup.current_facts(order)
    if action in _CLEARS_PLANNED_ETA:  # the plan's ETA was for the engineer it planned, while it stands
        order.planned_eta = None
    if transition.effect is not None:  # effects see the status before the transition (suspend records it)
        transition.effect(step)
    if transition.target is not None:
        order.status = transition.target
    order.updated_at = now
    outcomes = clocks.on_transition(order, action, now=clock_now or now, params=step.params)
    payload = dict(event_payload if event_payload is not None else (params or {}))
    facts = rollup.on_order_change(order, before, outcomes) if before is not None else None
    if outcomes:
        rollup.on_clock_outcomes(order, outcomes, (facts or rollup.current_facts(order)).dims)
    # What the KPIs counted, in the event, so a day recomputed from the events counts the same
    # (dispatch/reporting/recompute.py): the team an assignment counts for, the cause of a cancellation.
    if facts is not None and action in ("assign", "reassign"):
        payload["team_id"] = facts.dims.team_id
    if action == "cancel":
        payload["reason_code"] = order.cancel_reason_code
    if action == "complete":
        billing_events.order_completed(order, team_id=facts.dims.team_id if facts else 0, now=now)
    elif action == "cancel":
        billing_events.order_cancelled(order, now=now)
    event = record_event(
        order,
        action,
        actor,
        now=now,
        from_status=from_status,
        to_status=order.status,
        device_time=device_time,
        payload=payload,
    )
    triggers.on_transition(order, action, event, now=now)
    return event


def record_intake(order: Order, actor: Actor, *, now: datetime, payload: Mapping[str, Any]) -> OrderEvent:
    """The first status of an order and its ``intake`` event."""
    order.status = "new"
    order.created_at = order.updated_at = now
    clocks.on_transition(order, "intake", now=now, params=payload)
    rollup.on_intake(
        order.order_type,
        order.address.district_name,
        order_id=order.id,
        customer_id=order.customer_id or order.customer.id,
        now=now,
    )
    return record_event(
        order, "intake", actor, now=now, from_status=None, to_status="new", payload=dict(payload)
    )


def record_event(
    order: Order,
    action: str,
    actor: Actor,
    *,
    now: datetime,
    from_status: str | None,
    to_status: str | None,
    payload: dict[str, Any],
    device_time: datetime | None = None,
) -> OrderEvent:
    """Append one event to the order's log (also for facts that change no status, e.g. a resource report)."""
    event = OrderEvent(
        order=order,
        **event_values(
            action,
            actor,
            now=now,
            from_status=from_status,
            to_status=to_status,
            payload=payload,
            device_time=device_time,
        ),
    )
    db.session.add(event)
    return event


def event_values(
    action: str,
    actor: Actor,
    *,
    now: datetime,
    from_status: str | None,
    to_status: str | None,
    payload: Mapping[str, Any],
    device_time: datetime | None = None,
) -> dict[str, Any]:
    """The columns of the event :func:`record_event` appends, but ``order_id``: for writers that insert
    events in bulk with Core, in the same transaction (the SLA tick, dispatch/sla/tick.py)."""
    return {
        "action": action,
        "from_status": from_status,
        "to_status": to_status,
        "actor_type": actor.kind,
        "actor_id": actor.id,
        "actor_name": actor.name,
        "source": actor.source,
        "occurred_at": now,
        "device_time": device_time,
        "payload": _jsonable(payload),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value
