"""A live console for the browser: the app on its own SQLite file with the demo data, served by a thread.

Playwright drives Debian's chromium (``CHROMIUM_PATH``, default /usr/bin/chromium; .ci/run installs it):
Playwright's own browser download is not reachable from here (shared/reference/library-notes.md §6).
Every browser test is marked ``slow``. Screenshots of the main pages go to tests/browser/screenshots/.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from dispatch.extensions import db
from tests.conftest import make_app, migrate_up

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"
LOGINS = {
    "admin": "admin123",
    "dispatcher": "dispatch123",
    "acceptance": "accept123",
    "manager": "manager123",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.slow)


class LiveConsole:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveConsole:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(scope="session")
def live_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """The app with the Kunming demo data (real clock: the demo's month ends now), on its own database."""
    url = f"sqlite:///{tmp_path_factory.mktemp('console') / 'console.db'}"
    app = make_app(url, UPLOAD_DIR=str(tmp_path_factory.mktemp("uploads")))
    migrate_up(app)
    from dispatch.clock import SystemClock
    from dispatch.demo import seed_demo

    app.extensions["clock"] = SystemClock()
    with app.app_context():
        seed_demo()
        db.session.remove()
    with LiveConsole(app) as live:
        yield live
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not installed at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, live_console: LiveConsole) -> Iterator[Any]:
    context = browser.new_context(
        base_url=live_console.url, viewport={"width": 1400, "height": 900}, locale="zh-CN"
    )
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    context.close()


def login(page: Any, username: str) -> None:
    """Sign in through the login form as one of the demo users."""
    page.goto("/console/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(LOGINS[username])
    page.get_by_role("button", name="登录").click()
    page.wait_for_load_state("networkidle")


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
