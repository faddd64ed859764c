"""Where errors become CONTRACT §3's JSON ``{code, message, errors?}``; bad input never yields a 5xx."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, jsonify
from flask_limiter import RateLimitExceeded
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from api.common import limits
from dispatch.errors import DispatchError
from dispatch.extensions import db
from dispatch.logs import log_exception

log = logging.getLogger("dispatch.errors")

RETRY_AFTER_SECONDS = 5  # what a 503 for an unavailable database tells clients to wait


def error_response(status: int, message: str, **extra: Any) -> tuple[Any, int]:
    body = {"code": status, "message": message, **{k: v for k, v in extra.items() if v is not None}}
    return jsonify(body), status


def _flatten(errors: Any) -> Any:
    """webargs nests messages under their location (``{"json": {...}}``); callers want them per field."""
    if (
        isinstance(errors, dict)
        and errors
        and set(errors) <= {"json", "query", "form", "files", "headers", "view_args"}
    ):
        merged: dict[str, Any] = {}
        for part in errors.values():
            if isinstance(part, dict):
                merged.update(part)
            else:
                merged.setdefault("_schema", []).extend(part if isinstance(part, list) else [part])
        return merged
    return errors


def handle_http_exception(exc: HTTPException) -> Any:
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    errors = _flatten(data.get("messages")) if isinstance(data, dict) else None
    message = data.get("message") if isinstance(data, dict) else None
    if not message:
        if status == 422:
            message = "Validation failed"
        elif status == 400 and errors:  # webargs: the body did not parse
            message = "Malformed request body"
        else:
            message = exc.description or exc.name
    response, status = error_response(status, message, errors=errors)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimitExceeded):
        retry_after = limits.retry_after()
    if status == 429 and retry_after:
        response.headers["Retry-After"] = str(retry_after)
    if exc.response is not None and exc.response.headers.get("Retry-After"):
        response.headers["Retry-After"] = exc.response.headers["Retry-After"]
    if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response, status


def handle_dispatch_error(exc: DispatchError) -> Any:
    db.session.rollback()
    return jsonify(exc.to_dict()), exc.http_status


def handle_integrity_error(exc: IntegrityError) -> Any:
    db.session.rollback()
    log.info("integrity error mapped to 409: %s", exc.orig.__class__.__name__)
    return error_response(409, "Conflicts with existing data")


def handle_stale_data(exc: StaleDataError) -> Any:
    db.session.rollback()
    return error_response(409, "The record was changed by someone else; reload and retry")


def handle_database_unavailable(exc: SQLAlchemyError) -> Any:
    db.session.rollback()
    orig = getattr(exc, "orig", None)
    log.warning("database unavailable: %s", orig.__class__.__name__ if orig else exc.__class__.__name__)
    response, status = error_response(503, "Database unavailable; retry shortly")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response, status


def handle_dbapi_error(exc: DBAPIError) -> Any:
    """A lost connection (e.g. InterfaceError after a restart) is an outage; a value the database refuses
    (out of range, NUL byte) is bad input that a schema let through; anything else is a bug."""
    if exc.connection_invalidated:
        return handle_database_unavailable(exc)
    if isinstance(exc, DataError):
        db.session.rollback()
        log.warning("database refused a value: %s", exc.orig.__class__.__name__ if exc.orig else exc)
        return error_response(422, "A value is out of range or malformed")
    return handle_unexpected(exc)


def handle_unexpected(exc: Exception) -> Any:
    db.session.rollback()
    if current_app.config.get("RAISE_UNEXPECTED"):  # tests: a bug surfaces as the exception, not a 500
        raise exc
    log_exception(log, "unhandled error")
    return error_response(500, "Internal server error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DispatchError, handle_dispatch_error)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(StaleDataError, handle_stale_data)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(PoolTimeoutError, handle_database_unavailable)  # pool exhausted
    app.register_error_handler(DBAPIError, handle_dbapi_error)
    app.register_error_handler(Exception, handle_unexpected)
