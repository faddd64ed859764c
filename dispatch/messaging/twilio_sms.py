"""The Twilio adapter for sending SMS: the only module importing twilio's REST client (DESIGN.md decision 7).

:func:`send` creates a message; :func:`find_sent` looks for one Twilio already accepted (used before
re-sending an attempt whose outcome is unknown, so a lost response never becomes a second SMS). Every failure
leaves as an :class:`SmsError` whose ``outcome`` says what the caller may do next:

* ``retryable``: Twilio refused for now (HTTP 5xx, 429, 401) or the request never left (no connection): try
  again later, nothing was sent;
* ``permanent``: Twilio refused the message itself (other 4xx: 21610 unsubscribed, 21211 invalid number,
  21614 not a mobile number, ...): do not retry;
* ``unknown``: the request may have reached Twilio (read timeout, connection dropped, an unreadable answer):
  Twilio may have accepted it, so look with :func:`find_sent` before sending again.

The SDK's requests all go to ``TWILIO_API_BASE_URL`` (tests point it at a local Twilio-compatible server)
with ``TWILIO_TIMEOUT_SECONDS`` per request and no retries inside the SDK: retrying is the relay's business.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import requests
from flask import Flask, current_app
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError

from dispatch.config import ConfigError

RETRYABLE, PERMANENT, UNKNOWN = "retryable", "permanent", "unknown"
DEFAULT_API_BASE_URL = "https://api.twilio.com"
# How many of the recipient's messages one look-up reads: a message accepted since the outbox row was
# written is among the newest; a recipient with more than this many since then is not a real case.
FIND_LIMIT = 100
# Twilio's clock and ours may disagree a little; a message cannot predate its outbox row by more than this.
CLOCK_SKEW = timedelta(minutes=5)
# The settings a built client depends on: a change (a test's monkeypatch, say) builds a new one.
_SETTINGS = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM",
    "TWILIO_API_BASE_URL",
    "TWILIO_TIMEOUT_SECONDS",
)


class Found(NamedTuple):
    """A message Twilio already has: its sid and the status Twilio reports for it now."""

    sid: str
    status: str


class SmsError(Exception):
    """A failed request to Twilio: ``outcome`` is ``retryable``, ``permanent`` or ``unknown``."""

    def __init__(self, outcome: str, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.outcome = outcome
        self.code = code  # Twilio's error code (21610, ...), when it gave one
        self.status = status  # the HTTP status, when there was an answer


class RedirectingHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """The SDK's own HTTP client (auth, form encoding, error parsing) with every request sent to
    ``base_url``, whatever Twilio domain (api, messaging, ...) the SDK addressed (library-notes §2)."""

    def __init__(self, base_url: str, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._base = urlsplit(base_url.rstrip("/"))

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        url = urlunsplit(
            (self._base.scheme, self._base.netloc, self._base.path + parts.path, parts.query, parts.fragment)
        )
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class TwilioSms:
    """A configured Twilio client and sender number."""

    client: Any
    from_: str

    def send(self, to: str, body: str, status_callback: str) -> tuple[str, str]:
        """Create the message → (its sid, Twilio's status, e.g. ``queued``); SmsError on failure."""
        try:
            message = self.client.messages.create(
                to=to, from_=self.from_, body=body, status_callback=status_callback
            )
        except Exception as exc:  # classified: anything after the request left may have been accepted
            raise classify(exc) from exc
        return str(message.sid), str(message.status)

    def find_sent(
        self,
        to: str,
        body: str,
        since: datetime,
        *,
        taken: Callable[[Sequence[str]], Collection[str]] | None = None,
    ) -> Found | None:
        """The message Twilio accepted for ``to`` with exactly ``body`` since ``since`` (its sid and Twilio's
        status now: a delivery reported before we knew the sid would otherwise be lost), or None.

        Asks for the recipient's messages sent on or after ``since``'s day (``DateSent>=``); when none has the
        body, also their newest messages whatever their send date, since Twilio fills ``date_sent`` only
        once it has sent a message and one still queued would be missed. ``taken`` is given the matching sids
        and returns those that belong to other outbox rows (two rows may text the same words to one number);
        the first match not taken is the answer. SmsError when Twilio cannot be asked.
        """
        earliest = since.astimezone(UTC) - CLOCK_SKEW
        try:
            matches = {
                str(m.sid): str(m.status or "")
                for m in self.client.messages.list(
                    to=to, date_sent_after=earliest.date().isoformat(), limit=FIND_LIMIT
                )
                if m.body == body
            }
            if not matches:
                matches = {
                    str(m.sid): str(m.status or "")
                    for m in self.client.messages.list(to=to, limit=FIND_LIMIT)
                    if m.body == body and (m.date_created is None or m.date_created >= earliest)
                }
        except Exception as exc:  # a look-up sends nothing: every failure just means "ask again later"
            error = classify(exc)
            text = f"look-up failed: {error}"
            raise SmsError(RETRYABLE, text, code=error.code, status=error.status) from exc
        if not matches:
            return None
        skip = set(taken(list(matches))) if taken is not None else set()
        sid = next((sid for sid in matches if sid not in skip), None)
        return None if sid is None else Found(sid, matches[sid])


def classify(exc: BaseException) -> SmsError:
    """What a failed Twilio request means for the message (see the module docstring)."""
    if isinstance(exc, SmsError):
        return exc
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        status = int(exc.status)
        code = int(exc.code) if exc.code is not None and int(exc.code) != status else None
        text = f"HTTP {status}" + (f" (Twilio {code})" if code else "") + f": {_message_of(exc)}"
        # 401 is our credentials, not the message: retried (and given up on after SMS_MAX_ATTEMPTS), so a
        # rotated token loses no message.
        outcome = RETRYABLE if status >= 500 or status in (429, 401) else PERMANENT
        return SmsError(outcome, text[:400], code=code, status=status)
    if isinstance(exc, requests.exceptions.RequestException):
        # Only a connection that was never made (refused, or the connect timed out) proves nothing was sent.
        # urllib3's NewConnectionError is a ConnectTimeoutError too.
        if isinstance(exc, requests.exceptions.ConnectTimeout) or _caused_by(exc, ConnectTimeoutError):
            return SmsError(RETRYABLE, f"no connection to Twilio ({type(exc).__name__})")
        # The URL in requests' message names the account: the exception's type says enough.
        return SmsError(UNKNOWN, f"no answer from Twilio ({type(exc).__name__})")
    if isinstance(exc, TwilioException):
        return SmsError(UNKNOWN, f"unreadable answer from Twilio ({type(exc).__name__})")
    return SmsError(UNKNOWN, f"{type(exc).__name__} while talking to Twilio")


def _message_of(exc: Any) -> str:
    return str(getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "") or "")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is in the chain of causes or in the arguments of ``exc`` (requests wraps urllib3's
    MaxRetryError, whose ``reason`` is the real error)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        if isinstance(current, BaseException):
            todo.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
            todo.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return False


def build(config: Mapping[str, Any]) -> TwilioSms:
    """The Twilio client ``config`` describes; ConfigError without an account, token or sender."""
    sid, token, sender = (config.get(k) for k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM"))
    if not (sid and token and sender):
        raise ConfigError("SMS_BACKEND=twilio needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM")
    base_url = str(config.get("TWILIO_API_BASE_URL") or DEFAULT_API_BASE_URL)
    http_client = RedirectingHttpClient(base_url, timeout=float(config["TWILIO_TIMEOUT_SECONDS"]))
    return TwilioSms(client=Client(str(sid), str(token), http_client=http_client), from_=str(sender))


def sender_for(app: Flask) -> TwilioSms:
    """The app's Twilio client, built once per configuration (its HTTP connections are pooled)."""
    settings = tuple(app.config.get(name) for name in _SETTINGS)
    held = app.extensions.get("twilio_sms")
    if held is None or held[0] != settings:
        held = (settings, build(app.config))
        app.extensions["twilio_sms"] = held
    sender: TwilioSms = held[1]
    return sender


def send(to: str, body: str, status_callback: str) -> tuple[str, str]:
    """Send ``body`` to ``to`` with the app's Twilio account → (sid, status); SmsError on failure."""
    return sender_for(current_app).send(to, body, status_callback)


def find_sent(
    to: str,
    body: str,
    since: datetime,
    *,
    taken: Callable[[Sequence[str]], Collection[str]] | None = None,
) -> Found | None:
    """The sid of a message Twilio accepted for ``to`` with ``body`` since ``since``, or None (see
    :meth:`TwilioSms.find_sent`)."""
    return sender_for(current_app).find_sent(to, body, since, taken=taken)
