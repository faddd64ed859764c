"""Settings from the environment (shared/CONTRACT.md §2)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = REPO_ROOT / "instance"


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
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "DISPATCH_TZ": _env("DISPATCH_TZ", "Asia/Shanghai"),
        "SCHEDULER_TICK_SECONDS": _int("SCHEDULER_TICK_SECONDS", 5),
        "SMS_BACKEND": _env("SMS_BACKEND", "outbox"),
        "TWILIO_ACCOUNT_SID": os.environ.get("TWILIO_ACCOUNT_SID"),
        "TWILIO_AUTH_TOKEN": os.environ.get("TWILIO_AUTH_TOKEN"),
        "TWILIO_FROM": os.environ.get("TWILIO_FROM"),
        "TWILIO_API_BASE_URL": _env("TWILIO_API_BASE_URL", "https://api.twilio.com"),
        "PUBLIC_BASE_URL": _env("PUBLIC_BASE_URL", "http://127.0.0.1:5000"),
        "GEOCODER": _env("GEOCODER", "none"),
        "NOMINATIM_URL": os.environ.get("NOMINATIM_URL"),
        "UPLOAD_DIR": _env("UPLOAD_DIR", str(INSTANCE_DIR / "uploads")),
        "BILLING_WEBHOOK_URL": os.environ.get("BILLING_WEBHOOK_URL"),
        "BILLING_WEBHOOK_SECRET": os.environ.get("BILLING_WEBHOOK_SECRET"),
        "RATELIMIT_STORAGE_URI": _env("RATELIMIT_STORAGE_URI", "memory://"),
        "QUIET_HOURS": _env("QUIET_HOURS", "21:00-08:00"),
        "AUTO_DISPATCH": _env("AUTO_DISPATCH", "off") == "on",
        # SLA engine (ours): who gets breach SMS besides the team leader, the repair cut-off, arrival warning.
        "DISPATCH_DESK_PHONE": os.environ.get("DISPATCH_DESK_PHONE") or None,
        "REPAIR_CUTOFF": _env("REPAIR_CUTOFF", ""),
        "ARRIVAL_WARN_SECONDS": _int("ARRIVAL_WARN_SECONDS", 1800),
        # Not in the contract; ours to choose, kept configurable.
        "TOKEN_TTL_SECONDS": _int("TOKEN_TTL_SECONDS", 12 * 3600),
        "MOBILE_TOKEN_TTL_SECONDS": _int("MOBILE_TOKEN_TTL_SECONDS", 7 * 24 * 3600),
        "LOGIN_RATE_LIMIT": _env("LOGIN_RATE_LIMIT", "10 per minute"),
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
    cfg["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(cfg["SQLALCHEMY_DATABASE_URI"])
    if cfg["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        # A server that accepts connections but never answers must become a 503, not a hung worker.
        options = cfg["SQLALCHEMY_ENGINE_OPTIONS"] = dict(cfg["SQLALCHEMY_ENGINE_OPTIONS"])
        options.setdefault("connect_args", {}).setdefault("connect_timeout", _int("DB_CONNECT_TIMEOUT", 5))
    return cfg
