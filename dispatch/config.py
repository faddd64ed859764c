"""Settings from the environment (shared/CONTRACT.md §2)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = REPO_ROOT / "instance"
GEOCODERS = ("none", "nominatim")
SMS_BACKENDS = ("outbox", "twilio")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable configuration."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _check_geocoder(cfg: dict[str, Any]) -> None:
    """Refuse at start what the geocoding job could only fail on later."""
    kind = cfg["GEOCODER"]
    if kind not in GEOCODERS:
        raise ConfigError(f"GEOCODER must be one of {', '.join(GEOCODERS)}, got {kind!r}")
    if kind == "nominatim":
        # Imported here: geopy is loaded only when a geocoder is configured, and the URL is parsed by the
        # same code that builds the geocoder.
        from dispatch.geo.geocoding import parse_nominatim_url

        parse_nominatim_url(cfg.get("NOMINATIM_URL"))
    if float(cfg["GEOCODER_TIMEOUT_SECONDS"]) <= 0:
        raise ConfigError("GEOCODER_TIMEOUT_SECONDS must be positive")
    if float(cfg["GEOCODER_MIN_DELAY_SECONDS"]) < 0:
        raise ConfigError("GEOCODER_MIN_DELAY_SECONDS must not be negative")
    if float(cfg["GEOCODE_MAX_KM_FROM_DISTRICT"]) <= 0:
        raise ConfigError("GEOCODE_MAX_KM_FROM_DISTRICT must be positive")
    if int(cfg["GEOCODE_MAX_ATTEMPTS"]) < 1:
        raise ConfigError("GEOCODE_MAX_ATTEMPTS must be at least 1")


def _check_sms(cfg: dict[str, Any]) -> None:
    """Refuse at start an SMS setup the relay could only fail on later."""
    backend = cfg["SMS_BACKEND"]
    if backend not in SMS_BACKENDS:
        raise ConfigError(f"SMS_BACKEND must be one of {', '.join(SMS_BACKENDS)}, got {backend!r}")
    if backend == "twilio":
        missing = [k for k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM") if not cfg.get(k)]
        if missing:
            raise ConfigError(f"SMS_BACKEND=twilio needs {', '.join(missing)}")
    if float(cfg["TWILIO_TIMEOUT_SECONDS"]) <= 0:
        raise ConfigError("TWILIO_TIMEOUT_SECONDS must be positive")
    if float(cfg["SMS_RETRY_SECONDS"]) <= 0:
        raise ConfigError("SMS_RETRY_SECONDS must be positive")
    for name in ("SMS_PER_NUMBER_PER_HOUR", "SMS_MAX_ATTEMPTS"):
        if int(cfg[name]) < 1:
            raise ConfigError(f"{name} must be at least 1")


def _check_billing(cfg: dict[str, Any]) -> None:
    """Refuse at start a billing push the relay could only fail on later."""
    url = cfg.get("BILLING_WEBHOOK_URL")
    if url:
        if not str(url).startswith(("http://", "https://")):
            raise ConfigError(f"BILLING_WEBHOOK_URL must be an http(s) URL, got {url!r}")
        if not cfg.get("BILLING_WEBHOOK_SECRET"):
            # An unsigned push could not be told from a forged one by the receiver.
            raise ConfigError("BILLING_WEBHOOK_URL needs BILLING_WEBHOOK_SECRET")
    for name in ("BILLING_WEBHOOK_TIMEOUT_SECONDS", "BILLING_RETRY_SECONDS"):
        if float(cfg[name]) <= 0:
            raise ConfigError(f"{name} must be positive")
    if float(cfg["BILLING_MAX_BACKOFF_SECONDS"]) < float(cfg["BILLING_RETRY_SECONDS"]):
        raise ConfigError("BILLING_MAX_BACKOFF_SECONDS must not be below BILLING_RETRY_SECONDS")


def _check_texts(cfg: dict[str, Any]) -> None:
    """Settings written in a small syntax of their own: parsed once at start, so a typo fails fast."""
    from dispatch.assignment.scoring import Weights
    from dispatch.messaging.policy import parse_quiet_hours
    from dispatch.planning.day import parse_service_minutes
    from dispatch.reporting.kpi import Targets

    try:
        parse_quiet_hours(cfg["QUIET_HOURS"] or "")
    except ValueError as exc:
        raise ConfigError(f"QUIET_HOURS: {exc}") from None
    try:
        Weights.parse(cfg["ASSIGNMENT_WEIGHTS"])
    except ValueError as exc:
        raise ConfigError(f"ASSIGNMENT_WEIGHTS: {exc}") from None
    try:
        Targets.parse(cfg["KPI_COMPLETION_TARGETS"], cfg["KPI_COMPLAINT_TARGETS"])
    except ValueError as exc:
        raise ConfigError(f"KPI targets: {exc}") from None
    try:
        parse_service_minutes(cfg["PLAN_SERVICE_MINUTES"])
    except ValueError as exc:
        raise ConfigError(f"PLAN_SERVICE_MINUTES: {exc}") from None
    if not 0 < float(cfg["PLAN_SPEED_KMH"]) <= 200:
        raise ConfigError("PLAN_SPEED_KMH must be above 0 and at most 200")
    if not 0 < float(cfg["PLAN_TIME_LIMIT_SECONDS"]) <= 30:
        raise ConfigError("PLAN_TIME_LIMIT_SECONDS must be above 0 and at most 30")
    from limits import parse_many  # Flask-Limiter's own parser of "6000 per minute"

    for name in ("LOGIN_RATE_LIMIT", "INTAKE_RATE_LIMIT"):
        try:
            parse_many(str(cfg[name]))
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None


REDISPATCH_TRIGGERS = ("return", "take_breach")


def redispatch_triggers(raw: str | tuple[str, ...] | None, auto_dispatch: bool) -> tuple[str, ...]:
    """``AUTO_REDISPATCH``: unset follows ``AUTO_DISPATCH`` (both triggers when on), ``off`` none, or a
    comma list of ``return`` and ``take_breach``."""
    if isinstance(raw, tuple):
        return raw
    if raw is None or raw.strip() == "":
        return REDISPATCH_TRIGGERS if auto_dispatch else ()
    if raw.strip() == "off":
        return ()
    triggers = tuple(t.strip() for t in raw.split(",") if t.strip())
    unknown = sorted(set(triggers) - set(REDISPATCH_TRIGGERS))
    if unknown:
        raise ConfigError(
            f"AUTO_REDISPATCH: unknown trigger(s) {', '.join(unknown)}; use return, take_breach or off"
        )
    return triggers


def normalise_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``postgres://`` URLs and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from the environment, then apply ``overrides``."""
    production = _env("DISPATCH_ENV", "development") == "production"
    secret = os.environ.get("SECRET_KEY")
    if not secret:
        if production:
            raise ConfigError("SECRET_KEY is required when DISPATCH_ENV=production")
        secret = secrets.token_hex(32)
    cfg: dict[str, Any] = {
        "DISPATCH_ENV": "production" if production else "development",
        "SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": normalise_database_url(
            _env("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'dispatch.db'}")
        ),
        # No ping before each checkout by default (a round trip on every request, the intake's costliest part
        # after its own statements): a connection the server dropped fails on first use instead, the request
        # answers 503 with Retry-After, and SQLAlchemy then retires every connection pooled before the
        # failure, so one request per worker is refused after a database restart (tests/reliability).
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": _env("DB_POOL_PRE_PING", "off") == "on"},
        "DISPATCH_TZ": _env("DISPATCH_TZ", "Asia/Shanghai"),
        "SCHEDULER_TICK_SECONDS": _int("SCHEDULER_TICK_SECONDS", 5),
        "SMS_BACKEND": _env("SMS_BACKEND", "outbox"),
        "TWILIO_ACCOUNT_SID": os.environ.get("TWILIO_ACCOUNT_SID"),
        "TWILIO_AUTH_TOKEN": os.environ.get("TWILIO_AUTH_TOKEN"),
        "TWILIO_FROM": os.environ.get("TWILIO_FROM"),
        "TWILIO_API_BASE_URL": _env("TWILIO_API_BASE_URL", "https://api.twilio.com"),
        # SMS delivery (dispatch/messaging/relay.py): per-request timeout, per-number hourly limit, retries.
        "TWILIO_TIMEOUT_SECONDS": _float("TWILIO_TIMEOUT_SECONDS", 10.0),
        "SMS_PER_NUMBER_PER_HOUR": _int("SMS_PER_NUMBER_PER_HOUR", 10),
        "SMS_MAX_ATTEMPTS": _int("SMS_MAX_ATTEMPTS", 8),
        "SMS_RETRY_SECONDS": _float("SMS_RETRY_SECONDS", 30.0),
        "PUBLIC_BASE_URL": _env("PUBLIC_BASE_URL", "http://127.0.0.1:5000"),
        "GEOCODER": _env("GEOCODER", "none"),
        "NOMINATIM_URL": os.environ.get("NOMINATIM_URL"),
        "UPLOAD_DIR": _env("UPLOAD_DIR", str(INSTANCE_DIR / "uploads")),
        "ATTACHMENT_MAX_BYTES": _int("ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024),
        # Field work on the PDA (dispatch/services/field.py).
        "CHECKIN_RADIUS_M": _float("CHECKIN_RADIUS_M", 500.0),
        "CHECKIN_MAX_ACCURACY_M": _float("CHECKIN_MAX_ACCURACY_M", 100.0),
        "DEVICE_CLOCK_SKEW_SECONDS": _int("DEVICE_CLOCK_SKEW_SECONDS", 300),
        "OPTICAL_POWER_MIN_DBM": _float("OPTICAL_POWER_MIN_DBM", -27.0),
        "OPTICAL_POWER_MAX_DBM": _float("OPTICAL_POWER_MAX_DBM", -8.0),
        "OPTICAL_POWER_WARN_BELOW_DBM": _float("OPTICAL_POWER_WARN_BELOW_DBM", -25.0),
        # KPI targets (dispatch/reporting/kpi.py; empty: the deck's) and how far back days are closed.
        "KPI_COMPLETION_TARGETS": _env("KPI_COMPLETION_TARGETS", ""),
        "KPI_COMPLAINT_TARGETS": _env("KPI_COMPLAINT_TARGETS", ""),
        "KPI_CLOSE_LOOKBACK_DAYS": _int("KPI_CLOSE_LOOKBACK_DAYS", 3),
        "BILLING_WEBHOOK_URL": os.environ.get("BILLING_WEBHOOK_URL"),
        "BILLING_WEBHOOK_SECRET": os.environ.get("BILLING_WEBHOOK_SECRET"),
        # Billing push (dispatch/billing/push.py): per-request timeout, exponential backoff base and cap.
        "BILLING_WEBHOOK_TIMEOUT_SECONDS": _float("BILLING_WEBHOOK_TIMEOUT_SECONDS", 10.0),
        "BILLING_RETRY_SECONDS": _float("BILLING_RETRY_SECONDS", 10.0),
        "BILLING_MAX_BACKOFF_SECONDS": _float("BILLING_MAX_BACKOFF_SECONDS", 3600.0),
        # Settlement files (dispatch/billing/settlement.py, flask billing-settlement).
        "SETTLEMENT_DIR": _env("SETTLEMENT_DIR", str(INSTANCE_DIR / "settlement")),
        "RATELIMIT_STORAGE_URI": _env("RATELIMIT_STORAGE_URI", "memory://"),
        "QUIET_HOURS": _env("QUIET_HOURS", "21:00-08:00"),
        "AUTO_DISPATCH": _env("AUTO_DISPATCH", "off") == "on",
        # Geocoding (dispatch/geo/geocoding.py): the public Nominatim allows one request a second.
        "GEOCODER_TIMEOUT_SECONDS": _float("GEOCODER_TIMEOUT_SECONDS", 5.0),
        "GEOCODER_MIN_DELAY_SECONDS": _float("GEOCODER_MIN_DELAY_SECONDS", 1.0),
        "GEOCODE_MAX_KM_FROM_DISTRICT": _float("GEOCODE_MAX_KM_FROM_DISTRICT", 30.0),
        "GEOCODE_MAX_ATTEMPTS": _int("GEOCODE_MAX_ATTEMPTS", 8),
        # SLA engine (ours): who gets breach SMS besides the team leader, the repair cut-off, arrival warning.
        "DISPATCH_DESK_PHONE": os.environ.get("DISPATCH_DESK_PHONE") or None,
        "REPAIR_CUTOFF": _env("REPAIR_CUTOFF", ""),
        "ARRIVAL_WARN_SECONDS": _int("ARRIVAL_WARN_SECONDS", 1800),
        # Assignment (ours): score weights, distance scale, live-position freshness, re-dispatch triggers.
        "ASSIGNMENT_WEIGHTS": _env(
            "ASSIGNMENT_WEIGHTS", "distance=0.4,load=0.3,sla_urgency=0.2,team_balance=0.1"
        ),
        "ASSIGNMENT_MAX_KM": _float("ASSIGNMENT_MAX_KM", 30.0),
        "POSITION_MAX_AGE_SECONDS": _int("POSITION_MAX_AGE_SECONDS", 7200),
        "URGENCY_HORIZON_SECONDS": _int("URGENCY_HORIZON_SECONDS", 3600),
        "AUTO_DISPATCH_RETRY_SECONDS": _int("AUTO_DISPATCH_RETRY_SECONDS", 60),
        "AUTO_REDISPATCH": os.environ.get("AUTO_REDISPATCH"),
        # Day planning (ours): travel speed, service minutes per order type, the solver's default time limit.
        "PLAN_SPEED_KMH": _float("PLAN_SPEED_KMH", 25.0),
        "PLAN_SERVICE_MINUTES": _env(
            "PLAN_SERVICE_MINUTES", "broadband_install=60,iptv_install=45,opportunity=30,repair=45,move=90"
        ),
        "PLAN_TIME_LIMIT_SECONDS": _float("PLAN_TIME_LIMIT_SECONDS", 5.0),
        # Not in the contract; ours to choose, kept configurable.
        "TOKEN_TTL_SECONDS": _int("TOKEN_TTL_SECONDS", 12 * 3600),
        "MOBILE_TOKEN_TTL_SECONDS": _int("MOBILE_TOKEN_TTL_SECONDS", 7 * 24 * 3600),
        "LOGIN_RATE_LIMIT": _env("LOGIN_RATE_LIMIT", "10 per minute"),
        # Per API key, both intake endpoints together (api/common/limits.py): far above a province's peak.
        "INTAKE_RATE_LIMIT": _env("INTAKE_RATE_LIMIT", "6000 per minute"),
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 11 * 1024 * 1024),
        "IDEMPOTENCY_TTL_SECONDS": _int("IDEMPOTENCY_TTL_SECONDS", 24 * 3600),
        # flask-smorest / OpenAPI
        "API_TITLE": "装维调度 Dispatch API",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "docs",
        "OPENAPI_SWAGGER_UI_URL": "/static/swagger-ui/",  # vendored from swagger-ui-dist 5 (works offline)
        "OPENAPI_SWAGGER_UI_CONFIG": {"validatorUrl": None},  # no badge fetched from validator.swagger.io
        "SQLALCHEMY_TRACK_MODIFICATIONS": False,
        "JSON_AS_ASCII": False,
    }
    if overrides:
        cfg.update(overrides)
    _check_geocoder(cfg)
    _check_sms(cfg)
    _check_billing(cfg)
    cfg["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(cfg["SQLALCHEMY_DATABASE_URI"])
    cfg["AUTO_REDISPATCH"] = redispatch_triggers(cfg["AUTO_REDISPATCH"], bool(cfg["AUTO_DISPATCH"]))
    _check_texts(cfg)
    options = cfg["SQLALCHEMY_ENGINE_OPTIONS"] = dict(cfg["SQLALCHEMY_ENGINE_OPTIONS"])
    # Bound values (customers' phones, names, addresses, hashes) stay out of database error messages, and so
    # out of the tracebacks that log.exception writes.
    options.setdefault("hide_parameters", True)
    if cfg["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        # A server that accepts connections but never answers must become a 503, not a hung worker.
        options.setdefault("connect_args", {}).setdefault("connect_timeout", _int("DB_CONNECT_TIMEOUT", 5))
    return cfg
