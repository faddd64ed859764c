"""A fake Twilio for tests: http.server on 127.0.0.1 in a thread, speaking the part of the REST API the SDK's
``client.messages`` uses, so tests run the real twilio SDK (tests point TWILIO_API_BASE_URL at :attr:`url`).

* ``POST /2010-04-01/Accounts/{sid}/Messages.json`` creates a message (form fields To, From, Body,
  StatusCallback; HTTP Basic auth with the account sid and token, else 401 / Twilio 20003);
* ``GET .../Messages/{sid}.json`` fetches one (404 / 20404 when unknown);
* ``GET .../Messages.json`` lists them newest first, filtered by ``To``, ``From`` and ``DateSent`` /
  ``DateSent>`` / ``DateSent<`` (on the date, as Twilio does; a message not yet sent has no ``date_sent``
  and no date filter matches it), in Twilio's paging shape (``PageSize``, ``Page``, ``next_page_uri``).

Failures are injected per create: :meth:`FakeTwilio.fail_next` (HTTP 500/503/429 with no message created),
:meth:`FakeTwilio.reject_next` (a 4xx with a Twilio code such as 21610 or 21211), and
:meth:`FakeTwilio.accept_then_hang_next` (the message is created, then the answer is held past the client's
timeout: "timeout after Twilio accepted"); or by a ``chooser`` called for every create (random failure
rates). :func:`signed_post` and :meth:`FakeTwilio.post_status_callback` post status callbacks signed with
twilio's RequestValidator to a Flask test client, as Twilio would.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from twilio.request_validator import RequestValidator

from tests.support_http import LocalServer

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "fake-auth-token"
API = "/2010-04-01"


@dataclass(frozen=True)
class Failure:
    """What one create answers instead of 201: ``status`` alone (5xx, 429: nothing created), with ``code``
    (a Twilio error: nothing created), or ``hang`` seconds after creating the message."""

    status: int = 503
    code: int | None = None
    hang: float | None = None


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    params: dict[str, str]  # query string and form fields, last value of each
    authorized: bool


@dataclass
class FakeMessage:
    sid: str
    to: str
    from_: str
    body: str
    status_callback: str | None
    date_created: datetime
    date_sent: datetime | None
    status: str = "queued"

    def as_json(self, account_sid: str) -> dict[str, Any]:
        uri = f"{API}/Accounts/{account_sid}/Messages/{self.sid}.json"
        return {
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "body": self.body,
            "date_created": _rfc2822(self.date_created),
            "date_sent": _rfc2822(self.date_sent) if self.date_sent else None,
            "date_updated": _rfc2822(self.date_sent or self.date_created),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self.to,
            "uri": uri,
        }


def _rfc2822(value: datetime) -> str:
    return format_datetime(value.astimezone(UTC), usegmt=True)


def _date_of(raw: str) -> date:
    return date.fromisoformat(raw[:10])  # "2026-11-25" or "2026-11-25T01:00:00Z": Twilio compares dates


class FakeTwilio(LocalServer):
    """Start with :meth:`start`; ``url`` is the base URL to give as ``TWILIO_API_BASE_URL``."""

    name = "fake-twilio"

    def __init__(
        self,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.clock = clock or (lambda: datetime.now(UTC))
        self.messages: dict[str, FakeMessage] = {}
        self.created: list[FakeMessage] = []  # every message accepted, in order
        self.hung_sids: set[str] = set()  # accepted, but the answer was never given
        self.requests: list[SeenRequest] = []
        self.plan: deque[Failure] = deque()  # what the next creates answer
        self.chooser: Callable[[dict[str, str]], Failure | None] | None = None  # asked when the plan is empty
        self.list_failures: deque[int] = deque()  # HTTP statuses the next lists answer
        self.hold_date_sent = False  # leave date_sent empty, as Twilio does while a message is queued
        self.on_create: Callable[[dict[str, str]], None] | None = None  # every create, before answering
        self.on_hang: Callable[[FakeMessage], None] | None = None  # accepted, the answer now held back

    # --- what it answers ---

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next ``n`` creates answer ``status`` (500, 503, 429) and create nothing."""
        with self._lock:
            self.plan.extend(Failure(status=status) for _ in range(n))

    def reject_next(self, n: int = 1, code: int = 21610, status: int = 400) -> None:
        """The next ``n`` creates are refused with Twilio error ``code``."""
        with self._lock:
            self.plan.extend(Failure(status=status, code=code) for _ in range(n))

    def accept_then_hang_next(self, n: int = 1, seconds: float = 2.0) -> None:
        """The next ``n`` creates create the message, then hold the answer ``seconds`` (past the client's
        timeout) and close the connection without one."""
        with self._lock:
            self.plan.extend(Failure(hang=seconds) for _ in range(n))

    def fail_next_lists(self, n: int = 1, status: int = 503) -> None:
        with self._lock:
            self.list_failures.extend(status for _ in range(n))

    def bodies_to(self, to: str) -> list[str]:
        with self._lock:
            return [m.body for m in self.created if m.to == to]

    def creates(self) -> list[SeenRequest]:
        """Every create request that reached the server, accepted or not."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def lists(self) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith("/Messages.json")]

    def add_message(
        self, to: str, body: str, *, sent: datetime | None = None, from_: str = "+15005550006"
    ) -> str:
        """A message Twilio has (sent earlier, say by another outbox row) → its sid."""
        with self._lock:
            return self._create({"To": to, "From": from_, "Body": body}, when=sent).sid

    # --- lifecycle ---

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler

    # --- status callbacks ---

    def callback_params(self, sid: str, status: str, *, error_code: int | None = None) -> dict[str, str]:
        """The form Twilio posts to a message's StatusCallback when its status becomes ``status``."""
        message = self.messages[sid]
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": message.from_,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return params

    def post_status_callback(
        self,
        client: Any,
        sid: str,
        status: str,
        *,
        error_code: int | None = None,
        auth_token: str | None = None,
    ) -> Any:
        """Post a signed status callback for message ``sid`` to the StatusCallback URL it was created with,
        through a Flask test ``client`` (the URL's path and query; the signature covers the whole URL)."""
        callback = self.messages[sid].status_callback
        assert callback, f"message {sid} was created without a StatusCallback"
        with self._lock:
            self.messages[sid].status = status
        return signed_post(
            client,
            callback,
            self.callback_params(sid, status, error_code=error_code),
            auth_token=auth_token or self.auth_token,
        )

    # --- the server side ---

    def _create(self, form: dict[str, str], *, when: datetime | None = None) -> FakeMessage:
        now = when or self.clock()
        message = FakeMessage(
            sid="SM" + secrets.token_hex(16),
            to=form.get("To", ""),
            from_=form.get("From", ""),
            body=form.get("Body", ""),
            status_callback=form.get("StatusCallback"),
            date_created=now,
            date_sent=None if self.hold_date_sent else now,
        )
        self.messages[message.sid] = message
        self.created.append(message)
        return message

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            raw = handler.rfile.read(length).decode()
            params.update({k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()})
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        authorized = handler.headers.get("Authorization") == f"Basic {expected}"
        seen = SeenRequest(method, parts.path, params, authorized)
        with self._lock:
            self.requests.append(seen)
        if not authorized:
            _error(handler, 401, 20003, "Authenticate")
            return
        prefix = f"{API}/Accounts/{self.account_sid}/Messages"
        if method == "POST" and parts.path == prefix + ".json":
            self._handle_create(handler, params)
        elif method == "GET" and parts.path == prefix + ".json":
            self._handle_list(handler, params)
        elif method == "GET" and parts.path.startswith(prefix + "/") and parts.path.endswith(".json"):
            sid = parts.path[len(prefix) + 1 : -len(".json")]
            with self._lock:
                message = self.messages.get(sid)
            if message is None:
                _error(handler, 404, 20404, f"The requested resource {parts.path} was not found")
            else:
                _answer(handler, 200, message.as_json(self.account_sid))
        else:
            _error(handler, 404, 20404, f"The requested resource {parts.path} was not found")

    def _handle_create(self, handler: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        if self.on_create is not None:
            self.on_create(form)
        with self._lock:
            failure = self.plan.popleft() if self.plan else None
        if failure is None and self.chooser is not None:
            failure = self.chooser(form)
        if not form.get("To") or not (form.get("Body") or form.get("MediaUrl")):
            _error(handler, 400, 21604, "A 'To' phone number and a 'Body' are required.")
            return
        if failure is not None and failure.hang is None:
            message = "Service unavailable" if failure.code is None else f"Twilio error {failure.code}"
            _error(handler, failure.status, failure.code or failure.status, message)
            return
        with self._lock:
            message = self._create(form)
        if failure is not None and failure.hang is not None:
            with self._lock:
                self.hung_sids.add(message.sid)
            if self.on_hang is not None:
                self.on_hang(message)
            self._release.wait(timeout=failure.hang)
            return  # the client gave up long ago: close without an answer
        _answer(handler, 201, message.as_json(self.account_sid))

    def _handle_list(self, handler: BaseHTTPRequestHandler, params: dict[str, str]) -> None:
        with self._lock:
            status = self.list_failures.popleft() if self.list_failures else None
        if status is not None:
            _error(handler, status, status, "Service unavailable")
            return
        with self._lock:
            found = [m for m in reversed(self.created) if _matches(m, params)]
        found.sort(key=lambda m: m.date_created, reverse=True)  # newest first, ties in creation order
        size = int(params.get("PageSize") or 50)
        page = int(params.get("Page") or 0)
        chunk = found[page * size : (page + 1) * size]
        base = f"{API}/Accounts/{self.account_sid}/Messages.json"
        filters = {k: v for k, v in params.items() if k not in ("Page", "PageSize", "PageToken")}

        def uri(number: int) -> str:
            query = {**filters, "PageSize": size, "Page": number}
            if number:
                query["PageToken"] = f"PA{number}"
            return f"{base}?{urlencode(query)}"

        more = (page + 1) * size < len(found)
        _answer(
            handler,
            200,
            {
                "messages": [m.as_json(self.account_sid) for m in chunk],
                "end": page * size + max(len(chunk) - 1, 0),
                "first_page_uri": uri(0),
                "next_page_uri": uri(page + 1) if more else None,
                "previous_page_uri": uri(page - 1) if page else None,
                "page": page,
                "page_size": size,
                "start": page * size,
                "uri": uri(page),
            },
        )


def _matches(message: FakeMessage, params: dict[str, str]) -> bool:
    if "To" in params and message.to != params["To"]:
        return False
    if "From" in params and message.from_ != params["From"]:
        return False
    filters = {key: params[key] for key in ("DateSent", "DateSent>", "DateSent<") if key in params}
    if not filters:
        return True
    if message.date_sent is None:
        return False
    sent = message.date_sent.astimezone(UTC).date()
    if "DateSent" in filters and sent != _date_of(filters["DateSent"]):
        return False
    if "DateSent>" in filters and sent < _date_of(filters["DateSent>"]):
        return False
    return not ("DateSent<" in filters and sent > _date_of(filters["DateSent<"]))


def _answer(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = json.dumps(body, ensure_ascii=False).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except OSError:
        pass  # the client timed out and closed the connection


def _error(handler: BaseHTTPRequestHandler, status: int, code: int, message: str) -> None:
    _answer(
        handler,
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


# --- signed webhooks ------------------------------------------------------------------------------------


def signed_post(client: Any, url: str, params: dict[str, str], *, auth_token: str = AUTH_TOKEN) -> Any:
    """POST ``params`` as a form to a Flask test ``client`` the way Twilio posts a webhook to ``url`` (the
    full public URL, e.g. PUBLIC_BASE_URL + /webhooks/twilio/status): signed over ``url`` with
    ``X-Twilio-Signature``, sent to its path and query."""
    signature = RequestValidator(auth_token).compute_signature(url, params)
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return client.post(target, data=params, headers={"X-Twilio-Signature": signature})


@dataclass
class Chaos:
    """A ``chooser`` for :attr:`FakeTwilio.chooser`: each create fails with 5xx with probability ``p_5xx`` and
    is accepted then left unanswered for ``hang`` s with probability ``p_hang``."""

    rng: Any
    p_5xx: float = 0.1
    p_hang: float = 0.1
    hang: float = 1.0
    counts: dict[str, int] = field(default_factory=lambda: {"5xx": 0, "hang": 0, "ok": 0})
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, form: dict[str, str]) -> Failure | None:
        with self._lock:
            roll = self.rng.random()
            if roll < self.p_5xx:
                self.counts["5xx"] += 1
                return Failure(status=self.rng.choice((500, 503)))
            if roll < self.p_5xx + self.p_hang:
                self.counts["hang"] += 1
                return Failure(hang=self.hang)
            self.counts["ok"] += 1
            return None
