"""Signing in and out of the console."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import LOGINS, login, screenshot


def test_a_wrong_password_keeps_the_user_out_with_a_message(page: Any) -> None:
    page.goto("/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))  # sent to sign in first
    page.get_by_label("用户名").fill("dispatcher")
    page.get_by_label("密码").fill("wrong-password")
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("alert")).to_have_text("用户名或密码错误")
    screenshot(page, "login")


def test_each_role_lands_on_its_page_and_signs_out(page: Any) -> None:
    for username, title in (("dispatcher", "工单看板"), ("acceptance", "受理台"), ("manager", "KPI 看板")):
        login(page, username)
        expect(page.get_by_role("heading", level=1)).to_contain_text(title)
        expect(page.locator("header .who")).to_contain_text(username)
        page.get_by_role("button", name="退出").click()
        expect(page).to_have_url("/console/login")
        page.goto("/console/")
        expect(page.get_by_role("button", name="登录")).to_be_visible()  # the session is gone
    assert set(LOGINS) >= {"dispatcher", "acceptance", "manager"}
