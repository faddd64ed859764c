"""``memory://`` rate limits (api/common/limits.py MemoryStorage): no thread per hit; expired keys swept."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest
from limits import parse, strategies
from limits.storage import storage_from_string

from api.common import limits as app_limits


@pytest.fixture
def started_threads(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    started: list[threading.Thread] = []
    original = threading.Thread.start

    def start(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
        started.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(threading.Thread, "start", start)
    return started


def test_memory_uri_resolves_to_the_swept_storage() -> None:
    assert type(storage_from_string("memory://")) is app_limits.MemoryStorage


def test_hits_start_no_thread(started_threads: list[threading.Thread]) -> None:
    storage = storage_from_string("memory://")
    started_threads.clear()  # the base class starts one timer in its constructor
    limiter = strategies.FixedWindowRateLimiter(storage)
    item = parse("100 per minute")
    for _ in range(5):
        assert limiter.hit(item, "intake", "key:1")
        time.sleep(0.015)  # past limits' 10 ms timer, which it would start again on the next hit
    assert started_threads == []
    assert limiter.get_window_stats(item, "intake", "key:1").remaining == 95


def test_expired_keys_are_swept_by_a_later_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_limits, "SWEEP_SECONDS", 0.05)
    storage = storage_from_string("memory://")
    fixed = strategies.FixedWindowRateLimiter(storage)
    moving = strategies.MovingWindowRateLimiter(storage)
    second = parse("1 per second")
    assert fixed.hit(second, "old")
    assert moving.hit(second, "old-moving")
    assert not fixed.hit(second, "old")  # the limit holds within the window
    time.sleep(1.1)
    assert fixed.hit(parse("5 per minute"), "new")
    assert not any("old" in key for key in storage.storage)  # type: ignore[attr-defined]
    assert not any(storage.events.values())  # type: ignore[attr-defined]
    assert fixed.hit(second, "old")  # a new window


def test_concurrent_hits_count_every_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_limits, "SWEEP_SECONDS", 0.0)  # every hit tries to sweep
    storage = storage_from_string("memory://")
    limiter = strategies.FixedWindowRateLimiter(storage)
    item = parse("10000 per minute")
    # The window is started first: limits' own incr can lose the very first hit of a window to a
    # concurrent read (it sets the expiry after counting, and a read meanwhile takes the key as expired).
    assert limiter.hit(item, "shared")
    errors: list[BaseException] = []

    def hit() -> None:
        try:
            for _ in range(200):
                limiter.hit(item, "shared")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=hit) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert limiter.get_window_stats(item, "shared").remaining == 10000 - 8 * 200 - 1


def test_sweeps_racing_hits_on_expiring_keys_raise_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep runs inside a request's hit, so it must survive what other threads do meanwhile: read an
    expired counter (which drops it), start a new window, add keys."""
    monkeypatch.setattr(app_limits, "SWEEP_SECONDS", 0.0)  # every hit tries to sweep
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as the interpreter lets them
    storage = storage_from_string("memory://")
    limiter = strategies.FixedWindowRateLimiter(storage)
    moving = strategies.MovingWindowRateLimiter(storage)
    second, shared = parse("1 per second"), parse("1000000 per minute")
    assert limiter.hit(shared, "shared")  # its window started first (see the test above)
    errors: list[BaseException] = []
    counted = [0] * 8
    until = time.monotonic() + 2.5  # keys written in the first second expire while the threads still run

    def hit(n: int) -> None:
        try:
            i = 0
            while time.monotonic() < until:
                key = f"short:{i % 50}"  # shared by the threads: read, expired and renewed by all of them
                limiter.hit(second, key)
                limiter.get_window_stats(second, key)
                moving.hit(second, f"moving:{i % 50}")
                limiter.hit(shared, "shared")
                counted[n] += 1
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=hit, args=(n,)) for n in range(8)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
    assert limiter.get_window_stats(shared, "shared").remaining == 1000000 - sum(counted) - 1


class _Meanwhile(dict):  # type: ignore[type-arg]
    """Expirations that change right after the sweep lists them, as another thread's hit would change them:
    ``drop`` (reading an expired counter drops it) or ``renew`` (a new window starts)."""

    def __init__(self, data: dict[str, float], storage: Any, key: str, change: str) -> None:
        super().__init__(data)
        self.storage, self.key, self.change = storage, key, change

    def _listed(self, view: Any) -> list[Any]:
        listed = list(view)
        if self.change == "drop":
            self.storage.storage.pop(self.key, None)
            self.pop(self.key, None)
        else:
            self.storage.storage[self.key] = 1
            self[self.key] = time.time() + 60
        return listed

    def keys(self) -> Any:
        return self._listed(super().keys())

    def items(self) -> Any:
        return self._listed(super().items())


@pytest.mark.parametrize("change", ["drop", "renew"])
def test_a_sweep_survives_a_key_that_changes_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    monkeypatch.setattr(app_limits, "SWEEP_SECONDS", 3600.0)  # no sweep until the test asks for one
    storage = storage_from_string("memory://")
    limiter = strategies.FixedWindowRateLimiter(storage)
    second = parse("1 per second")
    assert limiter.hit(second, "changing")
    assert limiter.hit(second, "expired")
    time.sleep(1.05)
    changing = next(key for key in storage.expirations if "changing" in key)  # type: ignore[attr-defined]
    storage.expirations = _Meanwhile(storage.expirations, storage, changing, change)  # type: ignore[attr-defined]
    monkeypatch.setattr(app_limits, "SWEEP_SECONDS", 0.0)
    storage._next_sweep = 0.0  # type: ignore[attr-defined]
    assert limiter.hit(parse("5 per minute"), "other")  # sweeps, inside this hit
    assert not any("expired" in key for key in storage.storage)  # type: ignore[attr-defined]
    if change == "renew":  # the window the other hit started survives the sweep
        assert storage.storage[changing] == 1  # type: ignore[attr-defined]
        assert not limiter.hit(second, "changing")
