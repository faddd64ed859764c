"""INTAKE_RATE_LIMIT: hotline intake (orders and complaints together) is limited per API key (CONTRACT §3).

A 429 is the JSON error with ``Retry-After``.

The limiter is switched on for a second app on the same migrated database (``make_app`` switches it off for
every other test), with a tiny limit and the default memory storage. API keys are committed for that app to
see them (``committed_app`` empties the tables afterwards). Across processes (Redis):
tests/reliability/test_rate_limits_redis.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from api.common.limits import limiter
from dispatch.config import ConfigError, load_config
from dispatch.extensions import db
from dispatch.models import Order
from tests.conftest import bearer, intake_payload, make_app

LIMIT = 3
ORDERS = "/api/v1/intake/orders"
COMPLAINTS = "/api/v1/intake/complaints"


@pytest.fixture
def limited_app(committed_app: Flask, backend: str) -> Iterator[Flask]:
    app = make_app(backend, RATELIMIT_ENABLED=True, INTAKE_RATE_LIMIT=f"{LIMIT} per minute")
    with app.app_context():
        limiter.reset()
    yield app
    with app.app_context():
        limiter.reset()
        db.engine.dispose()


@pytest.fixture
def limited(limited_app: Flask) -> FlaskClient:
    return limited_app.test_client()


def post_order(client: FlaskClient, key: str, ip: str = "10.9.0.1", **headers: str) -> Any:
    return client.post(
        ORDERS, json=intake_payload(), headers={**bearer(key), **headers}, environ_base={"REMOTE_ADDR": ip}
    )


def complaint_body(n: int) -> dict[str, Any]:
    return {
        "external_id": f"C-20261125-{n:04d}",
        "order_external_id": None,
        "category": "appointment",
        "cause": "installation_service",
        "received_at": "2026-11-25T08:30:00+08:00",
        "text": "工程师未按约上门",
    }


def assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert response.is_json
    body = response.get_json()
    assert body["code"] == 429
    assert isinstance(body["message"], str) and "API key" in body["message"]
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit()
    assert 0 <= int(retry_after) <= 60


def order_count(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(sa.select(sa.func.count()).select_from(Order))
        db.session.remove()
        return int(count or 0)


def test_the_request_over_the_limit_is_429_with_retry_after_and_creates_nothing(
    limited_app: Flask, limited: FlaskClient, api_key: Callable[[str], str]
) -> None:
    key = api_key("intake")
    for _ in range(LIMIT):
        assert post_order(limited, key).status_code == 201
    assert order_count(limited_app) == LIMIT

    assert_rate_limited(post_order(limited, key))
    assert order_count(limited_app) == LIMIT


def test_orders_and_complaints_share_one_budget_per_key(
    limited: FlaskClient, api_key: Callable[[str], str]
) -> None:
    key = api_key("intake")
    assert post_order(limited, key).status_code == 201
    for n in range(LIMIT - 1):
        response = limited.post(COMPLAINTS, json=complaint_body(n), headers=bearer(key))
        assert response.status_code == 201, response.get_json()
    assert_rate_limited(limited.post(COMPLAINTS, json=complaint_body(99), headers=bearer(key)))
    assert_rate_limited(post_order(limited, key))


def test_the_intake_limit_is_hit_without_flask_limiter_s_per_request_resolution(
    limited: FlaskClient, api_key: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """api.common.limits.intake_limit counts through limiter.limiter directly (Flask-Limiter's decorator
    resolves the view's limits on every request): with that resolution broken the limit still holds."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Flask-Limiter's limit resolution ran")

    monkeypatch.setattr(limiter.limit_manager, "resolve_limits", broken)
    key = api_key("intake")
    for _ in range(LIMIT):
        assert post_order(limited, key).status_code == 201
    assert_rate_limited(post_order(limited, key))


def test_a_failed_hit_is_counted_by_flask_limiter_s_own_check_in_the_same_bucket(
    limited_app: Flask, limited: FlaskClient, api_key: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hit that raises (the storage failing) hands the request to Flask-Limiter's own check of the same
    limit (which falls back to memory if the storage stays down); both count in one bucket per key."""
    key = api_key("intake")
    with limited_app.app_context():
        strategy = limiter.limiter
    real_hit, calls = strategy.hit, []

    def hit_failing_once(*args: Any, **kwargs: Any) -> bool:
        calls.append(args)
        if len(calls) == 1:
            raise ConnectionError("storage unreachable")
        return real_hit(*args, **kwargs)

    monkeypatch.setattr(strategy, "hit", hit_failing_once)
    assert post_order(limited, key).status_code == 201  # counted by Flask-Limiter's own check
    assert len(calls) == 2 and calls[0] == calls[1]  # the same limit, key and scope
    for _ in range(LIMIT - 1):
        assert post_order(limited, key).status_code == 201
    assert_rate_limited(post_order(limited, key))


def test_the_limit_is_per_key_not_per_address(limited: FlaskClient, api_key: Callable[[str], str]) -> None:
    first, second = api_key("intake"), api_key("intake")
    for n in range(LIMIT):
        assert post_order(limited, first, ip=f"10.9.1.{n}").status_code == 201
    assert_rate_limited(post_order(limited, first, ip="10.9.1.200"))  # a fresh address does not help
    # Another key from the very address that was limited still gets through, up to its own limit.
    for _ in range(LIMIT):
        assert post_order(limited, second, ip="10.9.1.200").status_code == 201
    assert_rate_limited(post_order(limited, second, ip="10.9.1.200"))


def test_requests_without_valid_credentials_get_401_and_count_against_no_key(
    limited: FlaskClient, api_key: Callable[[str], str]
) -> None:
    for _ in range(2 * LIMIT):
        assert limited.post(ORDERS, json=intake_payload()).status_code == 401
        assert post_order(limited, "dk_nope_nope").status_code == 401
    key = api_key("intake")
    for _ in range(LIMIT):
        assert post_order(limited, key).status_code == 201


def test_a_rate_limited_request_is_not_stored_under_its_idempotency_key(
    limited_app: Flask, limited: FlaskClient, api_key: Callable[[str], str]
) -> None:
    key = api_key("intake")
    for _ in range(LIMIT):
        assert post_order(limited, key).status_code == 201
    body = intake_payload()
    headers = {**bearer(key), "Idempotency-Key": "retry-after-429"}
    assert_rate_limited(limited.post(ORDERS, json=body, headers=headers))
    with limited_app.app_context():
        limiter.reset()  # the window passes
    assert limited.post(ORDERS, json=body, headers=headers).status_code == 201


def test_intake_is_unlimited_in_apps_configured_without_rate_limits(
    limited: FlaskClient, committed_app: Flask, api_key: Callable[[str], str]
) -> None:
    """The limiter is a process-wide singleton: the limited app must not switch it on for the others."""
    unlimited = committed_app.test_client()
    key = api_key("intake")
    for _ in range(2 * LIMIT):
        assert post_order(unlimited, key).status_code == 201


def test_the_openapi_document_lists_429_for_both_intake_endpoints(limited: FlaskClient) -> None:
    paths = limited.get("/openapi.json").get_json()["paths"]
    for path in (ORDERS, COMPLAINTS):
        assert "429" in paths[path]["post"]["responses"]


def test_intake_rate_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTAKE_RATE_LIMIT", raising=False)
    assert load_config()["INTAKE_RATE_LIMIT"] == "6000 per minute"
    monkeypatch.setenv("INTAKE_RATE_LIMIT", "100 per second")
    assert load_config()["INTAKE_RATE_LIMIT"] == "100 per second"
    monkeypatch.setenv("INTAKE_RATE_LIMIT", "lots per minute")
    with pytest.raises(ConfigError, match="INTAKE_RATE_LIMIT"):
        load_config()


FALLBACK_SCRIPT = """
import json, sys
from tests.conftest import intake_payload, make_app
url, key, port = sys.argv[1:4]
app = make_app(url, RATELIMIT_ENABLED=True, RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{port}/0",
               INTAKE_RATE_LIMIT="3 per minute", LOGIN_RATE_LIMIT="3 per minute")
client = app.test_client()
hotline = {"Authorization": "Bearer " + key}
intake = [client.post("/api/v1/intake/orders", json=intake_payload(), headers=hotline) for _ in range(4)]
logins = [client.post("/api/v1/auth/token", json={"username": "nobody", "password": "wrong-password"})
          for _ in range(4)]
print(json.dumps({"intake": [r.status_code for r in intake], "login": [r.status_code for r in logins],
                  "retry_after": intake[-1].headers.get("Retry-After")}))
"""


def test_unreachable_rate_limit_storage_falls_back_to_memory_instead_of_failing(
    committed_app: Flask, backend: str, api_key: Callable[[str], str]
) -> None:
    """Redis down: limits are counted in the process's memory meanwhile; no request fails with a 500.
    In a child process: the storage's state is per process and must not leak into the other tests."""
    key = api_key("intake")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT, backend, key, str(port)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["intake"] == [201, 201, 201, 429]
    assert result["login"] == [401, 401, 401, 429]
    assert result["retry_after"] and result["retry_after"].isdigit()


def test_limits_are_checked_by_the_views_decorators_only(limited_app: Flask) -> None:
    """api.common.limits.install drops Flask-Limiter's before-request check (it would find no default or
    application limits to check); the decorators' limits above still hold. On an app with the limiter on:
    with RATELIMIT_ENABLED off, init_app adds no hooks at all."""
    assert limiter in limited_app.extensions["limiter"]  # init_app ran in full: its hooks were added
    assert limiter._check_request_limit not in limited_app.before_request_funcs[None]
    assert not limiter.limit_manager.default_limits and not limiter.limit_manager.application_limits
