"""The admins' pages in a browser: engineers, SLA policies, SMS templates, users and API keys."""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import login, screenshot

KEY_PATTERN = re.compile(r"^dk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}$")


def test_an_admin_creates_an_engineer_and_sees_it_listed(page: Any) -> None:
    code = f"BR-{uuid.uuid4().hex[:6]}"
    login(page, "admin")
    page.get_by_role("link", name="装维人员").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("装维人员")
    screenshot(page, "admin-engineers")
    page.get_by_role("link", name="＋ 新增装维人员").click()
    page.get_by_label("工号", exact=True).fill(code)
    page.get_by_label("姓名", exact=True).fill("浏览器测试")
    page.get_by_label("电话", exact=True).fill("13912345678")
    page.get_by_label("班组", exact=True).fill("浏览器一班")
    page.get_by_label("每日容量").fill("4")
    for skill in ("IPTV+", "商机单", "移机"):  # keep 宽带新装 and 修障
        page.get_by_label(skill, exact=True).uncheck()
    page.get_by_label("五华区", exact=True).check()
    page.get_by_label("周六上班").uncheck()
    page.get_by_label("周日上班").uncheck()
    screenshot(page, "admin-engineer-form")
    page.get_by_role("button", name="创建").click()
    expect(page.locator(".flash.ok")).to_have_text(f"已创建装维人员 {code} 浏览器测试")
    page.get_by_label("班组").select_option("浏览器一班")
    page.get_by_role("button", name="筛选").click()
    row = page.locator(f'tr[data-code="{code}"]')
    expect(row).to_contain_text("浏览器一班")
    expect(row).to_contain_text("宽带新装")
    expect(row).to_contain_text("修障")
    expect(row).not_to_contain_text("移机")
    expect(row).to_contain_text("五华区")
    expect(row).to_contain_text("周一至周五 08:00–20:00")


def test_a_bad_engineer_form_comes_back_with_a_message_and_what_was_typed(page: Any) -> None:
    login(page, "admin")
    page.goto("/console/admin/engineers/new")
    page.get_by_label("工号", exact=True).fill(f"BAD-{uuid.uuid4().hex[:6]}")
    page.get_by_label("姓名", exact=True).fill("号码不对")
    page.get_by_label("电话", exact=True).fill("12345")
    page.get_by_role("button", name="创建").click()
    expect(page.get_by_role("alert")).to_contain_text("输入有误：电话")
    expect(page.get_by_label("姓名", exact=True)).to_have_value("号码不对")


def test_an_admin_changes_an_sla_target_and_sees_it(page: Any) -> None:
    login(page, "admin")
    page.get_by_role("link", name="SLA 策略").click()
    row = page.locator("#sla-move-contact")
    value, unit, warn = (
        row.get_by_label("目标", exact=True).input_value(),
        row.get_by_label("单位").input_value(),
        row.get_by_label("预警 %").input_value(),
    )
    row.get_by_label("目标", exact=True).fill("90")
    row.get_by_label("单位").select_option("min")
    row.get_by_label("预警 %").fill("80")
    row.get_by_role("button", name="保存").click()
    expect(page.locator(".flash.ok")).to_contain_text("已更新 移机 首次联系 时限：1小时30分，80% 预警")
    row = page.locator("#sla-move-contact")
    expect(row.locator(".target")).to_have_text("1小时30分")
    expect(row.locator(".warn")).to_have_text("80%")
    expect(row.get_by_label("目标", exact=True)).to_have_value("90")
    screenshot(page, "admin-sla")
    # put the demo's policy back for the other browser tests
    row.get_by_label("目标", exact=True).fill(value)
    row.get_by_label("单位").select_option(unit)
    row.get_by_label("预警 %").fill(warn)
    row.get_by_role("button", name="保存").click()
    expect(page.locator("#sla-move-contact .warn")).to_have_text(f"{warn}%")


def test_an_admin_edits_an_sms_template_and_restores_the_default(page: Any) -> None:
    page.on("dialog", lambda dialog: dialog.accept())
    login(page, "admin")
    page.get_by_role("link", name="短信模板").click()
    section = page.locator("#tpl-reschedule_request")
    section.get_by_label("内容").fill("【改约】工单{external_id}客户要求改约，请联系。")
    section.get_by_role("button", name="保存").click()
    expect(page.locator(".flash.ok")).to_contain_text("已保存短信模板")
    section = page.locator("#tpl-reschedule_request")
    expect(section).to_contain_text("已修改")
    expect(section.locator(".segments")).to_contain_text(
        "示例：【改约】工单10000-20261125-000123客户要求改约，请联系。"
    )
    expect(section.locator(".segments")).to_contain_text("1 条")
    screenshot(page, "admin-templates")
    section.get_by_role("button", name="恢复默认").click()
    expect(page.locator(".flash.ok")).to_contain_text("默认内容")
    expect(page.locator("#tpl-reschedule_request")).not_to_contain_text("已修改")


def test_an_admin_creates_an_api_key_that_is_shown_once_and_then_revokes_it(page: Any) -> None:
    name = f"browser-{uuid.uuid4().hex[:6]}"
    page.on("dialog", lambda dialog: dialog.accept())
    login(page, "admin")
    page.get_by_role("link", name="用户与密钥").click()
    expect(page.locator('tr[data-username="admin"]')).to_contain_text("当前登录")
    screenshot(page, "admin-users")
    page.get_by_label("密钥名称").fill(name)
    page.get_by_label("计费（BOSS）").check()
    page.get_by_role("button", name="新建密钥").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    expect(page.get_by_role("alert")).to_contain_text("只显示这一次")
    raw = page.locator("#new-api-key").input_value()
    assert KEY_PATTERN.match(raw), raw
    screenshot(page, "admin-api-key-created")

    me = page.request.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {raw}"})
    assert me.status == 200 and me.json()["scopes"] == ["billing"]

    page.get_by_role("link", name="我已保存，返回用户与密钥").click()
    row = page.locator(f'tr[data-key-name="{name}"]')
    expect(row).to_contain_text("有效")
    expect(row).to_contain_text(f"dk_{raw.split('_')[1]}_…")
    assert raw.split("_", 2)[2] not in page.content()  # never shown again
    page.reload()
    assert raw.split("_", 2)[2] not in page.content()

    row.get_by_role("button", name="吊销").click()
    expect(page.locator(".flash.ok")).to_have_text("已吊销该 API 密钥")
    expect(page.locator(f'tr[data-key-name="{name}"] .state')).not_to_contain_text("有效")
    refused = page.request.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {raw}"})
    assert refused.status == 401
