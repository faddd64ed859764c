"""The console works under its Content-Security-Policy (api/ops.py), and so does Swagger UI under its own.

Every page an admin can reach from the navigation, an order's detail page and /docs are loaded in chromium;
any CSP violation (an inline script or event handler, an asset from elsewhere) shows up as a console error.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import login


def _watch(page: Any) -> list[str]:
    """Console errors and uncaught exceptions; chromium reports a CSP block as "Refused to ..." (a 404, such
    as /favicon.ico, is a "Failed to load resource" error and not the point here)."""
    problems: list[str] = []

    def on_console(msg: Any) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            problems.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    return problems


def test_console_pages_run_under_the_csp_without_violations(page: Any) -> None:
    problems = _watch(page)
    login(page, "admin")
    hrefs = page.eval_on_selector_all("header nav a", "els => els.map(e => e.getAttribute('href'))")
    assert len(hrefs) >= 5, hrefs
    for href in hrefs:
        response = page.goto(href)
        assert response is not None and response.ok, href
        assert "script-src 'self'" in response.headers["content-security-policy"], href
        page.wait_for_load_state("networkidle")
    page.goto("/console/board")
    page.locator("a[href*='/console/orders/']").first.click()
    page.wait_for_load_state("networkidle")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert not problems, problems


def test_swagger_ui_renders_under_its_own_policy(page: Any) -> None:
    problems = _watch(page)
    response = page.goto("/docs")
    assert response is not None and response.ok
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    expect(page.locator(".opblock").first).to_be_visible()  # the spec was fetched and the operations drawn
    assert not problems, problems
