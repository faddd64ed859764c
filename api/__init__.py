"""HTTP APIs: the dispatcher/integration API (/api/v1) and, from mobile_api, the PDA API (/mobile/v1).

Both register on one flask-smorest ``Api`` so that ``/openapi.json`` documents every endpoint (CONTRACT §3).
"""

from __future__ import annotations

from flask import Flask, redirect
from flask_smorest import Api

from api import ops
from api.alerts.routes import blp as alerts_blp
from api.attachments.routes import blp as attachments_blp
from api.auth.routes import blp as auth_blp
from api.billing.routes import blp as billing_blp
from api.common import idempotency, limits
from api.common.auth import authenticate_request
from api.common.errors import register_error_handlers
from api.common.openapi import CommonResponsesPlugin
from api.common.schemas import ErrorSchema
from api.complaints.routes import blp as complaints_blp
from api.console import register as register_console
from api.engineers.routes import blp as engineers_blp
from api.intake.routes import blp as intake_blp
from api.notifications.routes import blp as notifications_blp
from api.orders.routes import blp as orders_blp
from api.plans.routes import blp as plans_blp
from api.reports.routes import blp as reports_blp
from api.sla.routes import blp as sla_blp
from api.sms_templates.routes import blp as sms_templates_blp
from api.webhooks.routes import blp as webhooks_twilio_blp

MODULES = (
    auth_blp,
    intake_blp,
    orders_blp,
    attachments_blp,
    alerts_blp,
    notifications_blp,
    engineers_blp,
    plans_blp,
    sla_blp,
    webhooks_twilio_blp,
    sms_templates_blp,
    billing_blp,
    complaints_blp,
    reports_blp,
)


class DispatchApi(Api):  # type: ignore[misc]
    """flask-smorest's Api, documenting our error body (api/common/errors.py) as ``Error``."""

    ERROR_SCHEMA = ErrorSchema


def register(app: Flask) -> Api:
    from mobile_api import MODULES as MOBILE_MODULES

    api = DispatchApi(
        app,
        spec_kwargs={
            "info": {"description": "装维调度: work orders, SLA clocks, dispatch, PDA and integrations."},
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}],
            "extra_plugins": [CommonResponsesPlugin()],
        },
    )
    for blueprint in (*MODULES, *MOBILE_MODULES):
        api.register_blueprint(blueprint)
    limits.install(app)
    ops.register(app)  # request id and the 415 check come first
    app.before_request(authenticate_request)  # then 401, before idempotency and argument parsing
    idempotency.register(app)
    register_error_handlers(app)  # after Api(): ours replace flask-smorest's HTTPException handler
    register_console(app)
    app.add_url_rule("/", "root", lambda: redirect("/console/"))
    return api
