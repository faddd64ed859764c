"""Login rate limits (per client address and per username), shared through RATELIMIT_STORAGE_URI."""

from __future__ import annotations

from flask import current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=True)


@limiter.request_filter
def _disabled_for_this_app() -> bool:
    """The limiter is one object per process and its ``enabled`` flag follows the last app initialised;
    this keeps an app configured with ``RATELIMIT_ENABLED=False`` unlimited whatever other apps do."""
    return not current_app.config.get("RATELIMIT_ENABLED", True)


def login_username() -> str:
    body = request.get_json(silent=True)
    name = body.get("username") if isinstance(body, dict) else None
    return f"user:{name}" if isinstance(name, str) else "user:?"
