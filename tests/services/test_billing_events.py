"""The billing events orders and closed days cause, each written once in the transaction that causes it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dispatch import scheduling
from dispatch.clock import FakeClock
from dispatch.errors import InvalidTransition
from dispatch.extensions import db
from dispatch.models import BillingEvent, Engineer, KpiDayClose, Order
from dispatch.reporting import daily
from dispatch.services import orders
from dispatch.timeutil import business_day, to_local
from tests.conftest import INTAKE_ACTOR
from tests.services.test_kpi_rollup import act
from tests.services.test_workflow import ACCEPTANCE, DISPATCHER, engineer_actor, satisfy_checklist


def events(type_: str) -> list[BillingEvent]:
    return list(
        db.session.scalars(
            sa.select(BillingEvent).where(BillingEvent.type == type_).order_by(BillingEvent.id)
        )
    )


def complete_install_then_pay(clock: FakeClock, order: Order, engineer: Engineer) -> None:
    eng = engineer_actor(engineer)
    satisfy_checklist(order)
    window = {"start": clock.now() + timedelta(hours=1), "end": clock.now() + timedelta(hours=3)}
    for action, actor, params in (
        ("assign", DISPATCHER, {"engineer_id": engineer.id}),
        ("take", eng, {}),
        ("appoint", eng, {"appointment": window}),
        ("check_in", eng, {}),
        ("submit", eng, {}),
        ("approve", ACCEPTANCE, {}),
        ("complete", eng, {}),
    ):
        act(clock, order, action, actor, params)


def test_completion_writes_the_billing_start_with_products_and_the_exact_time(
    app: Any, clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]
) -> None:
    engineer = make_engineer()
    order = make_order(products=["broadband_300m", "iptv_basic"])
    complete_install_then_pay(clock, order, engineer)
    [event] = events("order.completed")
    assert event.order_id == order.id and event.occurred_at == order.completed_at
    payload = event.payload
    assert payload["order"] == {
        "id": order.id,
        "external_id": order.external_id,
        "order_type": "broadband_install",
    }
    assert payload["pay_mode"] == "install_then_pay"
    assert payload["products"] == ["broadband_300m", "iptv_basic"]
    assert payload["completed_at"] == to_local(order.completed_at).isoformat()
    assert payload["completed_at"].endswith("+08:00")
    assert payload["engineer"] == {"id": engineer.id, "code": engineer.code, "name": engineer.name}
    assert payload["team"]["id"] == engineer.team_id
    assert payload["customer"]["phone"] == order.customer.phone
    assert event.seq is None  # numbered by the feed relay once committed


def test_cancellation_writes_one_event_with_its_cause(app: Any, make_order: Callable[..., Order]) -> None:
    order = make_order()
    orders.cancel_order(order.id, reason="客户来电撤单", actor=INTAKE_ACTOR)
    with pytest.raises(InvalidTransition):
        orders.cancel_order(order.id, reason="again", actor=INTAKE_ACTOR)
    [event] = events("order.cancelled")
    assert event.payload["reason_code"] == "customer_withdrew"
    assert event.payload["reason"] == "客户来电撤单"


def test_a_closed_day_writes_kpi_daily_per_engineer_and_team_once(
    app: Any, clock: FakeClock, make_order: Callable[..., Order], make_engineer: Callable[..., Engineer]
) -> None:
    first, second = make_engineer(team="一班"), make_engineer(team="二班")
    complete_install_then_pay(clock, make_order(), first)
    complete_install_then_pay(clock, make_order(), second)
    day = business_day(clock.now())
    clock.advance(days=1)
    assert daily.close_days(clock.now()) == 3  # the lookback's three days, each once
    assert daily.close_days(clock.now()) == 0
    kpis = events("kpi.daily")
    scopes = sorted((e.payload["scope"], e.payload[e.payload["scope"]]["id"]) for e in kpis)
    assert scopes == sorted(
        [("engineer", first.id), ("engineer", second.id), ("team", first.team_id), ("team", second.team_id)]
    )
    mine = next(
        e for e in kpis if e.payload["scope"] == "engineer" and e.payload["engineer"]["id"] == first.id
    )
    assert mine.payload["day"] == day.isoformat()
    rate = mine.payload["figures"]["completion_rate.broadband_install"]
    assert (rate["numerator"], rate["denominator"], rate["value"], rate["target"], rate["met"]) == (
        1,
        1,
        1.0,
        0.98,
        True,
    )
    assert db.session.get(KpiDayClose, day) is not None


def test_the_scheduler_folds_kpis_and_closes_days() -> None:
    ids = {job.id for job in scheduling.JOBS}
    assert {"kpi-fold", "kpi-close-days", "billing-feed"} <= ids
