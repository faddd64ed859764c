"""Twilio's webhooks: delivery statuses and inbound SMS (CONTRACT §5 "Twilio webhooks").

No bearer token: the only credential is ``X-Twilio-Signature``, Twilio's HMAC of the URL it requested
(``PUBLIC_BASE_URL`` + path + query string, never the URL a proxy forwarded to us) and the form fields,
keyed with ``TWILIO_AUTH_TOKEN``. It is checked before the form is parsed, so a forged request learns nothing
and writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
from flask import Response, current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from api.common.errors import error_response
from api.common.schemas import Text
from dispatch.clock import utcnow
from dispatch.messaging.twilio_signature import valid_signature
from dispatch.services import sms_inbound

log = logging.getLogger("dispatch.webhooks")

blp = Blueprint(
    "webhooks-twilio",
    __name__,
    url_prefix="/webhooks/twilio",
    description="Twilio webhooks (signed with X-Twilio-Signature; no bearer token)",
)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
SIGNATURE_HEADER = "X-Twilio-Signature"
_SIGNED = {
    "security": [],
    "parameters": [
        {
            "in": "header",
            "name": SIGNATURE_HEADER,
            "required": True,
            "schema": {"type": "string"},
            "description": "Twilio's signature of PUBLIC_BASE_URL + path and the form fields",
        }
    ],
}

# --- schemas: the form fields we use (Twilio sends many more, which are ignored) -------------------------

# Every status Twilio documents for a message; the service tracks some and ignores the others.
TWILIO_MESSAGE_STATUSES = (
    "accepted",
    "scheduled",
    "canceled",
    "queued",
    "sending",
    "sent",
    "failed",
    "delivered",
    "undelivered",
    "receiving",
    "received",
    "read",
    "partially_delivered",
)
_SID = validate.Regexp(r"^[A-Za-z0-9]{2,64}$", error="Not a Twilio SID.")


class TwilioFormSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    MessageSid = fields.String(required=True, validate=_SID)


class StatusCallbackSchema(TwilioFormSchema):
    MessageStatus = fields.String(required=True, validate=validate.OneOf(TWILIO_MESSAGE_STATUSES))
    ErrorCode = fields.String(validate=validate.Regexp(r"^[0-9]{0,9}$", error="Not a Twilio error code."))


class InboundSmsSchema(TwilioFormSchema):
    From = Text(required=True, validate=validate.Length(min=1, max=32))
    Body = Text(load_default="", validate=validate.Length(max=1600))


# --- the signature, before anything else ----------------------------------------------------------------


def requested_url() -> str:
    """The URL Twilio signed: our public base URL, the path and the query string as sent."""
    url = str(current_app.config.get("PUBLIC_BASE_URL") or "").rstrip("/") + request.path
    if request.query_string:
        url += "?" + request.query_string.decode("utf-8", "replace")
    return url


@blp.before_request
def check_signature() -> Any:
    """403 unless X-Twilio-Signature is Twilio's for this URL and form (before the form is validated)."""
    token = current_app.config.get("TWILIO_AUTH_TOKEN") or ""
    if not token:
        log.error("Twilio webhook refused: TWILIO_AUTH_TOKEN is not configured")
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not valid_signature(requested_url(), request.form.to_dict(), signature, token):
        log.warning("Twilio webhook %s refused: %s signature", request.path, "bad" if signature else "no")
        return error_response(403, f"Missing or invalid {SIGNATURE_HEADER}")
    return None


# --- the webhooks ---------------------------------------------------------------------------------------


@blp.route("/status")
class StatusCallback(MethodView):
    @blp.doc(**_SIGNED)
    @blp.arguments(StatusCallbackSchema, location="form")
    @blp.response(204)
    @blp.alt_response(403, description="Missing or invalid X-Twilio-Signature; nothing written")
    def post(self, form: dict[str, str]) -> None:
        """Record a message's delivery status from Twilio (replayed or reordered callbacks are harmless)."""
        sms_inbound.record_status(form, now=utcnow())


@blp.route("/inbound")
class InboundSms(MethodView):
    @blp.doc(**_SIGNED)
    @blp.arguments(InboundSmsSchema, location="form")
    @blp.response(200, content_type="text/xml", description="An empty TwiML <Response/>")
    @blp.alt_response(403, description="Missing or invalid X-Twilio-Signature; nothing written")
    def post(self, form: dict[str, str]) -> Response:
        """Take a customer's SMS reply: STOP/TD/退订, START, 1 (confirm), 2 (new time), a 1–5 score."""
        sms_inbound.handle_inbound(form, now=utcnow())
        return Response(EMPTY_TWIML, status=200, mimetype="text/xml")
