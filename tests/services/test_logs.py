"""Logged tracebacks keep the values a database error quotes out of the log (dispatch/logs.py)."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from flask import Flask

from dispatch.extensions import db
from dispatch.logs import log_exception, redact
from dispatch.models import Customer

PHONE = "+8613912345678"


def test_a_unique_violation_logged_with_its_traceback_does_not_show_the_value(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    insert = sa.insert(Customer).values(name="王五", phone=PHONE, created_at=sa.func.now())
    db.session.execute(insert)
    log = logging.getLogger("dispatch.test")
    with caplog.at_level(logging.ERROR, logger="dispatch.test"):
        try:
            db.session.execute(insert)
        except sa.exc.IntegrityError:
            log_exception(log, "insert %s failed", "customer")
    db.session.rollback()

    (record,) = caplog.records
    text = record.getMessage()
    assert text.startswith("insert customer failed\nTraceback")
    assert "IntegrityError" in text
    assert PHONE not in text and "13912345678" not in text


def test_redact_removes_postgres_details_and_quoted_rows() -> None:
    message = (
        'duplicate key value violates unique constraint "uq_customers_phone"\n'
        "DETAIL:  Key (phone)=(+8613912345678) already exists.\n"
        'new row for relation "orders" violates check constraint "ck"\n'
        "DETAIL:  Failing row contains (1, 张三, 530102199001011234)."
    )
    redacted = redact(message)
    assert "13912345678" not in redacted and "530102199001011234" not in redacted and "张三" not in redacted
    assert redacted.count("DETAIL: (redacted)") == 2
    assert 'violates unique constraint "uq_customers_phone"' in redacted
    assert redact("Key (phone)=(+86139) is not present") == "Key (phone)=(…) is not present"
