"""Day planning in a browser: a dispatcher plans tomorrow for a district, reads the routes, accepts."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot


def test_a_dispatcher_plans_a_day_sees_the_routes_and_accepts(page: Any) -> None:
    page.on("dialog", lambda dialog: dialog.accept())  # the accept button asks for confirmation
    login(page, "dispatcher")
    page.get_by_role("navigation", name="主导航").get_by_role("link", name="日计划").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("日计划")
    form = page.get_by_role("form", name="生成日计划")
    form.get_by_label("呈贡区").check()
    form.get_by_label("计算时限（秒）").select_option("2")
    form.get_by_role("button", name="生成计划").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(re.compile(r"日计划 #\d+"))
    expect(page.locator("#plan-status")).to_have_text("待确认")
    routes = page.locator("section.route")
    expect(routes.first).to_be_visible()
    etas = page.locator("section.route td.eta").all_inner_texts()
    assert etas, "the plan has no visits"
    assert all(re.fullmatch(r"\d\d:\d\d", eta) for eta in etas), etas
    expect(routes.first.locator(".travel")).to_have_text(re.compile(r"^\d+\.\d → \d+\.\d 公里$"))
    new_rows = page.locator("section.route tr[data-order-id]", has_text=re.compile("新派|改派自"))
    assigned = [row.locator("td").nth(1).get_by_role("link").inner_text() for row in new_rows.all()]
    assert assigned, "nothing for the plan to assign"
    screenshot(page, "day_plan")

    page.get_by_role("button", name="采纳并派单").click()
    expect(page.locator("#plan-status")).to_have_text("已采纳")
    expect(page.locator(".flash").first).to_have_text("日计划已采纳")
    expect(page.get_by_role("heading", name="采纳结果")).to_be_visible()
    expect(page.get_by_role("button", name="采纳并派单")).to_have_count(0)

    for external_id in assigned:
        page.goto(f"/console/board?status=all&q={external_id}")
        expect(page.locator("#board-rows tr[data-order-id] td:nth-child(3)")).to_have_text("已派单")
