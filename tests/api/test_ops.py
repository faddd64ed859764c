"""Operations: /docs offline, /openapi.json complete, /healthz, /metrics, request ids, outages give 503."""

from __future__ import annotations

import io
import logging
import re
import sqlite3
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from api.ops import DispatchLogHandler, RequestIdFilter
from dispatch.extensions import db
from tests.conftest import bearer, intake_payload, make_app

STATIC = Path(__file__).resolve().parents[2] / "api" / "static"
SWAGGER_FILES = {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"}
UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/nope"
FAST_FAIL = {"SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 2}}}


@pytest.fixture(scope="module")
def offline_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    """An app whose database is never touched (docs and spec need none)."""
    return make_app(f"sqlite:///{tmp_path_factory.mktemp('ops') / 'unused.db'}")


class _AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


# --- /docs and /openapi.json --------------------------------------------------------------------------


def test_docs_page_loads_only_vendored_local_assets(offline_app: Flask) -> None:
    client = offline_app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    parser = _AssetLinks()
    parser.feed(page.get_data(as_text=True))

    assert {url.rsplit("/", 1)[-1] for url in parser.urls} == SWAGGER_FILES
    for url in parser.urls:
        assert url.startswith("/static/"), f"{url} is not served by this app"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.data) > 10_000, f"{url} looks truncated"
        expected = "text/css" if url.endswith(".css") else ("text/javascript", "application/javascript")
        assert asset.mimetype in (expected if isinstance(expected, tuple) else (expected,)), url
        asset.close()
    # no badge image from validator.swagger.io: the page must not reach out when rendered offline
    assert '"validatorUrl": null' in page.get_data(as_text=True)


def test_vendored_swagger_ui_ships_with_its_licence() -> None:
    licence = (STATIC / "swagger-ui" / "LICENSE").read_text()
    assert "Apache License" in licence
    for name in SWAGGER_FILES:
        assert (STATIC / "swagger-ui" / name).stat().st_size > 10_000


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_openapi_documents_every_api_and_mobile_route(offline_app: Flask) -> None:
    response = offline_app.test_client().get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")

    routes = [r for r in offline_app.url_map.iter_rules() if r.rule.startswith(("/api/v1/", "/mobile/v1/"))]
    assert len(routes) >= 10 and any(r.rule.startswith("/mobile/v1/") for r in routes)
    missing = [
        f"{method} {rule.rule}"
        for rule in routes
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        if method.lower() not in spec["paths"].get(_openapi_path(rule.rule), {})
    ]
    assert missing == []


def test_every_openapi_operation_has_a_summary_and_bearer_auth_is_declared(offline_app: Flask) -> None:
    spec = offline_app.test_client().get("/openapi.json").get_json()
    operations = [
        (method, path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert operations
    assert [f"{m.upper()} {p}" for m, p, op in operations if not op.get("summary", "").strip()] == []
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert {"bearer": []} in spec["security"]


def test_openapi_lists_the_statuses_every_operation_can_answer(offline_app: Flask) -> None:
    """Regression (schemathesis, tests/api/test_fuzz_openapi.py): 401/403/404/400/503 were answered but only
    covered by the catch-all ``default`` response, and error responses had no body schema."""
    spec = offline_app.test_client().get("/openapi.json").get_json()
    public = {("post", "/api/v1/auth/token"), ("post", "/mobile/v1/auth/token")}
    webhooks = [
        op for path, item in spec["paths"].items() if path.startswith("/webhooks/") for op in item.values()
    ]
    assert webhooks and all("Retry-After" in op["responses"]["503"]["headers"] for op in webhooks)
    for path, item in spec["paths"].items():
        if not path.startswith(("/api/v1/", "/mobile/v1/")):
            continue
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            codes = set(op["responses"])
            name = f"{method.upper()} {path}"
            if (method, path) in public:
                assert op["security"] == [], name
            else:
                assert "401" in codes, name
                assert "403" in codes or path.startswith("/mobile/"), name
            assert "404" in codes or "{" not in path, name
            assert "400" in codes or method == "get", name
            assert op["responses"]["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}, name
            for code, response in op["responses"].items():
                if code[0] in "45" and "$ref" not in response:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{name} {code}"


def test_openapi_error_schema_is_the_body_errors_really_have(offline_app: Flask) -> None:
    """Regression (schemathesis): ``Error`` was flask-smorest's schema (``additionalProperties: false``,
    ``status`` as an error name), so a 409's ``action`` and a 404's valid values broke the document."""
    error = offline_app.test_client().get("/openapi.json").get_json()["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "message"}
    assert {"code", "message", "errors", "status", "action"} <= set(error["properties"])
    assert error["additionalProperties"] is True


# --- /healthz and database outages ----------------------------------------------------------------------


def test_healthz_reports_ok_with_a_reachable_database(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def _unusable_sqlite(tmp_path: Path) -> str:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database directory should be")  # unusable even for root
    return f"sqlite:///{blocker / 'missing' / 'dispatch.db'}"


@pytest.fixture(params=["postgresql-unreachable", "sqlite-unusable-path"])
def down_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    if request.param == "postgresql-unreachable":
        app = make_app(UNREACHABLE_PG, **FAST_FAIL)  # RAISE_UNEXPECTED stays on: unmapped errors fail
    else:
        app = make_app(_unusable_sqlite(tmp_path))
    yield app
    with app.app_context():
        db.engine.dispose()


def test_healthz_is_503_json_when_the_database_is_unreachable(down_app: Flask) -> None:
    response = down_app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.is_json
    assert response.get_json()["database"] != "ok"
    assert response.get_json()["status"] != "ok"
    assert int(response.headers["Retry-After"]) > 0


def test_api_requests_during_an_outage_get_503_with_retry_after(down_app: Flask) -> None:
    client = down_app.test_client()
    responses = [
        client.get("/api/v1/orders", headers=bearer("some-token")),
        client.post("/api/v1/intake/orders", json=intake_payload(), headers=bearer("some-key")),
        client.post("/api/v1/auth/token", json={"username": "u", "password": "password123"}),
    ]
    for response in responses:
        assert response.status_code == 503, response.get_json()
        assert response.get_json()["code"] == 503
        assert int(response.headers["Retry-After"]) > 0


def test_exhausted_connection_pool_gives_503_not_500(backend: str) -> None:
    one_connection = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2}
    app = make_app(backend, SQLALCHEMY_ENGINE_OPTIONS=one_connection)
    client = app.test_client()
    with app.app_context():
        engine = db.engine
    held = engine.connect()  # the pool's only connection (outside an app context, so requests tear down)
    try:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert int(health.headers["Retry-After"]) > 0
        busy = client.get("/api/v1/orders", headers=bearer("some-token"))
        assert busy.status_code == 503
        assert busy.headers["Retry-After"]
    finally:
        held.close()
    assert client.get("/healthz").status_code == 200
    engine.dispose()


def test_connection_lost_after_the_view_ran_still_answers_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database restart or ``pg_terminate_backend`` between the view and the teardown makes the rollback of
    the session's open transaction fail. Raised from the teardown it escaped Flask: gunicorn's bare HTML 500
    for an answer already built. The answer goes out, the connection is dropped, the next request works."""
    app = make_app(f"sqlite:///{tmp_path / 'teardown.db'}")
    lost = {"now": False}

    def probe() -> Any:
        db.session.execute(sa.text("SELECT 1"))  # the session's transaction is still open at teardown
        lost["now"] = True
        return {"ok": True}

    app.add_url_rule("/probe", "probe", probe)
    with app.app_context():
        engine = db.engine
    real_rollback = engine.dialect.do_rollback

    def do_rollback(dbapi_connection: Any) -> None:
        if lost["now"]:
            lost["now"] = False
            raise sqlite3.OperationalError("server closed the connection unexpectedly")
        real_rollback(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_rollback", do_rollback)
    client = app.test_client()
    response = client.get("/probe")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True}
    assert client.get("/healthz").status_code == 200
    engine.dispose()


def test_lost_connection_is_503_but_other_database_errors_are_not_masked(tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'unused.db'}")

    @app.get("/boom/<kind>")
    def boom(kind: str) -> str:
        closed = Exception("connection closed")
        raise sa.exc.InterfaceError("SELECT 1", {}, closed, connection_invalidated=kind == "lost")

    client = app.test_client()
    lost = client.get("/boom/lost")
    assert lost.status_code == 503
    assert lost.headers["Retry-After"]
    with pytest.raises(sa.exc.InterfaceError):  # a bug surfaces (RAISE_UNEXPECTED), not passed off as outage
        client.get("/boom/bug")


# --- /metrics -----------------------------------------------------------------------------------------


def _samples(client: FlaskClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_by_method_endpoint_and_status(client: FlaskClient) -> None:
    before = _samples(client)
    client.get("/healthz")
    client.get("/healthz")
    client.get("/no/such/page")
    after = _samples(client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    ok = {"method": "GET", "endpoint": "ops.healthz", "status": "200"}
    assert delta("dispatch_http_requests_total", **ok) == 2
    assert delta("dispatch_http_requests_total", method="GET", endpoint="unmatched", status="404") == 1
    timing = {"method": "GET", "endpoint": "ops.healthz"}
    assert delta("dispatch_http_request_seconds_count", **timing) == 2
    assert delta("dispatch_http_request_seconds_bucket", le="+Inf", **timing) == 2
    assert delta("dispatch_http_request_seconds_sum", **timing) > 0


def test_metrics_report_orders_by_status_from_the_database(client: FlaskClient, make_order: Any) -> None:
    assert _value(_samples(client), "dispatch_orders", status="new") == 0
    make_order()
    make_order()
    make_order()
    samples = _samples(client)
    assert _value(samples, "dispatch_orders", status="new") == 3
    assert ("dispatch_orders", frozenset({("status", "completed")})) in samples  # zero, but reported
    assert _value(samples, "dispatch_orders", status="completed") == 0


def test_metrics_still_answer_when_the_database_is_down(down_app: Flask) -> None:
    response = down_app.test_client().get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "dispatch_http_requests_total" in text or "dispatch_http_requests_created" in text
    assert "dispatch_orders{" not in text  # no false zeros while the database cannot be read


# --- request ids and logging ----------------------------------------------------------------------------


def test_sane_request_id_is_echoed(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-Id": "hotline-7f3a.42"})
    assert response.headers["X-Request-Id"] == "hotline-7f3a.42"


@pytest.mark.parametrize("incoming", [None, "", "has space", "x" * 65, "<script>", "中文"])
def test_missing_or_insane_request_id_is_replaced_by_a_generated_one(
    client: FlaskClient, incoming: str | None
) -> None:
    headers = {} if incoming is None else {"X-Request-Id": incoming.encode().decode("latin-1")}
    first = client.get("/healthz", headers=headers).headers["X-Request-Id"]
    second = client.get("/healthz", headers=headers).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_request_id_is_on_the_access_log_record(client: FlaskClient, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="dispatch"):
        client.get("/healthz", headers={"X-Request-Id": "trace-0042"})
        client.get("/healthz")
    access = [r for r in caplog.records if r.name == "dispatch.http" and "/healthz" in r.getMessage()]
    assert len(access) == 2
    assert access[0].request_id == "trace-0042"  # type: ignore[attr-defined]
    assert re.fullmatch(r"[0-9a-f]{32}", access[1].request_id)  # type: ignore[attr-defined]
    assert access[0].getMessage().startswith("GET /healthz 200")


def test_dispatch_log_handler_writes_only_when_the_host_has_not_configured_logging() -> None:
    stream = io.StringIO()
    handler = DispatchLogHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("[%(request_id)s] %(message)s"))
    record = logging.LogRecord("dispatch.test", logging.INFO, __file__, 1, "hello", None, None)

    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        root.handlers = [logging.NullHandler()]
        handler.handle(record)
        assert stream.getvalue() == "[-] hello\n"  # nobody else writes: we do, with the request id

        root.handlers = [logging.StreamHandler(io.StringIO())]
        handler.handle(record)
        assert stream.getvalue() == "[-] hello\n"  # the host writes: no second copy from us
    finally:
        root.handlers = saved
