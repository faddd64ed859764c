"""Bearer authentication for the HTTP edge: who is calling. What they may do is decided in the services."""

from __future__ import annotations

from flask import request

from dispatch.actors import Actor
from dispatch.errors import AuthenticationError
from dispatch.services import auth as auth_service


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def audience_for_path(path: str) -> str:
    return "mobile" if path.startswith("/mobile/") else "api"


def current_actor() -> Actor:
    """The authenticated caller of this request, or 401."""
    cached: Actor | None = request.environ.get("dispatch.actor")
    if cached is not None:
        return cached
    token = bearer_token()
    if token is None:
        raise AuthenticationError("Missing bearer token")
    audience = audience_for_path(request.path)
    actor = auth_service.authenticate(
        token,
        audience=audience,
        source=audience,
        key_confirmed_later=key_confirmed_by_view(),
    )
    if audience == "mobile":
        device = request.headers.get("X-Device-Id")
        if device is not None and device != actor.device_id:
            raise AuthenticationError("Token is bound to another device")
    request.environ["dispatch.actor"] = actor
    return actor


# Views that confirm their caller's API key in a statement of their own before they change anything
# (dispatch.services.auth.confirm_key), so the key may come from the process's memory: the hotline's orders.
KEY_CONFIRMING_ENDPOINTS = frozenset({"api-intake.IntakeOrders"})


def key_confirmed_by_view() -> bool:
    """Whether this request's view confirms its API key itself. Not with an ``Idempotency-Key``: a stored
    response is replayed before the view runs (api/common/idempotency.py), so the key is read first."""
    return (
        request.method == "POST"
        and request.endpoint in KEY_CONFIRMING_ENDPOINTS
        and "Idempotency-Key" not in request.headers
    )


API_PREFIXES = ("/api/", "/mobile/")  # the JSON APIs: callers authenticate with a bearer token
PUBLIC_ENDPOINTS = frozenset({"api-auth.Token", "mobile-auth.MobileToken"})


def authenticate_request() -> None:
    """Answer 401 before any view parses its arguments: an anonymous caller gets no validation details."""
    if (
        request.path.startswith(API_PREFIXES)
        and request.endpoint is not None
        and request.endpoint not in PUBLIC_ENDPOINTS
    ):
        current_actor()


def optional_actor() -> Actor | None:
    """The caller if the request carries valid credentials, else None (never raises)."""
    try:
        return current_actor()
    except AuthenticationError:
        return None
