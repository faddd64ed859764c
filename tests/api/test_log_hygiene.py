"""Secrets and personal data stay out of the logs (shared/QUALITY.md "Security and bad input").

Passwords and API keys never reach a log line: not on a sign-in (right or wrong), not on a request made with
a key. A database error's message, which ``log.exception`` writes with its traceback, carries no bound values
(the engine runs with ``hide_parameters``, dispatch/config.py): a customer's name, phone or address does not
leak that way. PostgreSQL's own DETAIL of a unique violation still names the duplicate key's value; the API's
error handlers (api/common/errors.py) log only the exception's class for those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from dispatch.extensions import db
from dispatch.models import Customer
from tests.conftest import bearer, intake_payload


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter()
    return "\n".join(
        f"{r.getMessage()} {formatter.formatException(r.exc_info) if r.exc_info else ''}"
        for r in caplog.records
    )


def test_passwords_and_api_keys_appear_in_no_log_line(
    client: FlaskClient,
    make_user: Callable[..., Any],
    api_key: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = make_user("dispatcher")
    caplog.set_level(logging.DEBUG)
    wrong = client.post("/api/v1/auth/token", json={"username": user.username, "password": "Wr0ng-Secret!"})
    assert wrong.status_code == 401
    right = client.post("/api/v1/auth/token", json={"username": user.username, "password": "password123"})
    assert right.status_code == 200
    access = right.get_json()["access_token"]
    assert client.get("/api/v1/orders", headers=bearer(access)).status_code == 200
    key = api_key("intake")
    assert client.post("/api/v1/intake/orders", json=intake_payload(), headers=bearer(key)).status_code == 201
    assert client.get("/api/v1/orders", headers=bearer(key)).status_code in (401, 403)

    text = _logged(caplog)
    assert caplog.records  # the access log did write lines
    for secret in ("Wr0ng-Secret!", "password123", access, key):
        assert secret not in text


def test_a_database_error_message_carries_no_bound_values(app: Flask) -> None:
    assert db.engine.hide_parameters
    phone = "+8613912345678"
    now = datetime.now(UTC)
    db.session.add(Customer(name="张三", phone=phone, created_at=now))
    db.session.commit()
    with pytest.raises(sa.exc.IntegrityError) as caught:
        db.session.add(Customer(name="李四", phone=phone, created_at=now))
        db.session.commit()
    db.session.rollback()
    message = str(caught.value)
    assert "李四" not in message  # a bound value; (PostgreSQL's own DETAIL names the duplicate key's value)
    assert "parameters hidden" in message
