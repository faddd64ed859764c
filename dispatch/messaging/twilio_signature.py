"""Twilio webhook signatures (X-Twilio-Signature): the only place that imports twilio's RequestValidator."""

from __future__ import annotations

from twilio.request_validator import RequestValidator


def valid_signature(url: str, params: dict[str, str], signature: str, auth_token: str) -> bool:
    """Whether ``signature`` is Twilio's HMAC of ``url`` and the form ``params`` under ``auth_token``.

    Fails closed: no token configured or no signature presented is never valid. ``url`` must be the URL
    Twilio requested (PUBLIC_BASE_URL + path + query string), not the one a proxy forwarded to us.
    """
    if not auth_token or not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))
