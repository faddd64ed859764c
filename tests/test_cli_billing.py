"""``flask billing-settlement``: the day's settlement file for BOSS, and ``--verify`` for one received."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask

from dispatch.billing import feed, settlement
from dispatch.extensions import db
from tests.conftest import T0
from tests.test_cli import run


def emit_day() -> None:
    """Two events on the business day 2026-11-30 (Asia/Shanghai), one on the day before."""
    for key, at in (
        ("cli:1", datetime(2026, 11, 29, 16, 0, tzinfo=UTC)),  # 00:00 on the 30th
        ("cli:2", datetime(2026, 11, 30, 15, 0, tzinfo=UTC)),  # 23:00 on the 30th
        ("cli:3", datetime(2026, 11, 29, 15, 0, tzinfo=UTC)),  # 23:00 on the 29th
    ):
        payload = {"order": {"external_id": key}, "pay_mode": "install_then_pay", "products": ["bb"]}
        feed.record("order.completed", dedupe_key=key, occurred_at=at, payload=payload, now=T0)
    db.session.commit()


def test_billing_settlement_writes_the_days_file_and_prints_path_and_trailer(
    app: Flask, tmp_path: Path
) -> None:
    emit_day()

    result = run(app, "billing-settlement", "--day", "2026-11-30", "--out", str(tmp_path))

    assert result.exit_code == 0, result.output
    path = tmp_path / "settlement-20261130.csv"
    parsed = settlement.read_settlement(path)
    assert [d["order_external_id"] for d in parsed.details] == ["cli:1", "cli:2"]
    assert result.output.splitlines() == [str(path), parsed.trailer]
    assert parsed.trailer.startswith("T,2,2,0,0,0,")


def test_billing_settlement_defaults_to_settlement_dir(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "SETTLEMENT_DIR", str(tmp_path / "out"))
    emit_day()

    result = run(app, "billing-settlement", "--day", "2026-11-29")

    assert result.exit_code == 0, result.output
    assert len(settlement.read_settlement(tmp_path / "out" / "settlement-20261129.csv").details) == 1


def test_billing_settlement_verify_accepts_a_good_file_and_refuses_a_tampered_one(
    app: Flask, tmp_path: Path
) -> None:
    emit_day()
    assert run(app, "billing-settlement", "--day", "2026-11-30", "--out", str(tmp_path)).exit_code == 0
    path = tmp_path / "settlement-20261130.csv"

    ok = run(app, "billing-settlement", "--verify", str(path))
    assert ok.exit_code == 0 and "ok, 2 records for 2026-11-30" in ok.output

    path.write_bytes(path.read_bytes().replace(b"cli:2", b"cli:9"))
    bad = run(app, "billing-settlement", "--verify", str(path))
    assert bad.exit_code != 0 and "SHA-256" in bad.output


def test_billing_settlement_refuses_a_malformed_day(app: Flask, tmp_path: Path) -> None:
    result = run(app, "billing-settlement", "--day", "30.11.2026", "--out", str(tmp_path))

    assert result.exit_code != 0 and "--day" in result.output
    assert list(tmp_path.iterdir()) == []
