"""Rate limits, shared by every web process through RATELIMIT_STORAGE_URI (Redis when there are several).

* login: ``LOGIN_RATE_LIMIT`` per client address and, separately, per username (api/auth, mobile_api/auth);
* hotline intake: ``INTAKE_RATE_LIMIT`` per API key (``/api/v1/intake/orders`` and ``/complaints`` together),
  hit through Flask-Limiter's rate limiter without its per-request limit resolution (:func:`intake_limit`).

A 429 is CONTRACT §3's JSON error (api/common/errors.py) with ``Retry-After`` (:func:`retry_after`). Other
responses carry no rate-limit headers: Flask-Limiter's would read the limit's window from the storage again
after every limited request (a second Redis round trip) to tell a caller how much is left.
Redis down: counted in each process's memory meanwhile (``in_memory_fallback_enabled``), never a 500.
"""

from __future__ import annotations

import bisect
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import limits
import limits.storage
from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import TooManyRequests

from api.common.auth import optional_actor

SWEEP_SECONDS = 1.0


class MemoryStorage(limits.storage.MemoryStorage):
    """``memory://`` (the default storage, one web process) with its expired counters swept inline, at most
    once every SWEEP_SECONDS, by the hit that finds the sweep due.

    limits' own MemoryStorage sweeps on a ``threading.Timer`` 10 ms after a hit, and starts a new thread
    whenever a hit finds the last one finished: about every other intake request under load, which cost an
    intake ~0.6 ms of its ~5 ms of CPU (bench/support/profile_intake.py; bench/load.py: 43 % → 50 % of the
    reference's throughput on the same machine). Expiry itself does not wait for a sweep: a counter is read
    as zero once its window has passed (``get``); the sweep only frees the memory of keys no longer hit.
    Registering the scheme replaces limits' class for every ``memory://`` URI (its registry is keyed by
    scheme); Flask-Limiter's in-memory fallback (Redis down) still uses limits' own class.
    """

    STORAGE_SCHEME = ["memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        self._sweeping = threading.Lock()

    # limits calls this (name-mangled: MemoryStorage.__schedule_expiry) on every hit.
    def _MemoryStorage__schedule_expiry(self) -> None:
        if time.monotonic() < self._next_sweep or not self._sweeping.acquire(blocking=False):
            return
        try:
            self._sweep()
            self._next_sweep = time.monotonic() + SWEEP_SECONDS
        finally:
            self._sweeping.release()

    def _sweep(self) -> None:
        """What limits' own sweep (``__expire_events``) does, safe beside other threads' hits: it runs inside
        a request here. limits' version lists the keys, then reads each key's expiry by key, so a hit that
        dropped the key meanwhile (reading an expired counter drops it) made it raise KeyError: a 500 here
        (tests/unit/test_limit_storage.py races them). Each expiry is checked again under the key's lock,
        so a window a hit has just started is not dropped either."""
        now = time.time()
        for key in list(self.events):
            with self.locks[key]:
                if events := self.events.get(key):
                    live = bisect.bisect_left(events, -now, key=lambda event: -event.expiry)
                    self.events[key] = events[:live]
                if not self.events.get(key):
                    self.locks.pop(key, None)
        for key, expiry in list(self.expirations.items()):
            if expiry > now:
                continue
            with self.locks[key]:
                if self.expirations.get(key, now + 1) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                    self.locks.pop(key, None)


# Storage unreachable (Redis down): each process goes on counting in its own memory until the storage answers
# again, so limits loosen (by the number of processes) instead of every limited request failing with a 500.
limiter = Limiter(
    key_func=get_remote_address, default_limits=[], headers_enabled=False, in_memory_fallback_enabled=True
)


def retry_after(reset_at: float | None = None) -> int:
    """Seconds until ``reset_at`` (default: the window of the limit Flask-Limiter found broken in this
    request resets), at least 1: a 429's ``Retry-After``."""
    if reset_at is None:
        breached = limiter.current_limit
        reset_at = breached.reset_at if breached is not None else time.time()
    return max(1, int(reset_at - time.time()))


@limiter.request_filter
def _disabled_for_this_app() -> bool:
    """The limiter is one object per process and its ``enabled`` flag follows the last app initialised;
    this keeps an app configured with ``RATELIMIT_ENABLED=False`` unlimited whatever other apps do."""
    return not current_app.config.get("RATELIMIT_ENABLED", True)


def login_username() -> str:
    body = request.get_json(silent=True)
    name = body.get("username") if isinstance(body, dict) else None
    return f"user:{name}" if isinstance(name, str) else "user:?"


def intake_limits() -> str:
    return str(current_app.config["INTAKE_RATE_LIMIT"])


def intake_caller() -> str:
    """The bucket of an intake request: the API key's id (a user entering complaints: the user's id)."""
    actor = optional_actor()
    if actor is None:  # not reached: anonymous requests are exempt (and get their 401)
        return "anonymous"
    return f"{actor.kind}:{actor.id}"


def anonymous_caller() -> bool:
    """Requests without valid credentials are not counted against anyone's key: they get 401."""
    return optional_actor() is None


INTAKE_SCOPE = "intake"
INTAKE_BREACHED = "Too many intake requests for this API key; retry after Retry-After seconds"

# Flask-Limiter's own check of the intake limit: one limit shared by both intake endpoints (a key's orders
# and complaints draw on the same budget). intake_limit runs it while the storage is unreachable.
_shared_intake_limit = limiter.shared_limit(
    intake_limits,
    scope=INTAKE_SCOPE,
    key_func=intake_caller,
    exempt_when=anonymous_caller,
    error_message=INTAKE_BREACHED,
)


def intake_limit(view: Callable[..., Any]) -> Callable[..., Any]:
    """INTAKE_RATE_LIMIT per caller on an intake view, counted by Flask-Limiter's rate limiter (its strategy
    on RATELIMIT_STORAGE_URI) in the bucket its shared limit above uses (the caller, scope ``intake``).

    Flask-Limiter's decorator resolves on every request which of the application's limits apply to the
    view (its limit manager, exemption scopes, blueprint hints): 0.43 M of an intake's 5.5 M web-worker
    instructions (bench/support/count_intake.py), for a limit that is always the same one. This hits it
    directly. While the storage is unreachable (Flask-Limiter counts in memory meanwhile and watches for its
    recovery) or a hit fails, the decorator's own check runs instead, so the fallback is Flask-Limiter's.
    """
    checked = _shared_intake_limit(view)

    @functools.wraps(view)
    def limited(*args: Any, **kwargs: Any) -> Any:
        if _disabled_for_this_app() or anonymous_caller():  # as the shared limit's filter and exemption
            return view(*args, **kwargs)
        strategy = limiter.limiter
        if strategy.storage is not limiter.storage:  # Flask-Limiter's in-memory fallback is counting
            return checked(*args, **kwargs)
        key = intake_caller()
        try:
            breached = next(
                (item for item in _parsed(intake_limits()) if not strategy.hit(item, key, INTAKE_SCOPE)), None
            )
        except Exception:  # noqa: BLE001 (the storage's own errors, of whatever client library it uses)
            return checked(*args, **kwargs)
        if breached is not None:
            window = strategy.get_window_stats(breached, key, INTAKE_SCOPE)
            raise TooManyRequests(INTAKE_BREACHED, retry_after=retry_after(window.reset_time))
        return view(*args, **kwargs)

    return limited


@functools.lru_cache(maxsize=16)
def _parsed(limit: str) -> list[limits.RateLimitItem]:
    """The limits of a limit string, narrowest first (as Flask-Limiter checks them)."""
    return sorted(limits.parse_many(limit))


def install(app: Flask) -> None:
    """``limiter.init_app(app)`` without its before-request check. That check evaluates the default,
    application and blueprint limits, and there are none: every limit here is a view's decorator, which checks
    its own. Left in, it searched for limits on every request (about 0.1 ms of an intake's 3.6 ms)."""
    limiter.init_app(app)
    manager = limiter.limit_manager
    if manager.default_limits or manager.application_limits:
        raise RuntimeError("default or application rate limits need Flask-Limiter's before-request check")
    checks = app.before_request_funcs[None]
    if limiter._check_request_limit in checks:  # absent when RATELIMIT_ENABLED is off: init_app adds no hooks
        checks.remove(limiter._check_request_limit)
