"""Schemathesis over ``/openapi.json`` (QUALITY.md "Security and bad input"): every operation, every caller.

For each principal (the console roles admin, dispatcher, acceptance and manager with bearer tokens from
``POST /api/v1/auth/token``; an engineer with a PDA token from ``POST /mobile/v1/auth/token``; the intake and
the billing API keys) and each operation of the app's own OpenAPI document, Hypothesis generates a bounded,
derandomized set of requests, positive (valid by the schema) and negative (breaking it), half of them aimed at
real objects (an order dispatched to the engineer, an engineer, an attachment, an alert, a complaint) so that
path ids resolve. Every response must pass:

* ``not_a_server_error``: no 5xx, and no exception escaping a view (the app raises them in tests);
* ``status_code_conformance``, and stricter ``status_code_listed``: the status is listed for the operation
  explicitly, not only covered by flask-smorest's catch-all ``default`` response;
* ``content_type_conformance``, ``response_schema_conformance``, ``response_headers_conformance``.

Nothing is excluded. Special handling:

* the Twilio webhooks (``/webhooks/twilio/...``) are signed: the generated form is signed with the app's
  Twilio auth token when it can be (a flat form), so the fuzzing reaches the handler and not only the 403 of
  the signature check; a form that cannot be signed as sent still has to answer a documented 403;
* the multipart upload (``POST /mobile/v1/orders/{order_id}/attachments``) is fuzzed as schemathesis
  generates it (random bytes as the file: 415 by content, 422 on bad fields, 404/409 by the order);
* ``POST /api/v1/auth/revoke`` spends the caller's token, so it runs last for each principal.

Runs once, on the production backend PostgreSQL when ``TEST_DATABASE_URL`` is set (where a value out of a
column's range or a NUL byte in a string is refused by the database), else on SQLite: the budget is about
three minutes on two cores, and the rest of the suite covers both backends.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks as oas_checks
from twilio.request_validator import RequestValidator

from dispatch.actors import Actor
from dispatch.extensions import db
from tests.conftest import PG_URL, bearer

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 10  # per operation and principal
PRINCIPALS = ("admin", "dispatcher", "acceptance", "manager", "engineer", "intake", "billing")
TWILIO_TOKEN = "fuzz-twilio-token"
PUBLIC_BASE_URL = "https://dispatch.example.test"
JPEG = b"\xff\xd8\xff\xe0fuzz-photo\xff\xd9"


def status_code_listed(ctx: Any, response: Any, case: Any) -> bool | None:
    """The status is one the operation lists, not only flask-smorest's catch-all ``default``."""
    listed = {str(code) for code in case.operation.definition.raw.get("responses", {}) if code != "default"}
    if str(response.status_code) not in listed:
        raise AssertionError(
            f"status {response.status_code} is not listed for {case.operation.label} (lists {sorted(listed)})"
        )
    return None


CHECKS = [
    schemathesis.checks.not_a_server_error,
    oas_checks.status_code_conformance,
    oas_checks.content_type_conformance,
    oas_checks.response_schema_conformance,
    oas_checks.response_headers_conformance,
    status_code_listed,
]


@dataclass
class Findings:
    by_key: dict[tuple[str, str, str], str] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)
    calls: int = 0

    def add(self, principal: str, label: str, what: str, detail: str) -> None:
        self.by_key.setdefault((principal, label, what), detail)

    def report(self) -> str:
        return "\n\n".join(
            f"[{p}] {label}: {what}\n{detail}" for (p, label, what), detail in self.by_key.items()
        )


@pytest.fixture
def world_ids(app: Flask, make_user, make_engineer, make_order) -> dict[str, Any]:
    """Real objects (committed in the rolled-back transaction) for path parameters to hit."""
    from dispatch.clock import utcnow
    from dispatch.models import Alert, SlaClock
    from dispatch.services.attachments import add_attachment
    from dispatch.services.dispatching import assign_order

    engineer_user = make_user("engineer")
    dispatcher = make_user("dispatcher")
    order = make_order()
    desk = Actor(kind="user", id=dispatcher.id, name=dispatcher.username, role="dispatcher")
    assign_order(order.id, engineer_user.engineer_id, actor=desk)
    make_order()  # a second, unassigned order
    pda = Actor(
        kind="user",
        id=engineer_user.id,
        name=engineer_user.username,
        role="engineer",
        engineer_id=engineer_user.engineer_id,
    )
    attachment, _ = add_attachment(order.id, "before", JPEG, "photo.jpg", actor=pda)
    clock = db.session.scalars(db.select(SlaClock).where(SlaClock.order_id == order.id)).first()
    assert clock is not None
    alert = Alert(
        order_id=order.id, clock_id=clock.id, kind="warning", clock=clock.clock, created_at=utcnow()
    )
    db.session.add(alert)
    db.session.commit()

    from api.intake.schemas import ComplaintIntakeSchema
    from dispatch.services.complaints import record_complaint
    from tests.conftest import INTAKE_ACTOR

    complaint, _ = record_complaint(
        ComplaintIntakeSchema().load(
            {
                "external_id": "TS-FUZZ-1",
                "category": "appointment",
                "cause": "installation_service",
                "received_at": "2026-11-25T09:00:00+08:00",
                "text": "约服投诉",
            }
        ),
        actor=INTAKE_ACTOR,
    )
    return {
        "order_id": order.id,
        "engineer_id": engineer_user.engineer_id,
        "attachment_id": attachment.id,
        "alert_id": alert.id,
        "complaint_id": complaint.id,
        "order_type": "repair",
        "clock": "take",
        "key": "dispatch_engineer",
        "engineer_user": engineer_user,
    }


def _sign_twilio(case: Any) -> None:
    """Sign the generated form as Twilio would, when it is a flat form of scalars."""
    body = case.body
    if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
        return
    url = PUBLIC_BASE_URL + case.formatted_path
    if case.query:
        return  # the query string as sent is not ours to reproduce exactly
    headers = dict(case.headers or {})
    headers["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(url, body)
    case.headers = headers


def _fuzz_operation(
    operation: Any,
    principal: str,
    headers: Callable[[], dict[str, str]],
    ids: dict[str, Any],
    found: Findings,
) -> None:
    names = {p.name for p in operation.path_parameters}
    fixed = {name: ids[name] for name in names if name in ids}
    strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
    if fixed:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
    with contextlib.suppress(Exception):  # an operation with nothing to negate
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    if fixed:
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed))

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(*strategies))
    def run(case: Any) -> None:
        if operation.path.startswith("/webhooks/twilio/"):
            _sign_twilio(case)
        auth = headers()
        found.calls += 1
        try:
            response = case.call(headers=auth)
        except Exception as exc:  # RAISE_UNEXPECTED: a view's exception would have been a 500
            db.session.rollback()
            found.add(principal, operation.label, f"exception {type(exc).__name__}", traceback.format_exc())
            return
        found.statuses.setdefault(operation.label, set()).add(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS, headers=auth)
        except (Exception, BaseExceptionGroup) as exc:
            for failure in getattr(exc, "exceptions", [exc]):
                title = getattr(failure, "title", type(failure).__name__)
                found.add(
                    principal,
                    operation.label,
                    f"{title} ({response.status_code})",
                    f"{case.as_curl_command()}\n-> {response.status_code} {response.text[:600]}\n{failure}",
                )

    run()


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_fuzz_every_operation(
    app: Flask, principal: str, world_ids: dict[str, Any], token, api_key, monkeypatch: pytest.MonkeyPatch
) -> None:
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite") == bool(PG_URL):
        pytest.skip("fuzzed once, on PostgreSQL when TEST_DATABASE_URL is set (see the module docstring)")
    monkeypatch.setitem(app.config, "TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", PUBLIC_BASE_URL)

    def mint() -> dict[str, str]:
        if principal == "engineer":
            return {**bearer(token(user=world_ids["engineer_user"])), "X-Device-Id": "pda-1"}
        if principal in ("intake", "billing"):
            return bearer(api_key(principal))
        return bearer(token(principal))

    current = {"headers": mint()}
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: op.path.endswith("/auth/revoke"))  # revoke spends the token: last
    assert len(operations) >= 40
    found = Findings()
    for operation in operations:
        _fuzz_operation(operation, principal, lambda: current["headers"], world_ids, found)
        current["headers"] = mint()  # a fresh token for each operation (a revoke or a deactivation spent it)
    assert not found.by_key, f"{len(found.by_key)} findings in {found.calls} calls:\n\n" + found.report()
    for label in ("POST /webhooks/twilio/status", "POST /webhooks/twilio/inbound"):  # signed ones got through
        assert found.statuses[label] - {403}, f"{label}: every call refused ({found.statuses[label]})"
