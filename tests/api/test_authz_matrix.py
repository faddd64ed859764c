"""The authorization matrix (QUALITY.md "Security"): every /api/v1 and /mobile/v1 route × every caller.

``MATRIX`` is the specification, written from CONTRACT §5. A route of the app that is missing from it, or an
entry for a route the app no longer has, fails ``test_matrix_lists_every_route_and_method``: a new endpoint
cannot ship without saying who may call it.

Outcomes: ``ALLOW`` means authorization let the call through (any status but 401/403/404/405 and no 5xx; a
409 or 422 from the order's state is fine here), ``DENY`` is exactly 403, ``UNAUTH`` exactly 401 (no token,
or a token of the other API's audience). Denied calls must change nothing.

Twilio's webhooks (/webhooks/twilio/...) are in it too: public, but only Twilio's X-Twilio-Signature opens
them, so no caller here gets through (``twilio_signed``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from dispatch.actors import Actor
from dispatch.extensions import db
from tests.conftest import bearer, intake_payload

ALLOW, DENY, UNAUTH = "allow", "deny (403)", "unauthenticated (401)"

USER_ROLES = ("admin", "dispatcher", "acceptance", "manager")
KEY_SCOPES = ("intake", "billing")
PRINCIPALS = ("anonymous", *USER_ROLES, "engineer", *KEY_SCOPES)


def console(*allowed: str) -> dict[str, str]:
    """A /api/v1 route: the named roles and key scopes pass, other console callers get 403; no token and
    the engineers' PDA tokens (mobile audience) get 401."""
    unknown = set(allowed) - set(USER_ROLES) - set(KEY_SCOPES)
    assert not unknown, unknown
    expected = {p: (ALLOW if p in allowed else DENY) for p in (*USER_ROLES, *KEY_SCOPES)}
    return {**expected, "anonymous": UNAUTH, "engineer": UNAUTH}


def pda() -> dict[str, str]:
    """A /mobile/v1 route: engineers' PDA tokens only; console tokens and API keys do not count there."""
    return {p: (ALLOW if p == "engineer" else UNAUTH) for p in PRINCIPALS}


def public() -> dict[str, str]:
    return dict.fromkeys(PRINCIPALS, ALLOW)


def twilio_signed() -> dict[str, str]:
    """A Twilio webhook: no bearer token or API key counts, only X-Twilio-Signature, which none of these
    callers carries, so every one of them gets 403. Signed calls: tests/api/test_twilio_webhooks.py."""
    return dict.fromkeys(PRINCIPALS, DENY)


ORDER_READERS = ("dispatcher", "acceptance", "manager", "admin")
DESK = ("dispatcher", "admin")


@dataclass
class World:
    """Real objects for the calls to act on, so an allowed call does not end in 404."""

    order_id: int
    engineer_id: int
    engineer_user: Any
    console_user: Any
    serial: int = 0

    def next(self) -> int:
        self.serial += 1
        return self.serial


@dataclass(frozen=True)
class Case:
    expect: dict[str, str]
    body: Callable[[World], Any] | None = None
    query: str = ""
    notes: str = ""
    extra_path_values: dict[str, Callable[[World], Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Multipart:
    """A multipart/form-data body (uploads); ``fields`` builds fresh file objects for each call."""

    fields: Callable[[], dict[str, Any]]


JPEG = b"\xff\xd8\xff\xe0matrix-photo\xff\xd9"


def _upload_body(world: World) -> Multipart:
    return Multipart(lambda: {"kind": "before", "file": (io.BytesIO(JPEG), "photo.jpg", "image/jpeg")})


def _attachment_id(world: World) -> int:
    """A ``before`` photo on the world's order, uploaded by its engineer (visible to every order reader)."""
    from dispatch.services.attachments import add_attachment

    user = world.engineer_user
    engineer = Actor(
        kind="user", id=user.id, name=user.username, role="engineer", engineer_id=user.engineer_id
    )
    attachment, _ = add_attachment(world.order_id, "before", JPEG, "photo.jpg", actor=engineer)
    return attachment.id


def _engineer_body(world: World) -> dict[str, Any]:
    n = world.next()
    return {
        "code": f"MX{n:04d}",
        "name": f"矩阵工程师{n}",
        "phone": f"139{n:08d}",
        "team": "五华装维一班",
        "skills": ["repair"],
        "districts": ["五华区"],
    }


def _alert_id(world: World) -> int:
    """An alert on the world's order (as the SLA tick would raise), for the acknowledge route."""
    from dispatch.clock import utcnow
    from dispatch.models import Alert, SlaClock

    clock = db.session.scalars(
        sa.select(SlaClock).where(SlaClock.order_id == world.order_id).order_by(SlaClock.id)
    ).first()
    assert clock is not None
    alert = Alert(
        order_id=world.order_id, clock_id=clock.id, kind="warning", clock=clock.clock, created_at=utcnow()
    )
    db.session.add(alert)
    db.session.commit()
    return alert.id


def _complaint_body(world: World) -> dict[str, Any]:
    return {
        "external_id": f"TS-MATRIX-{world.next()}",
        "category": "appointment",
        "cause": "installation_service",
        "received_at": "2026-11-25T09:00:00+08:00",
        "text": "约服投诉",
    }


def _complaint_id(world: World) -> int:
    from api.intake.schemas import ComplaintIntakeSchema
    from dispatch.services.complaints import record_complaint
    from tests.conftest import INTAKE_ACTOR

    complaint, _ = record_complaint(ComplaintIntakeSchema().load(_complaint_body(world)), actor=INTAKE_ACTOR)
    return complaint.id


def _district_id() -> int:
    from dispatch.models import District

    district_id = db.session.scalar(sa.select(District.id).where(District.name == "五华区"))
    assert district_id is not None
    return district_id


def _plan_body(world: World) -> dict[str, Any]:
    return {"day": "2026-11-26", "district_ids": [_district_id()], "time_limit_seconds": 0.2}


def _plan_id(world: World) -> int:
    """A proposed day plan for the world's district (accepting it again is a 409: still allowed here)."""
    from dispatch.services.planning import propose_plan

    desk = Actor(kind="user", id=world.console_user.id, name="matrix", role="dispatcher")
    plan = propose_plan(date(2026, 11, 26), [_district_id()], actor=desk, time_limit_seconds=0.2)
    return plan.id


# (METHOD, path with {parameters}) → who may call it. Keep in CONTRACT §5 order.
MATRIX: dict[tuple[str, str], Case] = {
    # Authentication
    ("POST", "/api/v1/auth/token"): Case(
        public(), body=lambda w: {"username": w.console_user.username, "password": "password123"}
    ),
    ("POST", "/mobile/v1/auth/token"): Case(
        public(),
        body=lambda w: {
            "username": w.engineer_user.username,
            "password": "password123",
            "device_id": "pda-1",
        },
    ),
    ("GET", "/api/v1/auth/me"): Case(console(*USER_ROLES, *KEY_SCOPES)),
    ("POST", "/api/v1/auth/revoke"): Case(console(*USER_ROLES), notes="API keys are revoked by an admin"),
    # Hotline intake
    ("POST", "/api/v1/intake/orders"): Case(console("intake"), body=lambda w: intake_payload()),
    # Orders
    ("GET", "/api/v1/orders"): Case(console(*ORDER_READERS)),
    ("GET", "/api/v1/orders/{order_id}"): Case(console(*ORDER_READERS)),
    ("GET", "/api/v1/orders/{order_id}/candidates"): Case(console(*DESK)),
    ("POST", "/api/v1/orders/{order_id}/assign"): Case(
        console(*DESK), body=lambda w: {"engineer_id": w.engineer_id}
    ),
    ("POST", "/api/v1/orders/{order_id}/cancel"): Case(
        console(*DESK, "intake"), body=lambda w: {"reason": "客户撤销"}
    ),
    ("POST", "/api/v1/orders/{order_id}/suspend"): Case(
        console(*DESK), body=lambda w: {"reason_code": "customer_postponed", "note": "客户出差"}
    ),
    ("POST", "/api/v1/orders/{order_id}/resume"): Case(console(*DESK), body=lambda w: {"note": "恢复"}),
    ("POST", "/api/v1/orders/{order_id}/acceptance"): Case(
        console("acceptance", "dispatcher"), body=lambda w: {"decision": "approve", "note": "ok"}
    ),
    # Attachments (ID photos: the acceptance desk and admins only; tests/mobile_api/test_attachments.py)
    ("GET", "/api/v1/orders/{order_id}/attachments"): Case(console(*ORDER_READERS)),
    ("GET", "/api/v1/orders/{order_id}/attachments/{attachment_id}"): Case(
        console(*ORDER_READERS), extra_path_values={"attachment_id": _attachment_id}
    ),
    # Alerts and notifications (dispatcher, admin)
    ("GET", "/api/v1/alerts"): Case(console(*DESK), query="status=open"),
    ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): Case(
        console(*DESK), extra_path_values={"alert_id": _alert_id}
    ),
    ("GET", "/api/v1/notifications"): Case(console(*DESK)),
    # Engineers (admin; dispatchers and managers may read)
    ("GET", "/api/v1/engineers"): Case(console("admin", "dispatcher", "manager")),
    ("POST", "/api/v1/engineers"): Case(console("admin"), body=_engineer_body),
    ("GET", "/api/v1/engineers/{engineer_id}"): Case(console("admin", "dispatcher", "manager")),
    ("PATCH", "/api/v1/engineers/{engineer_id}"): Case(console("admin"), body=lambda w: {"name": "改名"}),
    # Day plans (dispatchers and admins plan, accept and discard; managers may read)
    ("GET", "/api/v1/plans"): Case(console(*DESK, "manager"), query="day=2026-11-26"),
    ("POST", "/api/v1/plans"): Case(console(*DESK), body=_plan_body),
    ("GET", "/api/v1/plans/{plan_id}"): Case(
        console(*DESK, "manager"), extra_path_values={"plan_id": _plan_id}
    ),
    ("POST", "/api/v1/plans/{plan_id}/accept"): Case(
        console(*DESK), extra_path_values={"plan_id": _plan_id}, notes="the second acceptance is a 409"
    ),
    ("POST", "/api/v1/plans/{plan_id}/discard"): Case(
        console(*DESK), extra_path_values={"plan_id": _plan_id}, notes="the second decision is a 409"
    ),
    # SLA policies (admin; dispatchers and managers may read)
    ("GET", "/api/v1/sla-policies"): Case(console("admin", "dispatcher", "manager")),
    ("PUT", "/api/v1/sla-policies/{order_type}/{clock}"): Case(
        console("admin"),
        body=lambda w: {"target_seconds": 900, "warn_percent": 75},
        extra_path_values={"order_type": lambda w: "repair", "clock": lambda w: "take"},
    ),
    # SMS templates (admin; dispatchers may read)
    ("GET", "/api/v1/sms-templates"): Case(console("admin", "dispatcher")),
    ("PUT", "/api/v1/sms-templates/{key}"): Case(
        console("admin"),
        body=lambda w: {"body": "【派单】{external_id}请接单"},
        extra_path_values={"key": lambda w: "dispatch_engineer"},
    ),
    # Complaints (the hotline records them; dispatchers, managers and admins read them)
    ("POST", "/api/v1/intake/complaints"): Case(
        console("intake", "dispatcher", "admin"), body=_complaint_body
    ),
    ("GET", "/api/v1/complaints"): Case(console("dispatcher", "manager", "admin")),
    ("GET", "/api/v1/complaints/{complaint_id}"): Case(
        console("dispatcher", "manager", "admin"), extra_path_values={"complaint_id": _complaint_id}
    ),
    # KPI reports (managers, admins)
    ("GET", "/api/v1/reports/kpi"): Case(console("manager", "admin"), query="from=2026-11-01&to=2026-11-30"),
    # Billing feed (BOSS's key only; tests/api/test_billing_api.py)
    ("GET", "/api/v1/billing/events"): Case(console("billing"), query="after=0&limit=10"),
    # Mobile / PDA attachments
    ("POST", "/mobile/v1/orders/{order_id}/attachments"): Case(pda(), body=_upload_body),
    ("GET", "/mobile/v1/orders/{order_id}/attachments/{attachment_id}"): Case(
        pda(), extra_path_values={"attachment_id": _attachment_id}
    ),
    # Twilio webhooks (public, but signed by Twilio)
    ("POST", "/webhooks/twilio/status"): Case(twilio_signed(), notes="signed: test_twilio_webhooks"),
    ("POST", "/webhooks/twilio/inbound"): Case(twilio_signed(), notes="signed: test_twilio_webhooks"),
    # Mobile / PDA (engineer tokens only; the world's order is dispatched to the engineer principal, so a
    # field action that needs a later status is a 409 here, which still means authorization let it through)
    ("GET", "/mobile/v1/orders"): Case(pda()),
    ("GET", "/mobile/v1/orders/{order_id}"): Case(pda()),
    ("POST", "/mobile/v1/orders/{order_id}/take"): Case(pda(), body=lambda w: {}),
    ("POST", "/mobile/v1/orders/{order_id}/contacts"): Case(
        pda(), body=lambda w: {"outcome": "no_answer", "called_at": "2026-11-25T09:05:00+08:00"}
    ),
    ("POST", "/mobile/v1/orders/{order_id}/check-in"): Case(
        pda(),
        body=lambda w: {"lat": 25.0423, "lng": 102.7065, "accuracy_m": 10, "at": "2026-11-25T09:05:00+08:00"},
    ),
    ("PUT", "/mobile/v1/orders/{order_id}/resources"): Case(
        pda(), body=lambda w: {"box_id": "FBX-1", "port": "3", "optical_power_dbm": -18.5}
    ),
    ("POST", "/mobile/v1/orders/{order_id}/submit"): Case(pda(), body=lambda w: {}),
    ("POST", "/mobile/v1/orders/{order_id}/complete"): Case(pda(), body=lambda w: {"notes": "完工"}),
    ("POST", "/mobile/v1/orders/{order_id}/return"): Case(
        pda(), body=lambda w: {"reason_code": "wrong_address", "note": "地址不符"}
    ),
    ("POST", "/mobile/v1/orders/{order_id}/suspend"): Case(
        pda(), body=lambda w: {"reason_code": "customer_postponed"}
    ),
    ("POST", "/mobile/v1/location"): Case(
        pda(),
        body=lambda w: {"lat": 25.04, "lng": 102.70, "accuracy_m": 15, "at": "2026-11-25T09:00:00+08:00"},
    ),
}

PREFIXES = ("/api/v1/", "/mobile/v1/", "/webhooks/")
IGNORED_METHODS = {"HEAD", "OPTIONS"}
PATH_VALUES: dict[str, Callable[[World], Any]] = {
    "order_id": lambda w: w.order_id,
    "engineer_id": lambda w: w.engineer_id,
}


def normalise(rule: str) -> str:
    """``/api/v1/orders/<int:order_id>`` → ``/api/v1/orders/{order_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def app_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, normalise(rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(PREFIXES)
        for method in (rule.methods or ()) - IGNORED_METHODS
    }


def test_matrix_lists_every_route_and_method(app):
    routes = app_routes(app)
    missing = sorted(routes - set(MATRIX))
    stale = sorted(set(MATRIX) - routes)
    assert not missing, f"routes without an authorization row in MATRIX (add who may call them): {missing}"
    assert not stale, f"MATRIX rows for routes the app does not have (renamed or removed?): {stale}"


def test_matrix_rows_name_every_principal():
    for key, case in MATRIX.items():
        assert set(case.expect) == set(PRINCIPALS), key
        assert set(case.expect.values()) <= {ALLOW, DENY, UNAUTH}, key


def test_matrix_is_not_vacuous():
    """Each kind of caller is allowed somewhere and refused somewhere, so a matrix of typos cannot pass."""
    for principal in PRINCIPALS:
        outcomes = {case.expect[principal] for case in MATRIX.values()}
        assert ALLOW in outcomes, principal
        assert outcomes - {ALLOW}, principal


# --- running the matrix -------------------------------------------------------------------------------


@pytest.fixture
def world(app, make_user, make_engineer, make_order) -> World:
    from dispatch.services.dispatching import assign_order

    engineer_user = make_user("engineer")
    dispatcher = make_user("dispatcher")
    order = make_order()
    desk = Actor(kind="user", id=dispatcher.id, name=dispatcher.username, role="dispatcher")
    assign_order(order.id, engineer_user.engineer_id, actor=desk)  # visible to the engineer principal
    return World(
        order_id=order.id,
        engineer_id=make_engineer().id,
        engineer_user=engineer_user,
        console_user=dispatcher,
    )


@pytest.fixture
def credentials(token, api_key, world) -> dict[str, dict[str, str]]:
    """Headers per principal; fresh for every test (revoke spends a token)."""
    headers = {"anonymous": {}}
    for role in USER_ROLES:
        headers[role] = bearer(token(role))
    headers["engineer"] = {**bearer(token(user=world.engineer_user)), "X-Device-Id": "pda-1"}
    for scope in KEY_SCOPES:
        headers[scope] = bearer(api_key(scope))
    return headers


def _path(template: str, case: Case, world: World) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        source = case.extra_path_values.get(name) or PATH_VALUES.get(name)
        assert source is not None, f"no value for path parameter {name!r}: add it to PATH_VALUES"
        return str(source(world))

    return re.sub(r"\{([^{}]+)\}", value, template)


def _order_event_count(order_id: int) -> int:
    from dispatch.models import OrderEvent

    return db.session.scalar(sa.select(sa.func.count()).where(OrderEvent.order_id == order_id)) or 0


def _table_counts() -> dict[str, int]:
    tables = ("orders", "engineers", "users", "api_keys")
    return {t: db.session.scalar(sa.text(f"SELECT count(*) FROM {t}")) for t in tables}  # noqa: S608


def _call(client: FlaskClient, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, Multipart):
        kwargs["data"], kwargs["content_type"] = body.fields(), "multipart/form-data"
    elif body is not None:
        kwargs["json"] = body
    return client.open(path, method=method, **kwargs)


def _verdict(status: int) -> str:
    if status == 401:
        return UNAUTH
    if status == 403:
        return DENY
    if status in (404, 405) or status >= 500:
        return f"broken ({status})"
    return ALLOW


@pytest.mark.parametrize(("method", "template"), sorted(MATRIX), ids=lambda v: v)
def test_authorization_matrix(app, client, world, credentials, method, template):
    assert (method, template) in app_routes(app), f"{method} {template} is not a route of the app"
    case = MATRIX[(method, template)]
    path = _path(template, case, world) + (f"?{case.query}" if case.query else "")

    mismatches = []
    # refused callers first, so the allowed calls' side effects cannot hide a refused call's
    ordered = sorted(PRINCIPALS, key=lambda p: case.expect[p] == ALLOW)
    for principal in ordered:
        expected = case.expect[principal]
        before = (_order_event_count(world.order_id), _table_counts())
        body = case.body(world) if case.body else None
        response = _call(client, method, path, credentials[principal], body)
        got = _verdict(response.status_code)
        if got != expected:
            mismatches.append(
                f"{principal}: expected {expected}, got {response.status_code} {response.get_json()}"
            )
            continue
        if expected != ALLOW:
            error = response.get_json()
            if not (
                isinstance(error, dict) and error.get("code") == response.status_code and error.get("message")
            ):
                mismatches.append(f"{principal}: refusal is not the JSON error shape: {error!r}")
            after = (_order_event_count(world.order_id), _table_counts())
            if after != before:
                mismatches.append(f"{principal}: refused, yet something changed: {before} → {after}")
    assert not mismatches, f"{method} {template}:\n  " + "\n  ".join(mismatches)


PROTECTED = sorted(key for key, case in MATRIX.items() if case.expect["anonymous"] == UNAUTH)


@pytest.mark.parametrize(("method", "template"), PROTECTED, ids=lambda v: v)
def test_anonymous_caller_gets_401_before_any_validation(app, client, world, method, template):
    """No token and a malformed body or query: 401, not a 422 that describes the endpoint to strangers."""
    case = MATRIX[(method, template)]
    path = _path(template, case, world)
    if method == "GET":
        response = client.get(path + "?page=not-a-number&page_size=-1&status=bogus")
    else:
        response = client.open(path, method=method, json=["not", "an", "object"])
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["code"] == 401


@pytest.mark.parametrize(("method", "template"), PROTECTED, ids=lambda v: v)
def test_unknown_bearer_token_gets_401(app, client, world, method, template):
    case = MATRIX[(method, template)]
    body = case.body(world) if case.body else None
    response = _call(client, method, _path(template, case, world), bearer("dt_" + "x" * 43), body)
    assert response.status_code == 401
