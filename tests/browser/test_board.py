"""The dispatchers' pages in a browser: filtering the board, assigning an order, acknowledging an alert."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from playwright.sync_api import expect

from dispatch.clock import utcnow
from dispatch.extensions import db
from dispatch.models import Alert, Order, SlaClock
from dispatch.services import dispatching
from tests.browser.conftest import LiveConsole, login, screenshot
from tests.conftest import SYSTEM


def _takeable(live: LiveConsole, external_ids: list[str]) -> str:
    """The first of these orders that some engineer may take now. An order without a window is matched
    against the current time, and in the evening nobody is on shift: the board's first row may have none."""
    with live.app.app_context():
        try:
            for external_id in external_ids:
                order_id = db.session.scalar(sa.select(Order.id).where(Order.external_id == external_id))
                assert order_id is not None
                if dispatching.candidates(order_id, actor=SYSTEM):
                    return external_id
        finally:
            db.session.remove()
    raise AssertionError(f"no engineer may take any of {external_ids}")


def test_a_dispatcher_filters_the_board_and_assigns_an_order_from_the_candidates(
    page: Any, live_console: LiveConsole
) -> None:
    login(page, "dispatcher")
    expect(page.get_by_role("heading", level=1)).to_have_text("工单看板")
    rows = page.locator("#board-rows tr[data-order-id]")
    expect(rows.first).to_be_visible()
    expect(page.locator("#board-rows .countdown").first).to_have_text(re.compile(r"^(剩|超时|已暂停)"))
    screenshot(page, "board")

    page.get_by_label("状态").select_option(label="待派单")
    page.get_by_role("button", name="筛选").click()
    expect(page).to_have_url(re.compile(r"status=new"))
    expect(rows.first).to_be_visible()
    statuses = rows.evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert statuses and set(statuses) == {"new"}
    for label in rows.locator("td:nth-child(3)").all_inner_texts():
        assert label == "待派单"

    shown = rows.evaluate_all("rows => rows.map(r => r.querySelector('td a').textContent.trim())")
    external_id = _takeable(live_console, shown)
    rows.get_by_role("link", name=external_id, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(external_id)
    expect(page.locator("#order-status")).to_have_text("待派单")
    candidates = page.get_by_role("table", name="候选工程师").locator("tbody tr[data-engineer-id]")
    expect(candidates.first).to_be_visible()
    screenshot(page, "order_detail")

    name = candidates.first.locator("td").nth(1).inner_text().splitlines()[0].strip()
    candidates.first.get_by_role("button", name=f"指派 {name}").click()
    expect(page.locator("#order-status")).to_have_text("已派单")
    expect(page.locator(".flash.ok").first).to_have_text("派单成功")
    expect(page.locator(".flash.ok").nth(1)).to_contain_text(f"已派给 {name}")
    expect(page.locator("#order-engineer")).to_contain_text(name)
    expect(page.get_by_role("button", name="自动改派")).to_be_visible()

    page.get_by_role("link", name="← 工单看板").click()
    page.goto(f"/console/board?q={external_id}")
    expect(page.locator("#board-rows tr[data-order-id] td:nth-child(3)")).to_have_text("已派单")


def _raise_alert(live: LiveConsole) -> str:
    """A warning on one running clock of an open demo order (what the scheduler's tick records)."""
    with live.app.app_context():
        taken = sa.select(Alert.clock_id)
        clock = db.session.scalars(
            sa.select(SlaClock)
            .join(Order, Order.id == SlaClock.order_id)
            .where(SlaClock.status == "running", SlaClock.id.not_in(taken), Order.status == "dispatched")
            .order_by(SlaClock.id)
        ).first()
        assert clock is not None
        alert = Alert(order_id=clock.order_id, clock_id=clock.id, kind="warning", clock=clock.clock)
        alert.created_at = utcnow()
        db.session.add(alert)
        order = db.session.get(Order, clock.order_id)
        assert order is not None
        external_id = order.external_id
        db.session.commit()
        db.session.remove()
    return external_id


def test_a_dispatcher_acknowledges_an_alert(page: Any, live_console: LiveConsole) -> None:
    external_id = _raise_alert(live_console)
    login(page, "dispatcher")
    page.get_by_role("navigation", name="主导航").get_by_role("link", name="告警").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("告警")
    row = page.locator("table.alerts tbody tr", has_text=external_id)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("预警")
    screenshot(page, "alerts")
    row.get_by_role("button", name="确认").click()
    expect(page.get_by_role("status")).to_have_text("告警已确认")
    expect(page.locator("table.alerts tbody tr", has_text=external_id)).to_have_count(0)
    page.get_by_label("状态").select_option(label="已确认")
    page.get_by_role("button", name="筛选").click()
    expect(page.locator("table.alerts tbody tr", has_text=external_id)).to_contain_text("已确认")


def test_a_dispatcher_records_a_complaint(page: Any) -> None:
    login(page, "dispatcher")
    page.goto("/console/complaints")
    form = page.get_by_role("form", name="登记投诉")
    if not form.is_visible():
        page.get_by_text("登记投诉", exact=True).click()
    form.get_by_label("类别").select_option(label="约服")
    form.get_by_label("原因").select_option(label="装维服务")
    form.get_by_label("投诉内容").fill("浏览器测试：工程师迟到两小时")
    form.get_by_role("button", name="登记").click()
    expect(page.get_by_role("status")).to_have_text("投诉已登记")
    expect(page.locator("table.complaints tbody")).to_contain_text("浏览器测试：工程师迟到两小时")
    screenshot(page, "complaints")
