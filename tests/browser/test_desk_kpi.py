"""The acceptance desk and the KPI dashboard in a real browser, on the demo data."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot


def test_the_desk_approves_the_oldest_order_and_it_leaves_the_queue(page: Any) -> None:
    login(page, "acceptance")
    expect(page.get_by_role("heading", level=1)).to_contain_text("受理台")
    rows = page.locator("#desk-rows tr[data-order-id]")
    expect(rows.first).to_be_visible()
    before = rows.count()
    first = rows.first
    external_id = first.locator("td").nth(1).locator("a").inner_text()
    expect(first.locator(".countdown")).to_have_text(re.compile(r"^(剩|超时) "))  # the script ticks it
    expect(first.locator("a.id-photo")).to_have_count(1)
    screenshot(page, "desk")

    first.get_by_role("link", name="审核").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(external_id)
    expect(page.get_by_role("button", name="受理通过")).to_be_visible()
    expect(page.get_by_role("button", name="驳回")).to_be_visible()
    screenshot(page, "desk_order")
    page.go_back()

    page.locator(f'#desk-rows tr[data-order-id]:has-text("{external_id}")').get_by_role(
        "button", name=re.compile("^受理通过")
    ).click()
    expect(page).to_have_url(re.compile(r"/console/desk$"))
    expect(page.get_by_role("status").filter(has_text="已受理通过")).to_contain_text(external_id)
    expect(page.locator("#desk-rows")).not_to_contain_text(external_id)
    expect(page.locator("#desk-rows tr[data-order-id]")).to_have_count(before - 1)


def test_the_kpi_dashboard_charts_targets_and_a_district_breakdown(page: Any) -> None:
    login(page, "manager")
    expect(page.get_by_role("heading", level=1)).to_contain_text("KPI 看板")
    chart = page.locator("svg#chart-completion")
    expect(chart).to_be_visible()
    expect(chart).to_have_attribute("aria-label", "各类工单竣工率与目标")
    bars = chart.locator("g.bar")
    expect(bars.first).to_be_visible()
    titles = [bars.nth(i).locator("title").text_content() for i in range(bars.count())]
    assert any(t and t.startswith("宽带新装 竣工率：") and "目标 ≥ 98%" in t for t in titles), titles
    expect(chart.locator("line.target").first).to_be_attached()
    assert chart.locator("line.target").count() >= 2
    assert chart.locator("g.bar.met-yes, g.bar.met-no").count() >= 1
    expect(page.locator("svg#chart-complaints")).to_be_visible()
    expect(page.get_by_role("link", name="CSV")).to_have_attribute(
        "href", re.compile(r"/console/kpi/export/csv\?")
    )
    screenshot(page, "kpi")

    page.get_by_label("分组").select_option("district")
    page.get_by_role("button", name="查询").click()
    expect(page).to_have_url(re.compile(r"group_by=district"))
    table = page.locator("table.kpi-breakdown")
    expect(table).to_be_visible()
    expect(table.locator('tr[data-group="五华区"] th')).to_have_text("五华区")
    expect(table.locator("tbody tr")).not_to_have_count(0)
    screenshot(page, "kpi_district")

    with page.expect_download() as download:
        page.get_by_role("link", name="Excel（XLSX）").click()
    assert download.value.suggested_filename.endswith("-district.xlsx")
