"""KPI rollups: incremental counting against DOMAIN.md's formulas, and recomputation from the events.

The random-history test drives orders through the real workflow, the SLA tick, complaints and
satisfaction replies, folds the deltas at random moments, and then recomputes every day from the record
(dispatch/reporting/recompute.py): the incrementally kept totals must equal the recomputed ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from api.intake.schemas import ComplaintIntakeSchema
from dispatch import workflow
from dispatch.actors import Actor
from dispatch.clock import FakeClock
from dispatch.extensions import db
from dispatch.models import Engineer, KpiDaily, KpiDelta, Order
from dispatch.reporting import recompute, rollup
from dispatch.services import complaints, reports, sms_inbound
from dispatch.sla import tick
from dispatch.timeutil import business_day
from tests.conftest import INTAKE_ACTOR
from tests.services.test_workflow import DISPATCHER, engineer_actor, kinds, satisfy_checklist

MANAGER = Actor(kind="user", id=990, name="manager", role="manager", source="api")


def act(
    clock: FakeClock, order: Order, action: str, actor: Actor, params: dict[str, Any] | None = None
) -> None:
    """One transition, a second after whatever happened before (real times never tie)."""
    workflow.apply(
        order,
        action,
        actor,
        now=clock.advance(seconds=1),
        params=params,
        attachment_kinds=kinds(order),
        rules=workflow.Rules(),
    )
    db.session.flush()


def complaint(order: Order | None, category: str, cause: str, when: Any, n: int) -> None:
    body = {
        "external_id": f"C-{n}",
        "order_external_id": order.external_id if order is not None else None,
        "category": category,
        "cause": cause,
        "received_at": when.isoformat(),
        "text": "客户投诉",
    }
    complaints.record_complaint(ComplaintIntakeSchema().load(body), actor=INTAKE_ACTOR)


def report(day: date, group_by: str = "order_type", end: date | None = None) -> dict[str, Any]:
    return reports.kpi_report(actor=MANAGER, start=day, end=end or day, group_by=group_by)


def completion(group: dict[str, Any], order_type: str) -> dict[str, Any]:
    return next(entry for entry in group["completion"] if entry["order_type"] == order_type)


def test_completion_rate_leaves_out_customer_cancellations_and_refusals(
    app: Any, clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]
) -> None:
    engineer = make_engineer()
    eng = engineer_actor(engineer)
    done = [make_order(order_type="opportunity", pay_mode="prepaid") for _ in range(3)]
    withdrawn = make_order(order_type="opportunity", pay_mode="prepaid")
    refused = make_order(order_type="opportunity", pay_mode="prepaid")
    dropped = make_order(order_type="opportunity", pay_mode="prepaid")  # cancelled by the provider: counts
    open_ = make_order(order_type="opportunity", pay_mode="prepaid")
    for order in done:
        satisfy_checklist(order)
        for action, actor, params in (
            ("assign", DISPATCHER, {"engineer_id": engineer.id}),
            ("take", eng, {}),
            (
                "appoint",
                eng,
                {
                    "appointment": {
                        "start": clock.now() + timedelta(hours=2),
                        "end": clock.now() + timedelta(hours=4),
                    }
                },
            ),
            ("check_in", eng, {}),
            ("start_work", eng, {}),
            ("complete", eng, {}),
        ):
            act(clock, order, action, actor, params)
    act(clock, withdrawn, "cancel", INTAKE_ACTOR, {"reason": "客户撤单"})
    act(clock, refused, "assign", DISPATCHER, {"engineer_id": engineer.id})
    act(clock, refused, "return", eng, {"reason_code": "customer_refused"})
    act(clock, dropped, "cancel", DISPATCHER, {"reason": "资源不足", "reason_code": "provider"})
    assert open_.status == "new"

    day = business_day(clock.now())
    group = report(day)["groups"][0]
    entry = completion(group, "opportunity")
    assert (entry["received"], entry["excluded"], entry["completed"]) == (7, 2, 3)
    assert entry["rate"]["value"] == pytest.approx(3 / 5)
    assert entry["rate"]["target"] == 0.80 and entry["rate"]["met"] is False
    assert entry["completed_on_time"] == 3
    by_engineer = report(day, "engineer")["groups"]
    mine = next(g for g in by_engineer if g["key"] == str(engineer.id))
    assert completion(mine, "opportunity")["completed"] == 3
    # never assigned (withdrawn, dropped, open) or returned (refused): they count as unassigned
    unassigned = next(g for g in by_engineer if g["key"] == "0")
    assert completion(unassigned, "opportunity")["received"] == 4
    assert not recompute.differences(day)


def test_complaints_per_day_against_targets_and_escalations(
    app: Any, clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]
) -> None:
    engineer = make_engineer()
    order = make_order(order_type="repair", pay_mode="prepaid")
    act(clock, order, "assign", DISPATCHER, {"engineer_id": engineer.id})
    now = clock.now()
    for n in range(3):
        complaint(order, "appointment", "installation_service", now, n)
    complaint(None, "backend_first_contact", "other", now, 10)
    complaint(order, "escalated", "network", now, 11)
    complaint(order, "escalated", "other", now, 12)

    day = business_day(now)
    group = report(day, end=day + timedelta(days=1))["groups"][0]  # two days: per day halves
    by_category = {entry["category"]: entry for entry in group["complaints"]}
    assert by_category["appointment"]["count"] == 3
    assert by_category["appointment"]["per_day"]["value"] == pytest.approx(1.5)
    assert by_category["appointment"]["per_day"]["met"] is True  # ≤ 8 a day
    escalated = by_category["escalated"]
    assert escalated["by_cause"] == {"installation_service": 0, "network": 1, "other": 1}
    assert escalated["installation_or_network"] == {"count": 1, "target": 0, "met": False}
    team = next(g for g in report(day, "team")["groups"] if g["key"] == str(engineer.team_id))
    assert {e["category"]: e["count"] for e in team["complaints"]}["appointment"] == 3
    assert not recompute.differences(day)


def test_first_time_fix_is_undone_by_a_repeat_repair_within_30_days(
    app: Any, clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]
) -> None:
    engineer = make_engineer()
    eng = engineer_actor(engineer)
    phone = "13912345678"

    def repair_done() -> Order:
        order = make_order(order_type="repair", pay_mode="prepaid", customer={"name": "李四", "phone": phone})
        satisfy_checklist(order)
        window = {"start": clock.now() + timedelta(hours=1), "end": clock.now() + timedelta(hours=3)}
        for action, actor, params in (
            ("assign", DISPATCHER, {"engineer_id": engineer.id}),
            ("take", eng, {}),
            ("appoint", eng, {"appointment": window}),
            ("check_in", eng, {}),
            ("start_work", eng, {}),
            ("complete", eng, {"cause_code": "fiber_cut"}),
        ):
            act(clock, order, action, actor, params)
        return order

    first = repair_done()
    first_day = business_day(first.completed_at)
    assert report(first_day)["groups"][0]["first_time_fix"]["value"] == 1.0
    clock.advance(days=10)
    make_order(order_type="repair", pay_mode="prepaid", customer={"name": "李四", "phone": phone})
    make_order(
        order_type="repair", pay_mode="prepaid", customer={"name": "李四", "phone": phone}
    )  # once only
    figure = report(first_day)["groups"][0]["first_time_fix"]
    assert (figure["numerator"], figure["denominator"]) == (0, 1)
    assert not recompute.differences(first_day)


def test_deltas_fold_into_daily_totals_without_changing_the_report(
    app: Any, clock: FakeClock, make_order: Callable[..., Order]
) -> None:
    for _ in range(5):
        make_order(order_type="broadband_install", pay_mode="prepaid")
    day = business_day(clock.now())
    before = report(day)
    assert db.session.query(KpiDelta).count() == 5
    result = rollup.fold()
    assert result.deltas == 5 and db.session.query(KpiDelta).count() == 0
    after = report(day)
    assert after["groups"] == before["groups"]
    assert completion(after["groups"][0], "broadband_install")["received"] == 5
    assert completion(after["groups"][0], "broadband_install")["rate"]["target"] == 0.98
    assert not recompute.differences(day)


def test_a_random_history_recomputed_from_the_events_gives_the_same_figures(
    app: Any, clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]
) -> None:
    rng = random.Random(7)
    engineers = [make_engineer(team=team) for team in ("一班", "一班", "二班", "三班")]
    phones = [f"1391000{n:04d}" for n in range(12)]  # few customers: repeat repairs happen
    first_day = business_day(clock.now())
    counter = 0

    for _ in range(70):
        counter += 1
        clock.advance(minutes=rng.randint(5, 90))
        order_type = rng.choice(["broadband_install", "opportunity", "repair", "repair", "iptv_install"])
        order = make_order(
            order_type=order_type, pay_mode="prepaid", customer={"name": "客户", "phone": rng.choice(phones)}
        )
        satisfy_checklist(order)
        engineer = rng.choice(engineers)
        fate = rng.random()
        if fate < 0.08:
            act(clock, order, "cancel", INTAKE_ACTOR, {"reason": "客户撤单"})
            continue
        act(clock, order, "assign", DISPATCHER, {"engineer_id": engineer.id})
        if rng.random() < 0.25:
            engineer = rng.choice([e for e in engineers if e is not engineer])
            act(clock, order, "reassign", DISPATCHER, {"engineer_id": engineer.id})
        eng = engineer_actor(engineer)
        clock.advance(minutes=rng.choice([5, 30]))  # 30: the take clock (15 min) breaches on the next tick
        tick.tick(clock.now())
        act(clock, order, "take", eng)
        if fate < 0.18:
            act(clock, order, "return", eng, {"reason_code": rng.choice(["customer_refused", "no_resource"])})
            continue
        if fate < 0.22:
            act(clock, order, "cancel", DISPATCHER, {"reason": "撤单", "reason_code": "provider"})
            continue
        clock.advance(minutes=rng.choice([10, 70]))  # 70: the contact clock (60 min) is late
        window = {"start": clock.now() + timedelta(hours=2), "end": clock.now() + timedelta(hours=4)}
        act(clock, order, "appoint", eng, {"appointment": window})
        if rng.random() < 0.2:
            later = {"start": clock.now() + timedelta(hours=3), "end": clock.now() + timedelta(hours=5)}
            act(
                clock,
                order,
                "reschedule",
                eng,
                {"appointment": later, "reason": rng.choice(["customer", "provider"])},
            )
        if fate < 0.3:
            continue  # left open; the tick breaches its clocks later
        clock.advance(hours=rng.choice([1, 4]))  # 4: after the window start (arrival missed)
        tick.tick(clock.now())
        act(clock, order, "check_in", eng)
        act(clock, order, "start_work", eng)
        clock.advance(hours=rng.choice([1, 1, 60]))  # 60: past the completion clock
        act(clock, order, "complete", eng, {"cause_code": "fiber_cut"})
        if rng.random() < 0.5:
            sms_inbound.handle_inbound(
                {
                    "From": order.customer.phone,
                    "Body": str(rng.randint(1, 5)),
                    "MessageSid": f"SM{counter:030d}",
                },
                now=clock.now(),
            )
        if rng.random() < 0.2:
            complaint(
                order,
                rng.choice(["appointment", "escalated"]),
                rng.choice(["network", "other"]),
                clock.now(),
                counter,
            )
        if rng.random() < 0.2:
            rollup.fold()
        clock.advance(hours=rng.choice([0, 0, 20]))

    clock.advance(days=3)
    tick.tick(clock.now())
    last_day = business_day(clock.now())
    report_all = report(first_day, end=last_day)
    group = report_all["groups"][0]
    assert sum(entry["received"] for entry in group["completion"]) == 70
    assert {entry["clock"] for entry in group["sla"]} >= {"take", "contact", "arrival", "completion"}
    assert group["satisfaction"]["denominator"] > 0 and group["first_time_fix"]["denominator"] > 0

    day = first_day
    while day <= last_day:
        assert not recompute.differences(day), day
        day += timedelta(days=1)
    # the groupings agree with each other: each one's groups add up to the city's totals
    for grouping in ("district", "team", "engineer"):
        groups = report(first_day, grouping, end=last_day)["groups"]
        repairs = [e for g in groups for e in g["completion"] if e["order_type"] == "repair"]
        assert sum(e["completed"] for e in repairs) == completion(group, "repair")["completed"]


def test_kpi_verify_command_reports_a_tampered_total(
    app: Any, clock: FakeClock, make_order: Callable[..., Order]
) -> None:
    make_order(order_type="repair", pay_mode="prepaid")
    rollup.fold()
    day = business_day(clock.now()).isoformat()
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["kpi-verify", "--from", day, "--to", day])
    assert ok.exit_code == 0, ok.output
    assert "matches" in ok.output
    db.session.execute(
        sa.update(KpiDaily)
        .where(KpiDaily.grouping == "district", KpiDaily.metric == "orders.received")
        .values(value=2)
    )
    bad = runner.invoke(args=["kpi-verify", "--from", day, "--to", day])
    assert bad.exit_code == 1
    assert "district=五华区 repair orders.received: rollup 2, events 1" in bad.output
