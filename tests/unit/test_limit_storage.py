"""``memory://`` rate limits (api/common/limits.py MemoryStorage): no thread per hit; expired keys swept."""

from __future__ import annotations

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
    assert limiter.get_window_stats(item, "shared").remaining == 10000 - 8 * 200
