"""Security headers on every response (api/ops.py), the console's Content-Security-Policy, and templates that
stay inside it. tests/browser/test_csp.py loads the pages in chromium under the same policies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.ops import CONSOLE_CSP, DOCS_CSP
from tests.conftest import bearer, intake_payload, make_app

TEMPLATES = Path(__file__).resolve().parents[2] / "api" / "console" / "templates" / "console"
COMMON = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}


def _assert_common(response: object, what: str) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    for name, value in COMMON.items():
        assert headers.get(name) == value, f"{what}: {name} = {headers.get(name)!r}"


@pytest.fixture(scope="module")
def offline_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    app = make_app(
        f"sqlite:///{tmp_path_factory.mktemp('headers') / 'unused.db'}", PROPAGATE_EXCEPTIONS=False
    )

    @app.get("/__boom")
    def boom() -> str:
        raise RuntimeError("boom")

    return app


@pytest.mark.parametrize(
    "path",
    [
        "/docs",
        "/openapi.json",
        "/static/swagger-ui/swagger-ui.css",
        "/console/login",
        "/console/",
        "/console/no-such-page",
        "/console/static/console.js",
        "/api/v1/orders",
        "/mobile/v1/orders",
        "/no-such-path",
        "/__boom",
    ],
)
def test_every_response_carries_the_security_headers(offline_app: Flask, path: str) -> None:
    with offline_app.test_client().get(path) as response:  # closes a static file's stream
        _assert_common(response, f"GET {path} ({response.status_code})")


def test_console_pages_get_the_strict_csp(offline_app: Flask) -> None:
    client = offline_app.test_client()
    for path in ("/console/login", "/console/", "/console/no-such-page"):
        response = client.get(path)
        assert response.headers["Content-Security-Policy"] == CONSOLE_CSP, path
    policy = dict(part.strip().split(" ", 1) for part in CONSOLE_CSP.split(";"))
    assert policy["script-src"] == "'self'"  # no inline script, no eval
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"
    assert policy["form-action"] == "'self'"


def test_swagger_ui_gets_its_own_policy_and_the_api_the_plain_headers(offline_app: Flask) -> None:
    client = offline_app.test_client()
    assert client.get("/docs").headers["Content-Security-Policy"] == DOCS_CSP
    assert "frame-ancestors 'none'" in DOCS_CSP
    assert "Content-Security-Policy" not in client.get("/openapi.json").headers


def test_api_writes_and_errors_carry_the_headers(client: FlaskClient, api_key: object) -> None:
    key = api_key("intake")  # type: ignore[operator]
    created = client.post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(key))
    assert created.status_code == 201
    _assert_common(created, "intake 201")
    rejected = client.post("/api/v1/intake/orders", data="x", headers=bearer(key))
    assert rejected.status_code == 415
    _assert_common(rejected, "intake 415")


INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
JS_URL = re.compile(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)


def test_console_templates_have_no_inline_script_or_event_handler() -> None:
    templates = sorted(TEMPLATES.glob("*.html"))
    assert templates
    for path in templates:
        text = path.read_text()
        for pattern in (INLINE_SCRIPT, EVENT_HANDLER, JS_URL):
            match = pattern.search(text)
            assert match is None, (
                f"{path.name}: {match.group(0) if match else ''} is blocked by the console CSP"
            )
