"""Geocoding: intake stores the centroid and schedules the address; the scheduler job asks geopy's real
Nominatim (against the local fake in tests/support_nominatim.py), caches, rejects far-away hits, backs off on
failures and gives up in the end. No test reaches the network and none sleeps for a backoff: time moves on the
FakeClock and the job gets ``now``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from dispatch import scheduling
from dispatch.clock import FakeClock
from dispatch.config import ConfigError
from dispatch.extensions import db
from dispatch.geo import geocoding
from dispatch.geo.geocoding import LEASE, USER_AGENT, GeocodeResult, geocode_pending
from dispatch.models import Address, GeocodeCacheEntry, Order
from tests.conftest import T0, make_app
from tests.support_nominatim import FakeNominatim, SeenRequest, dead_port

WUHUA = (25.0426, 102.7041)  # the 五华区 centroid seeded by the migrations
TEXT = "昆明市五华区人民中路2号"  # already names its district and city: the query is the text itself
NEAR = (25.0441, 102.7093)  # about 0.6 km from the centroid
BEIJING = (39.9087, 116.3975)  # a same-named street in another city


@pytest.fixture(autouse=True)
def geocoder_off(session_app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default geocoding settings for every test, whatever the environment says."""
    settings = {
        "GEOCODER": "none",
        "NOMINATIM_URL": None,
        "GEOCODER_TIMEOUT_SECONDS": 0.5,
        "GEOCODER_MIN_DELAY_SECONDS": 0.0,  # the rate limiter would sleep for real
        "GEOCODE_MAX_KM_FROM_DISTRICT": 30.0,
        "GEOCODE_MAX_ATTEMPTS": 8,
    }
    for key, value in settings.items():
        monkeypatch.setitem(session_app.config, key, value)


@pytest.fixture
def fake() -> Iterator[FakeNominatim]:
    server = FakeNominatim().start()
    yield server
    server.stop()


@pytest.fixture
def geocoder(session_app: Flask, fake: FakeNominatim, monkeypatch: pytest.MonkeyPatch) -> FakeNominatim:
    """GEOCODER=nominatim pointing at the fake."""
    monkeypatch.setitem(session_app.config, "GEOCODER", "nominatim")
    monkeypatch.setitem(session_app.config, "NOMINATIM_URL", fake.url)
    return fake


@pytest.fixture
def centroid_address(make_order: Callable[..., Order]) -> Callable[..., int]:
    """Take in an order whose address has no coordinates → the address id."""

    def factory(text: str = TEXT, district: str = "五华区") -> int:
        return make_order(address={"text": text, "district": district}).address.id

    return factory


def address(address_id: int) -> Any:
    """The address row as the database has it now (the job writes with Core, past the session)."""
    return db.session.execute(
        sa.select(
            Address.lat,
            Address.lng,
            Address.location_source,
            Address.geocode_next_at,
            Address.geocode_attempts,
        ).where(Address.id == address_id)
    ).one()


def cache_row(query: str) -> GeocodeCacheEntry | None:
    return db.session.get(GeocodeCacheEntry, query, populate_existing=True)


# --- intake -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["fake", "dead port"])
def test_intake_without_coordinates_stores_the_centroid_and_schedules_geocoding_without_a_request(
    app: Flask,
    geocoder: FakeNominatim,
    centroid_address: Callable[..., int],
    monkeypatch: pytest.MonkeyPatch,
    server: str,
) -> None:
    geocoder.add_place(TEXT, *NEAR)
    if server == "dead port":
        monkeypatch.setitem(app.config, "NOMINATIM_URL", f"http://127.0.0.1:{dead_port()}")

    row = address(centroid_address())

    assert (row.lat, row.lng) == pytest.approx(WUHUA)
    assert row.location_source == "centroid"
    assert row.geocode_next_at == T0 and row.geocode_attempts == 0
    assert geocoder.requests == []


def test_intake_with_coordinates_schedules_nothing(
    app: Flask, geocoder: FakeNominatim, make_order: Any
) -> None:
    order = make_order()  # intake_payload carries lat/lng

    row = address(order.address.id)

    assert row.location_source == "intake" and row.geocode_next_at is None
    assert geocode_pending(T0) == GeocodeResult()
    assert geocoder.requests == []


# --- the job ------------------------------------------------------------------------------------------


def test_the_job_geocodes_through_nominatim_and_caches_the_answer(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int]
) -> None:
    geocoder.add_place(TEXT, *NEAR, display_name="人民中路2号, 五华区, 昆明市, 云南省, 中国")
    address_id = centroid_address()

    result = geocode_pending(T0)

    assert result == GeocodeResult(geocoded=1)
    row = address(address_id)
    assert (row.lat, row.lng) == pytest.approx(NEAR)
    assert row.location_source == "geocoded" and row.geocode_next_at is None
    [seen] = geocoder.requests
    assert seen.path == "/search"
    assert seen.params["q"] == TEXT
    assert seen.params["format"] == "json"
    assert seen.params["limit"] == "1"
    assert seen.user_agent == USER_AGENT
    entry = cache_row(TEXT)
    assert entry is not None and (entry.lat, entry.lng) == pytest.approx(NEAR)
    assert entry.display_name == "人民中路2号, 五华区, 昆明市, 云南省, 中国"
    assert entry.provider == "nominatim" and entry.created_at == T0
    assert geocode_pending(T0 + timedelta(hours=1)) == GeocodeResult()  # settled: never asked again
    assert len(geocoder.requests) == 1


def test_the_query_adds_the_district_and_city_an_address_text_lacks(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int]
) -> None:
    geocoder.add_place("人民中路2号, 五华区, 昆明市", *NEAR)
    address_id = centroid_address("  人民中路２号 ")  # full-width digit, stray whitespace

    assert geocode_pending(T0) == GeocodeResult(geocoded=1)
    assert geocoder.queries == ["人民中路2号, 五华区, 昆明市"]
    assert address(address_id).location_source == "geocoded"


def test_a_nominatim_url_with_a_path_prefix_keeps_it(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "NOMINATIM_URL", geocoder.url + "/nominatim/")
    geocoder.add_place(TEXT, *NEAR)
    centroid_address()

    assert geocode_pending(T0) == GeocodeResult(geocoded=1)
    assert [seen.path for seen in geocoder.requests] == ["/nominatim/search"]


def test_the_cache_answers_a_second_identical_address_without_a_request(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int], clock: FakeClock
) -> None:
    geocoder.add_place(TEXT, *NEAR)
    centroid_address()
    assert geocode_pending(T0) == GeocodeResult(geocoded=1)

    clock.advance(hours=1)
    second = centroid_address("昆明市五华区人民中路２号  ")  # the same address, typed differently
    result = geocode_pending(clock.now())

    assert result == GeocodeResult(geocoded=1)
    assert len(geocoder.requests) == 1
    row = address(second)
    assert (row.lat, row.lng) == pytest.approx(NEAR) and row.location_source == "geocoded"


def test_identical_addresses_in_one_run_cost_one_request(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int]
) -> None:
    geocoder.add_place(TEXT, *NEAR)
    ids = [centroid_address() for _ in range(3)]

    assert geocode_pending(T0) == GeocodeResult(geocoded=3)
    assert geocoder.queries == [TEXT]
    assert {address(i).location_source for i in ids} == {"geocoded"}


def test_a_miss_keeps_the_centroid_is_cached_and_is_not_asked_again(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int], clock: FakeClock
) -> None:
    first = centroid_address()  # the fake knows no place: Nominatim answers []

    assert geocode_pending(T0) == GeocodeResult(missed=1)
    row = address(first)
    assert (row.lat, row.lng) == pytest.approx(WUHUA)
    assert row.location_source == "centroid" and row.geocode_next_at is None and row.geocode_attempts == 0
    entry = cache_row(TEXT)
    assert entry is not None and entry.lat is None and entry.lng is None

    clock.advance(days=1)
    geocoder.add_place(TEXT, *NEAR)  # even if the server would know it now: a miss is a definite answer
    second = centroid_address()
    assert geocode_pending(clock.now()) == GeocodeResult(missed=1)
    assert len(geocoder.requests) == 1
    assert address(second).location_source == "centroid"


def test_a_hit_far_from_the_district_is_rejected_and_cached_as_a_miss(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int]
) -> None:
    geocoder.add_place(TEXT, *BEIJING)
    address_id = centroid_address()

    assert geocode_pending(T0) == GeocodeResult(missed=1)
    row = address(address_id)
    assert (row.lat, row.lng) == pytest.approx(WUHUA) and row.location_source == "centroid"
    assert row.geocode_next_at is None
    entry = cache_row(TEXT)
    assert entry is not None and entry.lat is None


def test_the_distance_limit_is_configurable(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "GEOCODE_MAX_KM_FROM_DISTRICT", 0.1)  # NEAR is ~0.6 km away
    geocoder.add_place(TEXT, *NEAR)
    address_id = centroid_address()

    assert geocode_pending(T0) == GeocodeResult(missed=1)
    assert address(address_id).location_source == "centroid"


def _break(fake: FakeNominatim, failure: str) -> None:
    if failure == "down":
        fake.stop()
    elif failure == "timeout":
        fake.hang()
    else:
        fake.fail_with(int(failure))


def _mend(fake: FakeNominatim, failure: str) -> None:
    if failure == "down":
        fake.start()  # the same port again
    else:
        fake.recover()


FAILURES = ["500", "503", "timeout", "down"]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_keeps_the_centroid_backs_off_and_a_later_tick_succeeds(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int], clock: FakeClock, failure: str
) -> None:
    geocoder.add_place(TEXT, *NEAR)
    address_id = centroid_address()
    _break(geocoder, failure)

    assert geocode_pending(T0) == GeocodeResult(failed=1)
    row = address(address_id)
    assert (row.lat, row.lng) == pytest.approx(WUHUA) and row.location_source == "centroid"
    assert row.geocode_attempts == 1 and row.geocode_next_at == T0 + timedelta(seconds=60)
    assert cache_row(TEXT) is None  # a failure is not an answer
    asked = len(geocoder.requests)

    assert geocode_pending(T0 + timedelta(seconds=59)) == GeocodeResult()  # not due yet
    assert len(geocoder.requests) == asked

    _mend(geocoder, failure)
    clock.set(T0 + timedelta(seconds=60))
    assert geocode_pending(clock.now()) == GeocodeResult(geocoded=1)
    row = address(address_id)
    assert row.location_source == "geocoded" and row.geocode_next_at is None
    assert geocoder.queries[-1] == TEXT


def test_failures_back_off_exponentially_and_give_up_after_max_attempts(
    app: Flask,
    geocoder: FakeNominatim,
    centroid_address: Callable[..., int],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config, "GEOCODE_MAX_ATTEMPTS", 4)
    address_id = centroid_address()
    geocoder.fail_with(503)

    delays = []
    for attempt in (1, 2, 3):
        assert geocode_pending(clock.now()) == GeocodeResult(failed=1)
        row = address(address_id)
        assert row.geocode_attempts == attempt
        delays.append(row.geocode_next_at - clock.now())
        clock.set(row.geocode_next_at)
    assert delays == [timedelta(seconds=60), timedelta(seconds=120), timedelta(seconds=240)]

    assert geocode_pending(clock.now()) == GeocodeResult(gave_up=1)
    row = address(address_id)
    assert row.geocode_attempts == 4 and row.geocode_next_at is None
    assert (row.lat, row.lng) == pytest.approx(WUHUA) and row.location_source == "centroid"

    geocoder.recover()
    clock.advance(days=7)
    assert geocode_pending(clock.now()) == GeocodeResult()
    assert len(geocoder.requests) == 4


def test_a_failure_stops_the_run_asking_and_leaves_the_rest_due_without_counting_against_them(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int]
) -> None:
    texts = [f"昆明市五华区人民中路{n}号" for n in (10, 11, 12)]
    for text in texts:
        geocoder.add_place(text, *NEAR)
    first, *others = [centroid_address(text) for text in texts]
    geocoder.fail_with(503)

    assert geocode_pending(T0) == GeocodeResult(failed=1)
    assert len(geocoder.requests) == 1  # one failed request, not one per address
    assert address(first).geocode_attempts == 1
    for other in others:
        row = address(other)
        assert (row.geocode_attempts, row.geocode_next_at) == (0, T0)

    geocoder.recover()
    assert geocode_pending(T0) == GeocodeResult(geocoded=2)  # the first one waits for its backoff


def test_cached_answers_still_apply_in_a_run_whose_geocoder_fails(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int], clock: FakeClock
) -> None:
    geocoder.add_place(TEXT, *NEAR)
    centroid_address()
    geocode_pending(T0)
    clock.advance(minutes=1)
    unknown = centroid_address("昆明市五华区人民中路99号")
    known = centroid_address()
    geocoder.fail_with(500)

    assert geocode_pending(clock.now()) == GeocodeResult(geocoded=1, failed=1)
    assert address(known).location_source == "geocoded"
    assert address(unknown).geocode_attempts == 1


def test_with_geocoder_none_the_job_does_nothing(app: Flask, centroid_address: Callable[..., int]) -> None:
    address_id = centroid_address()

    result = geocode_pending(T0 + timedelta(hours=1))

    assert result == GeocodeResult() and not result
    row = address(address_id)
    assert row.location_source == "centroid"
    assert row.geocode_next_at == T0 and row.geocode_attempts == 0  # still waiting for a geocoder


def test_a_leased_address_is_not_claimed_again_until_the_lease_ends(
    app: Flask, geocoder: FakeNominatim, centroid_address: Callable[..., int]
) -> None:
    geocoder.add_place(TEXT, *NEAR)
    address_id = centroid_address()
    # A scheduler that claimed it and died before answering.
    claimed = geocoding._claim(T0, T0 + LEASE, 10)
    db.session.commit()
    assert [c.id for c in claimed] == [address_id]

    assert geocode_pending(T0 + LEASE - timedelta(seconds=1)) == GeocodeResult()
    assert geocoder.requests == []
    assert geocode_pending(T0 + LEASE) == GeocodeResult(geocoded=1)


def test_a_bad_geocoder_setting_fails_the_job_with_a_config_error(
    app: Flask, centroid_address: Callable[..., int], monkeypatch: pytest.MonkeyPatch
) -> None:
    centroid_address()
    monkeypatch.setitem(app.config, "GEOCODER", "nominatim")  # and NOMINATIM_URL stays unset

    with pytest.raises(ConfigError, match="NOMINATIM_URL"):
        geocode_pending(T0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"GEOCODER": "nominatim"}, "NOMINATIM_URL"),
        ({"GEOCODER": "nominatim", "NOMINATIM_URL": "nominatim.example.org"}, "http"),
        ({"GEOCODER": "google"}, "GEOCODER"),
    ],
)
def test_bad_geocoder_config_stops_the_app_at_start(
    overrides: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOMINATIM_URL", raising=False)
    with pytest.raises(ConfigError, match=message):
        make_app("sqlite:///:memory:", **overrides)


# --- with real commits: the scheduler job, the lease, two schedulers ------------------------------------


@pytest.fixture
def committed_geocoder(committed_app: Flask, geocoder: FakeNominatim) -> FakeNominatim:
    return geocoder


def test_the_scheduler_runs_the_geocoding_job_every_tick(
    committed_app: Flask, committed_geocoder: FakeNominatim, centroid_address: Callable[..., int]
) -> None:
    job = next(j for j in scheduling.JOBS if j.id == "geocode-addresses")
    assert job.seconds(committed_app) == committed_app.config["SCHEDULER_TICK_SECONDS"]
    committed_geocoder.add_place(TEXT, *NEAR)
    address_id = centroid_address()
    db.session.remove()

    assert scheduling.run_job(committed_app, job) == GeocodeResult(geocoded=1)

    assert address(address_id).location_source == "geocoded"


def _as_utc(value: Any) -> datetime:
    """A timestamp as SQLite (naive UTC text) or PostgreSQL (aware) returns it, as an aware UTC datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)  # type: ignore[no-any-return]


def _lock_row_from_another_connection(url: str, address_id: int) -> Any:
    """From a connection of its own, lock the address row at once (failing if anyone holds it, or on
    SQLite the write lock) and read its ``geocode_next_at``."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # "database is locked" if a writer holds a transaction open
            value = conn.execute(
                "SELECT geocode_next_at FROM addresses WHERE id = ?", (address_id,)
            ).fetchone()
            conn.execute("ROLLBACK")
            return value[0]
        finally:
            conn.close()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT geocode_next_at FROM addresses WHERE id = :id FOR UPDATE NOWAIT")
            value = conn.execute(query, {"id": address_id}).scalar_one()
            conn.rollback()
            return value
    finally:
        engine.dispose()


def test_the_claim_is_committed_and_no_transaction_is_open_while_the_geocoder_is_asked(
    committed_app: Flask, committed_geocoder: FakeNominatim, centroid_address: Callable[..., int]
) -> None:
    committed_geocoder.add_place(TEXT, *NEAR)
    address_id = centroid_address()
    url = committed_app.config["SQLALCHEMY_DATABASE_URI"]
    during: list[Any] = []

    def probe(seen: SeenRequest) -> None:
        try:
            during.append(_lock_row_from_another_connection(url, address_id))
        except Exception as exc:  # reported by the assertion below, not lost in the server thread
            during.append(exc)

    committed_geocoder.on_request = probe

    assert geocode_pending(T0) == GeocodeResult(geocoded=1)

    [seen_during] = during
    assert not isinstance(seen_during, Exception), seen_during
    assert _as_utc(seen_during) == T0 + LEASE  # the lease was committed before the request went out


def test_two_schedulers_never_ask_for_the_same_address(
    committed_app: Flask,
    committed_geocoder: FakeNominatim,
    centroid_address: Callable[..., int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(committed_app.config, "GEOCODER_TIMEOUT_SECONDS", 5.0)  # the other run answers first
    texts = [f"昆明市五华区人民中路{n}号" for n in range(20, 24)]
    for text in texts:
        committed_geocoder.add_place(text, *NEAR)
    ids = [centroid_address(text) for text in texts]
    db.session.remove()
    other: list[GeocodeResult] = []

    def run_other() -> None:
        with committed_app.app_context():
            try:
                other.append(geocode_pending(T0, limit=2))
            finally:
                db.session.remove()

    def second_scheduler(seen: SeenRequest) -> None:
        # While the first scheduler waits for its first answer, a second one runs a whole batch.
        committed_geocoder.on_request = None
        thread = threading.Thread(target=run_other)
        thread.start()
        thread.join(timeout=4)

    committed_geocoder.on_request = second_scheduler

    first = geocode_pending(T0, limit=2)

    assert first == GeocodeResult(geocoded=2) and other == [GeocodeResult(geocoded=2)]
    assert sorted(committed_geocoder.queries) == sorted(texts)  # each asked once
    assert {address(i).location_source for i in ids} == {"geocoded"}
