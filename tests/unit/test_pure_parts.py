"""Pure parts without an app: phone numbers, configuration, the clock, errors, the intake fingerprint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatch.clock import FakeClock, SystemClock
from dispatch.config import ConfigError, load_config, normalise_database_url
from dispatch.errors import InvalidTransition, PreconditionFailed, ValidationError
from dispatch.phones import InvalidPhone, mask_phone, normalise_cn_mobile
from dispatch.services.intake import fingerprint


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("13800138000", "+8613800138000"),
        ("+86 138-0013-8000", "+8613800138000"),
        ("008613800138000", "+8613800138000"),
        ("19912345678", "+8619912345678"),
    ],
)
def test_chinese_mobile_numbers_are_normalised_to_e164(raw, e164):
    assert normalise_cn_mobile(raw) == e164


@pytest.mark.parametrize("raw", ["", "12345", "0871-63123456", "+14155550100", "1380013800x", "23800138000"])
def test_anything_but_a_chinese_mobile_is_rejected(raw):
    with pytest.raises(InvalidPhone):
        normalise_cn_mobile(raw)


def test_masked_phone_keeps_prefix_and_last_four():
    assert mask_phone("+8613800138000") == "+86138****8000"


def test_plain_postgres_urls_use_psycopg3():
    assert normalise_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_production_requires_a_secret_key(monkeypatch):
    monkeypatch.setenv("DISPATCH_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError):
        load_config()
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    assert load_config()["SECRET_KEY"] == "s3cret"


def test_development_gets_a_random_secret_and_contract_defaults(monkeypatch):
    for name in ("DISPATCH_ENV", "SECRET_KEY", "DATABASE_URL", "AUTO_DISPATCH", "SCHEDULER_TICK_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    first, second = load_config(), load_config()
    assert first["SECRET_KEY"] != second["SECRET_KEY"]
    assert first["SQLALCHEMY_DATABASE_URI"].endswith("instance/dispatch.db")
    assert first["DISPATCH_TZ"] == "Asia/Shanghai"
    assert first["SCHEDULER_TICK_SECONDS"] == 5
    assert first["SMS_BACKEND"] == "outbox"
    assert first["QUIET_HOURS"] == "21:00-08:00"
    assert first["AUTO_DISPATCH"] is False


def test_bad_integer_setting_is_a_config_error(monkeypatch):
    monkeypatch.setenv("SCHEDULER_TICK_SECONDS", "soon")
    with pytest.raises(ConfigError, match="SCHEDULER_TICK_SECONDS"):
        load_config()


def test_fake_clock_moves_only_when_told():
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    assert clock.now() == clock.now()
    clock.advance(minutes=90)
    assert clock.now() == datetime(2026, 1, 1, 1, 30, tzinfo=UTC)
    clock.set(datetime(2026, 1, 2, 8, tzinfo=timezone(timedelta(hours=8))))
    assert clock.now() == datetime(2026, 1, 2, 0, tzinfo=UTC)


def test_system_clock_is_aware_utc():
    assert SystemClock().now().tzinfo is UTC


def test_invalid_transition_carries_the_current_status():
    body = InvalidTransition("take", "completed").to_dict()
    assert body["code"] == 409
    assert body["status"] == "completed"
    assert "take" in body["message"]


def test_precondition_and_validation_errors_name_what_is_missing():
    assert PreconditionFailed(missing=["id_card_photo"]).to_dict()["missing"] == ["id_card_photo"]
    body = ValidationError(errors={"reason_code": ["bad"]}).to_dict()
    assert body == {"code": 422, "message": "Validation failed", "errors": {"reason_code": ["bad"]}}


def test_intake_fingerprint_ignores_key_order_and_time_zone_notation():
    at = datetime(2026, 11, 26, 9, tzinfo=timezone(timedelta(hours=8)))
    a = {"external_id": "x", "window": {"start": at, "end": at + timedelta(hours=3)}}
    b = {
        "window": {"end": (at + timedelta(hours=3)).astimezone(UTC), "start": at.astimezone(UTC)},
        "external_id": "x",
    }
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "external_id": "y"})


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("PLAN_SERVICE_MINUTES", "repair=soon", "repair: minutes must be an integer"),
        ("PLAN_SERVICE_MINUTES", "repair=0", "between 1 and 480"),
        ("PLAN_SERVICE_MINUTES", "teleport=30", "expected name=value"),
        ("KPI_COMPLETION_TARGETS", "repair=high", "repair: not a number"),
        ("KPI_COMPLAINT_TARGETS", "appointment", "expected name=value"),
    ],
)
def test_a_bad_name_value_setting_is_a_config_error_naming_the_setting(monkeypatch, name, raw, message):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ConfigError, match="KPI targets" if name.startswith("KPI") else name) as raised:
        load_config()
    assert message in str(raised.value)


def test_service_minutes_override_only_the_types_named() -> None:
    from dispatch.planning.day import DEFAULT_SERVICE_MINUTES, parse_service_minutes

    minutes = parse_service_minutes(" repair = 45 , move=90,")
    assert minutes["repair"] == 45 and minutes["move"] == 90
    assert minutes["broadband_install"] == DEFAULT_SERVICE_MINUTES
