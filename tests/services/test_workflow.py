"""The order lifecycle table (dispatch/workflow.py), driven through ``workflow.apply`` on a real database.

Expectations are written out here from shared/DOMAIN.md ("Order lifecycle"), not derived from
``workflow.TRANSITIONS``, so a wrong row in the table fails a test instead of being copied into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch import workflow
from dispatch.actors import Actor
from dispatch.clock import FakeClock
from dispatch.errors import (
    DispatchError,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ValidationError,
)
from dispatch.extensions import db
from dispatch.models import Attachment, Engineer, Order, OrderEvent
from dispatch.vocabulary import PAY_MODES, RETURN_REASONS, STATUSES, SUSPEND_REASONS
from tests.conftest import INTAKE_ACTOR, SYSTEM

ITP, PREPAID = "install_then_pay", "prepaid"
WINDOW = {"start": datetime(2026, 11, 26, 1, 0, tzinfo=UTC), "end": datetime(2026, 11, 26, 4, 0, tzinfo=UTC)}
LATER_WINDOW = {
    "start": datetime(2026, 11, 27, 6, 0, tzinfo=UTC),
    "end": datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
}

DISPATCHER = Actor(kind="user", id=901, name="调度员", role="dispatcher")
ADMIN = Actor(kind="user", id=902, name="管理员", role="admin")
ACCEPTANCE = Actor(kind="user", id=903, name="受理员", role="acceptance")
MANAGER = Actor(kind="user", id=904, name="经理", role="manager")
BILLING = Actor(kind="api_key", id=905, name="billing", scopes=frozenset({"billing"}), source="api")

OPEN = [s for s in STATUSES if s not in ("completed", "cancelled")]
ASSIGNED = ["dispatched", "taken", "appointed", "on_site", "pending_acceptance", "in_progress"]
# The status the fixture's suspended orders were in before being suspended (see Flow.order_in).
BEFORE_SUSPEND = "taken"

# (from status, action) → to status, exactly the rows of DOMAIN.md's lifecycle (plus start_work, the
# on-site → in-progress step of orders that do not go through the acceptance desk). Pay-mode guards aside.
LEGAL: dict[tuple[str, str], str] = {
    ("new", "assign"): "dispatched",
    ("returned", "assign"): "dispatched",
    ("dispatched", "reassign"): "dispatched",
    ("taken", "reassign"): "dispatched",
    ("appointed", "reassign"): "dispatched",
    ("dispatched", "take"): "taken",
    ("taken", "contact_attempt"): "taken",
    ("taken", "appoint"): "appointed",
    ("appointed", "reschedule"): "appointed",
    ("appointed", "check_in"): "on_site",
    ("on_site", "submit"): "pending_acceptance",
    ("pending_acceptance", "approve"): "in_progress",
    ("pending_acceptance", "reject"): "on_site",
    ("on_site", "start_work"): "in_progress",
    ("on_site", "complete"): "completed",
    ("in_progress", "complete"): "completed",
    ("suspended", "resume"): BEFORE_SUSPEND,
    **{(s, "return"): "returned" for s in ASSIGNED},
    **{(s, "suspend"): "suspended" for s in OPEN if s != "suspended"},
    **{(s, "cancel"): "cancelled" for s in OPEN},
}

# Who may take each action (user roles, API-key scopes, "system").
ENGINEER_ONLY = frozenset({"engineer"})
ALLOWED: dict[str, frozenset[str]] = {
    "assign": frozenset({"dispatcher", "admin", "system"}),
    "reassign": frozenset({"dispatcher", "admin", "system"}),  # system: re-dispatch after a take breach
    "take": ENGINEER_ONLY,
    "contact_attempt": ENGINEER_ONLY,
    "appoint": ENGINEER_ONLY,
    "reschedule": ENGINEER_ONLY,
    "check_in": ENGINEER_ONLY,
    "submit": ENGINEER_ONLY,
    "approve": frozenset({"acceptance", "dispatcher"}),
    "reject": frozenset({"acceptance", "dispatcher"}),
    "start_work": ENGINEER_ONLY,
    "complete": ENGINEER_ONLY,
    "return": ENGINEER_ONLY,
    "suspend": frozenset({"engineer", "dispatcher", "admin"}),
    "resume": frozenset({"dispatcher", "admin", "system"}),
    "cancel": frozenset({"dispatcher", "admin", "intake"}),
}
ACTIONS = list(ALLOWED)


def engineer_actor(engineer: Engineer | int, user_id: int = 950) -> Actor:
    engineer_id = engineer if isinstance(engineer, int) else engineer.id
    return Actor(
        kind="user",
        id=user_id,
        name=f"engineer-{engineer_id}",
        role="engineer",
        engineer_id=engineer_id,
        source="mobile",
    )


def blocked_by_pay_mode(status: str, action: str, pay_mode: str) -> bool:
    """DOMAIN.md: only install-then-pay orders are submitted; they start work and complete via the desk."""
    if action == "submit":
        return pay_mode != ITP
    if action == "start_work":
        return pay_mode == ITP
    return action == "complete" and status == "on_site" and pay_mode == ITP


@dataclass
class Flow:
    """Drives orders through the real workflow: one ``apply`` and flush per step, the clock moving on."""

    clock: FakeClock
    make_order: Callable[..., Order]
    make_engineer: Callable[..., Engineer]

    def act(self, order: Order, action: str, actor: Actor, params: dict[str, Any] | None = None, **kw: Any):
        event = workflow.apply(
            order,
            action,
            actor,
            now=self.clock.advance(minutes=1),
            params=params,
            attachment_kinds=kinds(order),
            rules=workflow.Rules(),
            **kw,
        )
        db.session.flush()
        return event

    def actor_for(self, action: str, order: Order) -> Actor:
        """A principal allowed to take ``action`` (the assigned engineer for engineers' actions)."""
        if ALLOWED[action] == ENGINEER_ONLY:
            return engineer_actor(order.engineer_id or 0)
        if action in ("approve", "reject"):
            return ACCEPTANCE
        return DISPATCHER

    def order_in(
        self, status: str, *, pay_mode: str = PREPAID, order_type: str = "broadband_install"
    ) -> tuple[Order, Engineer]:
        """A fresh order brought to ``status`` by the legal path, and the engineer on it (or who was)."""
        engineer = self.make_engineer()
        order = self.make_order(pay_mode=pay_mode, order_type=order_type)
        eng = engineer_actor(engineer)
        path: list[tuple[str, Actor, dict[str, Any]]] = []
        assign = ("assign", DISPATCHER, {"engineer_id": engineer.id})
        to_site = [
            assign,
            ("take", eng, {}),
            ("appoint", eng, {"appointment": WINDOW}),
            ("check_in", eng, {}),
        ]
        to_work = (
            [*to_site, ("submit", eng, {}), ("approve", ACCEPTANCE, {})]
            if pay_mode == ITP
            else [*to_site, ("start_work", eng, {})]
        )
        paths: dict[str, list[tuple[str, Actor, dict[str, Any]]]] = {
            "new": [],
            "dispatched": [assign],
            "taken": to_site[:2],
            "appointed": to_site[:3],
            "on_site": to_site,
            "pending_acceptance": [*to_site, ("submit", eng, {})],
            "in_progress": to_work,
            "completed": [*to_work, ("complete", eng, {"cause_code": "fiber_cut"})],
            "suspended": [*to_site[:2], ("suspend", DISPATCHER, {"reason_code": "customer_postponed"})],
            "returned": [assign, ("return", eng, {"reason_code": "wrong_address"})],
            "cancelled": [assign, ("cancel", DISPATCHER, {"reason": "客户撤单"})],
        }
        if status == "pending_acceptance" and pay_mode != ITP:
            raise AssertionError("only install-then-pay orders reach the acceptance desk")
        path = paths[status]
        if any(action in ("submit", "complete") for action, _, _ in path):
            satisfy_checklist(order)
        for action, actor, params in path:
            self.act(order, action, actor, params)
        assert order.status == status
        return order, engineer


@pytest.fixture
def flow(clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]) -> Flow:
    return Flow(clock, make_order, make_engineer)


def kinds(order: Order) -> frozenset[str]:
    return frozenset(db.session.scalars(sa.select(Attachment.kind).where(Attachment.order_id == order.id)))


def attach(order: Order, *attachment_kinds: str) -> None:
    for kind in attachment_kinds:
        db.session.add(
            Attachment(
                order_id=order.id,
                kind=kind,
                sha256=f"{kind:0<64}"[:64],
                content_type="image/jpeg",
                size_bytes=1024,
                storage_path=f"ab/{kind}.jpg",
                created_at=datetime(2026, 11, 25, 1, 0, tzinfo=UTC),
            )
        )
    db.session.flush()


def set_resources(order: Order, *, optical_power_dbm: float | None = -19.5) -> None:
    order.box_id, order.port, order.ont_sn, order.loid = "GJ-0101-A", "7", "ZTEG12345678", "LOID0001"
    order.optical_power_dbm = optical_power_dbm
    db.session.flush()


def satisfy_checklist(order: Order) -> None:
    """Everything submission and every order type's completion checklist ask for."""
    set_resources(order)
    present = kinds(order)
    attach(order, *(k for k in ("id_card", "after", "signature") if k not in present))


def events_of(order: Order) -> list[OrderEvent]:
    return list(
        db.session.scalars(
            sa.select(OrderEvent).where(OrderEvent.order_id == order.id).order_by(OrderEvent.id)
        )
    )


def snapshot(order: Order) -> tuple[Any, ...]:
    db.session.flush()
    return (
        order.status,
        order.engineer_id,
        order.version,
        order.updated_at,
        order.appointment_start,
        order.suspend_reason,
        len(events_of(order)),
    )


def params_for(action: str, flow: Flow) -> dict[str, Any]:
    if action in ("assign", "reassign"):
        return {"engineer_id": flow.make_engineer().id}
    if action == "appoint":
        return {"appointment": WINDOW}
    if action == "reschedule":
        return {"appointment": LATER_WINDOW, "reason": "customer"}
    if action == "return":
        return {"reason_code": "no_resource"}
    if action == "suspend":
        return {"reason_code": "third_party"}
    if action == "cancel":
        return {"reason": "重复工单"}
    if action == "complete":
        return {"cause_code": "fiber_cut"}
    return {"note": "ok"}


def raises(error: type[DispatchError], call: Callable[[], Any]) -> DispatchError:
    with pytest.raises(error) as info:
        call()
    return info.value


# --- the table ------------------------------------------------------------------------------------------


def test_the_transition_table_holds_exactly_the_documented_transitions() -> None:
    table = {(s, t.action) for t in workflow.TRANSITIONS.values() for s in t.sources}
    assert table == set(LEGAL)
    assert {a: t.allowed for a, t in workflow.TRANSITIONS.items()} == ALLOWED
    for (status, action), target in LEGAL.items():
        declared = workflow.TRANSITIONS[action].target
        assert declared == (None if action == "resume" else target), (status, action)


CASES = [
    pytest.param(status, action, pay_mode, id=f"{status}-{action}-{pay_mode}")
    for status, action, pay_mode in product(STATUSES, ACTIONS, PAY_MODES)
    if not (status == "pending_acceptance" and pay_mode == PREPAID)  # unreachable: prepaid skips the desk
]


@pytest.mark.parametrize(("status", "action", "pay_mode"), CASES)
def test_every_status_and_action_pair_moves_or_is_refused_as_documented(
    flow: Flow, status: str, action: str, pay_mode: str
) -> None:
    order, _ = flow.order_in(status, pay_mode=pay_mode)
    satisfy_checklist(order)  # so that only status, pay mode and role decide
    actor = flow.actor_for(action, order)
    params = params_for(action, flow)
    before = snapshot(order)
    events_before = len(events_of(order))

    if ALLOWED[action] == ENGINEER_ONLY and order.engineer_id is None:
        # Visibility comes first: an order nobody is assigned to does not exist for an engineer.
        raises(NotFound, lambda: flow.act(order, action, actor, params))
        assert snapshot(order) == before
        return

    legal = (status, action) in LEGAL and not blocked_by_pay_mode(status, action, pay_mode)
    if not legal:
        error = raises(InvalidTransition, lambda: flow.act(order, action, actor, params))
        assert error.http_status == 409
        body = error.to_dict()
        assert body["status"] == status
        assert body["code"] == 409
        assert snapshot(order) == before
        return

    now_expected = flow.clock.now() + timedelta(minutes=1)
    event = flow.act(order, action, actor, params, device_time=datetime(2026, 11, 25, 0, 59, tzinfo=UTC))
    assert order.status == LEGAL[(status, action)]
    new_events = events_of(order)[events_before:]
    assert new_events == [event]
    assert (event.action, event.from_status, event.to_status) == (action, status, order.status)
    assert (event.actor_type, event.actor_id, event.actor_name, event.source) == (
        actor.kind,
        actor.id,
        actor.name,
        actor.source,
    )
    assert event.occurred_at == now_expected
    assert event.device_time == datetime(2026, 11, 25, 0, 59, tzinfo=UTC)
    assert order.updated_at == now_expected
    assert order.version == before[2] + 1


# --- roles and visibility -------------------------------------------------------------------------------

# A status from which each action is legal (with the pay mode that allows it).
SOURCE_FOR: dict[str, tuple[str, str]] = {
    "assign": ("new", PREPAID),
    "reassign": ("taken", PREPAID),
    "take": ("dispatched", PREPAID),
    "contact_attempt": ("taken", PREPAID),
    "appoint": ("taken", PREPAID),
    "reschedule": ("appointed", PREPAID),
    "check_in": ("appointed", PREPAID),
    "submit": ("on_site", ITP),
    "approve": ("pending_acceptance", ITP),
    "reject": ("pending_acceptance", ITP),
    "start_work": ("on_site", PREPAID),
    "complete": ("in_progress", ITP),
    "return": ("appointed", PREPAID),
    "suspend": ("taken", PREPAID),
    "resume": ("suspended", PREPAID),
    "cancel": ("taken", PREPAID),
}
ACTOR_KINDS = ["dispatcher", "admin", "acceptance", "manager", "engineer", "intake", "billing", "system"]


def actor_of_kind(kind: str, order: Order) -> Actor:
    fixed = {
        "dispatcher": DISPATCHER,
        "admin": ADMIN,
        "acceptance": ACCEPTANCE,
        "manager": MANAGER,
        "intake": INTAKE_ACTOR,
        "billing": BILLING,
        "system": SYSTEM,
    }
    return fixed[kind] if kind in fixed else engineer_actor(order.engineer_id or 0)


@pytest.mark.parametrize(("action", "kind"), list(product(ACTIONS, ACTOR_KINDS)))
def test_only_the_roles_allowed_for_an_action_may_take_it(flow: Flow, action: str, kind: str) -> None:
    status, pay_mode = SOURCE_FOR[action]
    order, _ = flow.order_in(status, pay_mode=pay_mode)
    satisfy_checklist(order)
    actor = actor_of_kind(kind, order)
    params = params_for(action, flow)
    before = snapshot(order)

    if kind in ALLOWED[action]:
        flow.act(order, action, actor, params)
        assert order.status == LEGAL[(status, action)]
    elif kind == "engineer" and order.engineer_id is None:
        raises(NotFound, lambda: flow.act(order, action, actor, params))
        assert snapshot(order) == before
    else:
        error = raises(PermissionDenied, lambda: flow.act(order, action, actor, params))
        assert error.http_status == 403
        assert snapshot(order) == before


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("status", ["taken", "completed"])
def test_an_engineer_acting_on_a_colleagues_order_gets_not_found_before_any_other_check(
    flow: Flow, status: str, action: str
) -> None:
    order, _ = flow.order_in(status)
    colleague = flow.make_engineer()
    before = snapshot(order)
    # Wrong role for most actions, wrong status for many, and no parameters at all: still 404.
    error = raises(NotFound, lambda: flow.act(order, action, engineer_actor(colleague, user_id=951)))
    assert error.http_status == 404
    assert snapshot(order) == before


UNLINKED_ENGINEER = Actor(
    kind="user", id=952, name="unlinked", role="engineer", engineer_id=None, source="mobile"
)


@pytest.mark.parametrize("status", ["new", "returned"])
def test_an_engineer_login_without_an_engineer_sees_no_unassigned_order(flow: Flow, status: str) -> None:
    order, _ = flow.order_in(status)
    assert order.engineer_id is None
    before = snapshot(order)
    params = {"reason_code": "third_party"}
    raises(NotFound, lambda: flow.act(order, "suspend", UNLINKED_ENGINEER, params))
    assert workflow.allowed_actions(order, UNLINKED_ENGINEER) == []
    assert snapshot(order) == before


def test_allowed_actions_lists_what_the_actor_may_do_now(flow: Flow) -> None:
    order, engineer = flow.order_in("taken")
    colleague = flow.make_engineer()
    assert workflow.allowed_actions(order, engineer_actor(engineer)) == [
        "contact_attempt",
        "appoint",
        "return",
        "suspend",
    ]
    assert workflow.allowed_actions(order, DISPATCHER) == ["reassign", "suspend", "cancel"]
    assert workflow.allowed_actions(order, engineer_actor(colleague, user_id=951)) == []
    assert workflow.allowed_actions(order, MANAGER) == []


def test_unknown_action_is_a_programming_error(flow: Flow) -> None:
    order, _ = flow.order_in("new")
    with pytest.raises(ValueError, match="unknown action"):
        flow.act(order, "teleport", DISPATCHER)


# --- intake ---------------------------------------------------------------------------------------------


def test_intake_records_the_first_event_from_nothing_to_new(flow: Flow) -> None:
    order = flow.make_order()
    [event] = events_of(order)
    assert order.status == "new"
    assert (event.action, event.from_status, event.to_status) == ("intake", None, "new")
    assert (event.actor_type, event.actor_name, event.source) == ("api_key", "hotline", "intake")
    assert event.payload["external_id"] == order.external_id


# --- guards: pay mode -----------------------------------------------------------------------------------


def test_a_prepaid_order_cannot_be_submitted_to_the_acceptance_desk(flow: Flow) -> None:
    order, engineer = flow.order_in("on_site", pay_mode=PREPAID)
    satisfy_checklist(order)
    before = snapshot(order)
    error = raises(InvalidTransition, lambda: flow.act(order, "submit", engineer_actor(engineer)))
    assert error.to_dict()["status"] == "on_site"
    assert error.http_status == 409
    assert snapshot(order) == before


def test_an_install_then_pay_order_cannot_be_completed_from_on_site(flow: Flow) -> None:
    order, engineer = flow.order_in("on_site", pay_mode=ITP)
    satisfy_checklist(order)
    before = snapshot(order)
    error = raises(InvalidTransition, lambda: flow.act(order, "complete", engineer_actor(engineer)))
    assert error.to_dict()["status"] == "on_site"
    assert snapshot(order) == before


def test_an_install_then_pay_order_does_not_start_work_without_the_desk(flow: Flow) -> None:
    order, engineer = flow.order_in("on_site", pay_mode=ITP)
    error = raises(InvalidTransition, lambda: flow.act(order, "start_work", engineer_actor(engineer)))
    assert error.to_dict()["status"] == "on_site"
    assert order.status == "on_site"


def test_install_then_pay_goes_submit_reject_resubmit_approve_complete(flow: Flow) -> None:
    order, engineer = flow.order_in("on_site", pay_mode=ITP)
    eng = engineer_actor(engineer)
    satisfy_checklist(order)
    flow.act(order, "submit", eng)
    flow.act(order, "reject", ACCEPTANCE, {"note": "身份证照片不清晰"})
    assert order.status == "on_site"
    flow.act(order, "submit", eng)
    flow.act(order, "approve", DISPATCHER)
    flow.act(order, "complete", eng)
    assert order.status == "completed"
    assert order.completed_at == flow.clock.now()
    trail = [(e.action, e.from_status, e.to_status) for e in events_of(order)][-5:]
    assert trail == [
        ("submit", "on_site", "pending_acceptance"),
        ("reject", "pending_acceptance", "on_site"),
        ("submit", "on_site", "pending_acceptance"),
        ("approve", "pending_acceptance", "in_progress"),
        ("complete", "in_progress", "completed"),
    ]


# --- guards: submission ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("id_photo", "resources", "missing"),
    [
        (False, False, ["id_card_photo", "resources"]),
        (False, True, ["id_card_photo"]),
        (True, False, ["resources"]),
    ],
)
def test_submission_without_id_photo_or_resources_names_what_is_missing(
    flow: Flow, id_photo: bool, resources: bool, missing: list[str]
) -> None:
    order, engineer = flow.order_in("on_site", pay_mode=ITP)
    attach(order, "before", "after", "signature")  # other photos do not count as the ID photo
    if id_photo:
        attach(order, "id_card")
    if resources:
        set_resources(order)
    before = snapshot(order)
    error = raises(PreconditionFailed, lambda: flow.act(order, "submit", engineer_actor(engineer)))
    assert error.http_status == 409
    assert error.to_dict()["missing"] == missing
    assert snapshot(order) == before


def test_submission_needs_both_box_and_port_as_resources(flow: Flow) -> None:
    order, engineer = flow.order_in("on_site", pay_mode=ITP)
    attach(order, "id_card")
    order.box_id = "GJ-0101-A"
    error = raises(PreconditionFailed, lambda: flow.act(order, "submit", engineer_actor(engineer)))
    assert error.to_dict()["missing"] == ["resources"]
    order.port = "3"
    flow.act(order, "submit", engineer_actor(engineer))
    assert order.status == "pending_acceptance"


# --- guards: completion checklist -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_type", "missing"),
    [
        ("broadband_install", ["resources", "ont_sn", "optical_power", "after_photo", "signature"]),
        ("iptv_install", ["resources", "ont_sn", "optical_power", "after_photo", "signature"]),
        ("move", ["resources", "ont_sn", "optical_power", "after_photo", "signature"]),
        ("repair", ["repair_cause", "after_photo"]),
        ("opportunity", ["after_photo"]),
    ],
)
def test_completion_checklist_per_order_type_names_every_missing_item(
    flow: Flow, order_type: str, missing: list[str]
) -> None:
    order, engineer = flow.order_in("in_progress", order_type=order_type)
    attach(order, "before", "id_card")  # neither is on any checklist
    before = snapshot(order)
    error = raises(PreconditionFailed, lambda: flow.act(order, "complete", engineer_actor(engineer)))
    assert error.http_status == 409
    assert error.to_dict()["missing"] == missing
    assert snapshot(order) == before
    assert order.completed_at is None


@pytest.mark.parametrize("order_type", ["broadband_install", "iptv_install", "move"])
def test_an_install_completes_once_its_checklist_is_complete(flow: Flow, order_type: str) -> None:
    order, engineer = flow.order_in("in_progress", order_type=order_type)
    set_resources(order)
    attach(order, "after", "signature")
    flow.act(order, "complete", engineer_actor(engineer))
    assert order.status == "completed"


@pytest.mark.parametrize(
    ("power", "in_range"),
    [
        (None, False),
        (-27.01, False),
        (-27.0, True),
        (-19.5, True),
        (-8.0, True),
        (-7.99, False),
        (3.0, False),
    ],
)
def test_optical_power_outside_the_allowed_range_counts_as_missing(
    flow: Flow, power: float | None, in_range: bool
) -> None:
    order, engineer = flow.order_in("in_progress")
    set_resources(order, optical_power_dbm=power)
    attach(order, "after", "signature")
    if in_range:
        flow.act(order, "complete", engineer_actor(engineer))
        assert order.status == "completed"
    else:
        error = raises(PreconditionFailed, lambda: flow.act(order, "complete", engineer_actor(engineer)))
        assert error.to_dict()["missing"] == ["optical_power"]
        assert order.status == "in_progress"


def test_the_optical_power_range_comes_from_the_rules(flow: Flow) -> None:
    order, engineer = flow.order_in("in_progress")
    set_resources(order, optical_power_dbm=-26.0)
    attach(order, "after", "signature")
    strict = workflow.Rules(optical_power_min_dbm=-25.0, optical_power_max_dbm=-8.0)
    with pytest.raises(PreconditionFailed) as info:
        workflow.apply(
            order,
            "complete",
            engineer_actor(engineer),
            now=flow.clock.now(),
            attachment_kinds=kinds(order),
            rules=strict,
        )
    assert info.value.to_dict()["missing"] == ["optical_power"]


def test_a_repair_completes_with_the_cause_code_given_at_completion(flow: Flow) -> None:
    order, engineer = flow.order_in("in_progress", order_type="repair")
    attach(order, "after")
    flow.act(order, "complete", engineer_actor(engineer), {"cause_code": "connector_dirty"})
    assert order.status == "completed"
    assert order.repair_cause == "connector_dirty"
    assert events_of(order)[-1].payload == {"cause_code": "connector_dirty"}


def test_an_opportunity_needs_only_the_after_photo(flow: Flow) -> None:
    order, engineer = flow.order_in("on_site", order_type="opportunity")
    error = raises(PreconditionFailed, lambda: flow.act(order, "complete", engineer_actor(engineer)))
    assert error.to_dict()["missing"] == ["after_photo"]
    attach(order, "after")
    flow.act(order, "complete", engineer_actor(engineer))
    assert order.status == "completed"


# --- guards: appointment windows and reasons ------------------------------------------------------------

BAD_WINDOWS = [
    pytest.param(None, id="missing"),
    pytest.param({}, id="empty"),
    pytest.param({"start": WINDOW["start"]}, id="no-end"),
    pytest.param({"start": WINDOW["start"], "end": WINDOW["start"]}, id="end-equals-start"),
    pytest.param({"start": WINDOW["end"], "end": WINDOW["start"]}, id="end-before-start"),
]


@pytest.mark.parametrize("window", BAD_WINDOWS)
def test_appointing_needs_a_window_that_ends_after_it_starts(
    flow: Flow, window: dict[str, Any] | None
) -> None:
    order, engineer = flow.order_in("taken")
    before = snapshot(order)
    error = raises(
        ValidationError, lambda: flow.act(order, "appoint", engineer_actor(engineer), {"appointment": window})
    )
    assert error.http_status == 422
    assert "appointment" in error.to_dict()["errors"]
    assert snapshot(order) == before


@pytest.mark.parametrize("window", BAD_WINDOWS)
def test_rescheduling_needs_a_window_that_ends_after_it_starts(
    flow: Flow, window: dict[str, Any] | None
) -> None:
    order, engineer = flow.order_in("appointed")
    before = snapshot(order)
    params = {"appointment": window, "reason": "customer"}
    error = raises(ValidationError, lambda: flow.act(order, "reschedule", engineer_actor(engineer), params))
    assert "appointment" in error.to_dict()["errors"]
    assert snapshot(order) == before


@pytest.mark.parametrize("reason", [None, "", "weather", "CUSTOMER"])
def test_rescheduling_needs_a_customer_or_provider_reason(flow: Flow, reason: str | None) -> None:
    order, engineer = flow.order_in("appointed")
    before = snapshot(order)
    params = {"appointment": LATER_WINDOW, "reason": reason}
    error = raises(ValidationError, lambda: flow.act(order, "reschedule", engineer_actor(engineer), params))
    assert error.http_status == 422
    assert "reason" in error.to_dict()["errors"]
    assert snapshot(order) == before


@pytest.mark.parametrize("reason", ["customer", "provider"])
def test_rescheduling_moves_the_appointment_and_logs_the_reason(flow: Flow, reason: str) -> None:
    order, engineer = flow.order_in("appointed")
    assert (order.appointment_start, order.appointment_end) == (WINDOW["start"], WINDOW["end"])
    flow.act(order, "reschedule", engineer_actor(engineer), {"appointment": LATER_WINDOW, "reason": reason})
    assert order.status == "appointed"
    assert (order.appointment_start, order.appointment_end) == (LATER_WINDOW["start"], LATER_WINDOW["end"])
    payload = events_of(order)[-1].payload
    assert payload["reason"] == reason
    assert payload["appointment"] == {k: v.isoformat() for k, v in LATER_WINDOW.items()}


@pytest.mark.parametrize("reason_code", [None, "", "tired", "customer_unavailable"])
def test_returning_needs_a_return_reason_code(flow: Flow, reason_code: str | None) -> None:
    order, engineer = flow.order_in("taken")
    before = snapshot(order)
    params = {"reason_code": reason_code}
    error = raises(ValidationError, lambda: flow.act(order, "return", engineer_actor(engineer), params))
    assert error.http_status == 422
    assert "reason_code" in error.to_dict()["errors"]
    assert snapshot(order) == before


@pytest.mark.parametrize("reason_code", RETURN_REASONS)
def test_returning_with_a_valid_reason_unassigns_the_engineer(flow: Flow, reason_code: str) -> None:
    order, engineer = flow.order_in("appointed")
    flow.act(order, "return", engineer_actor(engineer), {"reason_code": reason_code})
    assert order.status == "returned"
    assert order.return_reason == reason_code
    assert order.engineer_id is None
    # The order is back with the dispatchers and can be assigned again.
    flow.act(order, "assign", DISPATCHER, {"engineer_id": flow.make_engineer().id})
    assert order.status == "dispatched"


@pytest.mark.parametrize("reason_code", [None, "", "no_answer", "wrong_address"])
def test_suspending_needs_a_suspend_reason_code(flow: Flow, reason_code: str | None) -> None:
    order, _ = flow.order_in("taken")
    before = snapshot(order)
    error = raises(
        ValidationError, lambda: flow.act(order, "suspend", DISPATCHER, {"reason_code": reason_code})
    )
    assert error.http_status == 422
    assert "reason_code" in error.to_dict()["errors"]
    assert snapshot(order) == before


def test_assigning_needs_an_engineer(flow: Flow) -> None:
    order, _ = flow.order_in("new")
    error = raises(ValidationError, lambda: flow.act(order, "assign", DISPATCHER, {}))
    assert "engineer_id" in error.to_dict()["errors"]
    assert order.status == "new"


# --- suspension -----------------------------------------------------------------------------------------

SUSPENDABLE = [
    pytest.param(
        status, ITP if status == "pending_acceptance" else PREPAID, suspender, id=f"{status}-{suspender}"
    )
    for status in OPEN
    for suspender in ("engineer", "dispatcher")
    if status != "suspended"
    and not (suspender == "engineer" and status in ("new", "returned"))  # nobody assigned
]


@pytest.mark.parametrize(("status", "pay_mode", "suspender"), SUSPENDABLE)
def test_suspend_then_resume_returns_to_the_status_before_and_clears_the_suspension(
    flow: Flow, status: str, pay_mode: str, suspender: str
) -> None:
    order, engineer = flow.order_in(status, pay_mode=pay_mode)
    engineer_id = order.engineer_id
    actor = engineer_actor(engineer) if suspender == "engineer" else DISPATCHER
    until = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    flow.act(order, "suspend", actor, {"reason_code": "customer_unavailable", "until": until})
    assert order.status == "suspended"
    assert (order.status_before_suspend, order.suspend_reason, order.suspended_until) == (
        status,
        "customer_unavailable",
        until,
    )

    flow.act(order, "resume", DISPATCHER, {"note": "客户已回电"})
    assert order.status == status
    assert (order.status_before_suspend, order.suspend_reason, order.suspended_until) == (None, None, None)
    assert order.engineer_id == engineer_id
    trail = [(e.action, e.from_status, e.to_status) for e in events_of(order)][-2:]
    assert trail == [("suspend", status, "suspended"), ("resume", "suspended", status)]


@pytest.mark.parametrize("reason_code", SUSPEND_REASONS)
def test_every_suspend_reason_code_is_accepted(flow: Flow, reason_code: str) -> None:
    order, engineer = flow.order_in("appointed")
    flow.act(order, "suspend", engineer_actor(engineer), {"reason_code": reason_code})
    assert order.status == "suspended"
    assert order.suspend_reason == reason_code


def test_the_scheduler_may_resume_but_an_engineer_may_not(flow: Flow) -> None:
    order, engineer = flow.order_in("suspended")
    raises(PermissionDenied, lambda: flow.act(order, "resume", engineer_actor(engineer)))
    flow.act(order, "resume", SYSTEM)
    assert order.status == BEFORE_SUSPEND
    assert events_of(order)[-1].actor_type == "system"


# --- cancellation and closed orders ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "pay_mode"),
    [pytest.param(s, ITP if s == "pending_acceptance" else PREPAID, id=s) for s in OPEN],
)
@pytest.mark.parametrize("canceller", ["dispatcher", "intake"])
def test_an_order_can_be_cancelled_from_every_open_status(
    flow: Flow, status: str, pay_mode: str, canceller: str
) -> None:
    order, _ = flow.order_in(status, pay_mode=pay_mode)
    actor = INTAKE_ACTOR if canceller == "intake" else DISPATCHER
    flow.act(order, "cancel", actor, {"reason": "客户来电撤单"})
    assert order.status == "cancelled"
    assert order.cancel_reason == "客户来电撤单"
    event = events_of(order)[-1]
    assert (event.action, event.from_status, event.to_status) == ("cancel", status, "cancelled")


@pytest.mark.parametrize("status", ["completed", "cancelled"])
@pytest.mark.parametrize("action", ACTIONS)
def test_nothing_happens_to_a_closed_order(flow: Flow, status: str, action: str) -> None:
    order, engineer = flow.order_in(status)
    satisfy_checklist(order)
    assert order.engineer_id == engineer.id  # visible to the engineer, so the status is what refuses
    actor = flow.actor_for(action, order)
    before = snapshot(order)
    error = raises(InvalidTransition, lambda: flow.act(order, action, actor, params_for(action, flow)))
    assert error.to_dict()["status"] == status
    assert snapshot(order) == before


# --- the event log is append-only -----------------------------------------------------------------------


def test_an_event_row_cannot_be_updated(flow: Flow) -> None:
    order, _ = flow.order_in("dispatched")
    event = events_of(order)[-1]
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.session.begin_nested():
        db.session.execute(sa.update(OrderEvent).where(OrderEvent.id == event.id).values(action="take"))
    db.session.expire_all()
    assert db.session.get(OrderEvent, event.id).action == "assign"


def test_an_event_row_changed_through_the_orm_is_refused_on_flush(flow: Flow) -> None:
    order, _ = flow.order_in("dispatched")
    event = events_of(order)[-1]
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.session.begin_nested():
        event.actor_name = "someone else"
        db.session.flush()
    db.session.expire_all()
    assert db.session.get(OrderEvent, event.id).actor_name == DISPATCHER.name


def test_an_event_row_cannot_be_deleted(flow: Flow) -> None:
    order, _ = flow.order_in("taken")
    count = len(events_of(order))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.session.begin_nested():
        db.session.execute(sa.delete(OrderEvent).where(OrderEvent.order_id == order.id))
    db.session.expire_all()
    assert len(events_of(order)) == count == 3
    # The transaction survived the refusal: the workflow still appends.
    flow.act(order, "appoint", engineer_actor(order.engineer_id), {"appointment": WINDOW})
    assert len(events_of(order)) == count + 1


def test_a_transition_rolled_back_with_its_transaction_leaves_no_event(flow: Flow) -> None:
    order, engineer = flow.order_in("taken")
    count = len(events_of(order))
    with pytest.raises(RuntimeError), db.session.begin_nested():
        workflow.apply(
            order, "appoint", engineer_actor(engineer), now=flow.clock.now(), params={"appointment": WINDOW}
        )
        db.session.flush()
        raise RuntimeError("the request failed after the transition")
    db.session.expire_all()
    assert order.status == "taken"
    assert len(events_of(order)) == count
