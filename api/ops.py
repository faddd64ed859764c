"""Operations endpoints and request plumbing: /healthz, /metrics, request ids, access log, 415 check,
security headers."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from api.common.auth import API_PREFIXES
from api.common.errors import RETRY_AFTER_SECONDS, error_response
from dispatch.extensions import db
from dispatch.models import Order
from dispatch.vocabulary import STATUSES

log = logging.getLogger("dispatch.http")
bp = Blueprint("ops", __name__)

MULTIPART_ENDPOINTS: set[str] = set()  # endpoints that take multipart/form-data (attachments)
# An incoming X-Request-Id is echoed only if it looks like an id (it ends up in headers and log lines).
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,63}")

# On every response. The console's pages also get CONSOLE_CSP: every script is a file of its own
# (api/console/static/console.js), no inline script or event handler; inline style attributes stay allowed.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
# Swagger UI (/docs, vendored under api/static/swagger-ui): flask-smorest's page starts the bundle with an
# inline script, and the UI draws its icons from data: URLs.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


class OrdersByStatusCollector:
    """Orders by status, read from the database at scrape time (so every worker reports the same truth)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Any:
        gauge = GaugeMetricFamily("dispatch_orders", "Orders by status", labels=["status"])
        with self.app.app_context():
            try:
                rows = db.session.execute(
                    sa.select(Order.status, sa.func.count()).group_by(Order.status)
                ).all()
            except sa.exc.SQLAlchemyError:
                rows = None  # database down: no samples rather than false zeros
            finally:
                db.session.remove()
        if rows is not None:
            counts = {status: 0 for status in STATUSES} | {status: count for status, count in rows}
            for status, count in sorted(counts.items()):
                gauge.add_metric([status], count)
        yield gauge


def _metrics(app: Flask) -> dict[str, Any]:
    registry = CollectorRegistry()
    metrics = {
        "registry": registry,
        "requests": Counter(
            "dispatch_http_requests", "HTTP requests", ["method", "endpoint", "status"], registry=registry
        ),
        "latency": Histogram(
            "dispatch_http_request_seconds",
            "HTTP request latency",
            ["method", "endpoint"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        ),
    }
    registry.register(OrdersByStatusCollector(app))
    return metrics


@bp.get("/healthz")
def healthz() -> Any:
    try:
        db.session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        db.session.rollback()
        response = jsonify({"status": "unavailable", "database": "unreachable"})
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response, 503
    return jsonify({"status": "ok", "database": "ok"})


@bp.get("/metrics")
def metrics() -> Response:
    registry = current_app.extensions["metrics"]["registry"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _start() -> Any:
    g.request_started = time.perf_counter()
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    if (
        request.method in ("POST", "PUT", "PATCH")
        and request.path.startswith(API_PREFIXES)
        and (request.content_length or 0) > 0
        and not request.is_json
        and not (request.mimetype == "multipart/form-data" and request.endpoint in MULTIPART_ENDPOINTS)
    ):
        return error_response(415, "Content-Type must be application/json")
    return None


def _finish(response: Response) -> Response:
    elapsed = time.perf_counter() - g.get("request_started", time.perf_counter())
    endpoint = request.endpoint or "unmatched"
    m = current_app.extensions["metrics"]
    m["requests"].labels(request.method, endpoint, str(response.status_code)).inc()
    m["latency"].labels(request.method, endpoint).observe(elapsed)
    response.headers["X-Request-Id"] = g.get("request_id", "")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/console/"):
        response.headers.setdefault("Content-Security-Policy", CONSOLE_CSP)
    elif request.path.rstrip("/") == "/docs":
        response.headers.setdefault("Content-Security-Policy", DOCS_CSP)
    log.info(
        "%s %s %s %.1fms",
        request.method,
        request.path,
        response.status_code,
        elapsed * 1000,
    )
    return response


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import has_request_context

        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


class DispatchLogHandler(logging.StreamHandler):
    """stderr output for ``dispatch.*``, only while the host has not configured the root logger.

    Records also propagate to the root logger (pytest's caplog, gunicorn or a deployment's own config); when
    the root logger has handlers of its own they do the writing, so nothing is printed twice. Either way this
    handler's filter has stamped ``request_id`` on the record first.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if any(not isinstance(h, logging.NullHandler) for h in logging.getLogger().handlers):
            return
        super().emit(record)


def configure_logging(app: Flask) -> None:
    logger = logging.getLogger("dispatch")
    if not any(isinstance(h, DispatchLogHandler) for h in logger.handlers):
        handler = DispatchLogHandler()
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
        )
        logger.addHandler(handler)
    logger.setLevel(app.config.get("LOG_LEVEL", "INFO"))
    logger.propagate = True


def register(app: Flask) -> None:
    app.extensions["metrics"] = _metrics(app)
    configure_logging(app)
    app.before_request(_start)
    app.after_request(_finish)
    app.register_blueprint(bp)
