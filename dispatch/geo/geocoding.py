"""Geocoding through geopy's Nominatim, off the request path, with a cache and district centroids behind it.

Intake never calls the geocoder: an address without coordinates of its own gets its district's centroid and a
``geocode_next_at`` (services/intake.py). The scheduler's ``geocode-addresses`` job (:func:`geocode_pending`)
claims due addresses, commits the claim as a lease, and only then asks the cache or the geocoder, so no
database transaction stays open over HTTP and two scheduler processes never ask for the same address. A
definite answer (a hit near the district, or a miss) is final and cached; a failure is retried with
exponential backoff and given up after ``GEOCODE_MAX_ATTEMPTS``, the centroid staying in place.

This is the only module that imports geopy's geocoders and rate limiter (DESIGN.md decision 7).
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask, current_app
from geopy.adapters import URLLibAdapter
from geopy.distance import geodesic
from geopy.exc import GeocoderServiceError
from geopy.extra.rate_limiter import RateLimiter
from geopy.geocoders import Nominatim
from sqlalchemy.dialects import postgresql, sqlite

from dispatch.config import ConfigError
from dispatch.extensions import db
from dispatch.models import Address, District, GeocodeCacheEntry

log = logging.getLogger("dispatch.geocoding")

PROVIDER = "nominatim"
# Nominatim's usage policy asks for a User-Agent that identifies the application (geopy's default is refused).
USER_AGENT = "dispatch-zhuangwei/0.1 (telecom field dispatch)"
BATCH = 20
# Long enough for a whole batch of slow answers (BATCH x (timeout + delay)); a scheduler that dies mid-batch
# only delays its unfinished addresses by this much.
LEASE = timedelta(minutes=15)
FIRST_RETRY = timedelta(seconds=60)
MAX_RETRY = timedelta(hours=6)
# geopy turns HTTP errors, timeouts and refused connections into GeocoderServiceError subclasses; OSError
# covers a socket error that an adapter lets through.
FAILURES: tuple[type[BaseException], ...] = (GeocoderServiceError, OSError)
# The settings a built geocoder depends on: a change (a test's monkeypatch, say) builds a new one.
_SETTINGS = ("GEOCODER", "NOMINATIM_URL", "GEOCODER_TIMEOUT_SECONDS", "GEOCODER_MIN_DELAY_SECONDS")
_KEY_LENGTH = 600  # geocode_cache.query is a String(600)

Geocode = Callable[..., Any]
"""``geocode(query, exactly_one=True)`` → a geopy ``Location`` or None; raises on failure."""


@dataclass(frozen=True)
class Answer:
    """What the geocoder said about one query: a position, or a miss (lat and lng None)."""

    lat: float | None = None
    lng: float | None = None
    display_name: str | None = None

    @property
    def found(self) -> bool:
        return self.lat is not None and self.lng is not None


MISS = Answer()


@dataclass
class GeocodeResult:
    """One run of the job: addresses geocoded, settled on their centroid, to be retried, given up."""

    geocoded: int = 0
    missed: int = 0
    failed: int = 0
    gave_up: int = 0

    def __bool__(self) -> bool:
        return bool(self.geocoded or self.missed or self.failed or self.gave_up)


# --- the geocoder -------------------------------------------------------------------------------------


def parse_nominatim_url(url: str | None) -> tuple[str, str]:
    """``NOMINATIM_URL`` as geopy's Nominatim takes it: ``(scheme, domain)``, a path prefix in the domain."""
    if not url:
        raise ConfigError("GEOCODER=nominatim needs NOMINATIM_URL, the base URL of a Nominatim server")
    parts = urlsplit(url.strip())
    try:
        valid_port = parts.port != 0  # urllib raises on a port that is not a number or out of range
    except ValueError:
        valid_port = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not valid_port or parts.query:
        raise ConfigError(
            f"NOMINATIM_URL must be an http(s) base URL like https://nominatim.example.org, got {url!r}"
        )
    # geopy appends /search to the domain, so a server mounted under a prefix keeps it; a URL pasted with
    # /search at the end would otherwise ask /search/search.
    path = parts.path.rstrip("/").removesuffix("/search")
    return parts.scheme, parts.netloc + path


def build_geocoder(config: Mapping[str, Any]) -> Geocode | None:
    """geopy's Nominatim behind its RateLimiter as ``config`` describes it, or None for ``GEOCODER=none``."""
    kind = config["GEOCODER"]
    if kind == "none":
        return None
    if kind != "nominatim":
        raise ConfigError(f"GEOCODER must be 'none' or 'nominatim', got {kind!r}")
    scheme, domain = parse_nominatim_url(config["NOMINATIM_URL"])
    nominatim = Nominatim(
        domain=domain,
        scheme=scheme,
        user_agent=USER_AGENT,
        timeout=float(config["GEOCODER_TIMEOUT_SECONDS"]),
        # urllib makes exactly one attempt per call: geopy's default RequestsAdapter lets urllib3 retry a
        # read timeout twice, tripling the wait on a hung server. The job retries, with backoff.
        adapter_factory=URLLibAdapter,
    )
    # No retries inside the limiter (they would sleep in the scheduler) and no swallowed exceptions: a
    # failure must reach geocode_pending, which reschedules the address with backoff.
    limited: Geocode = RateLimiter(
        nominatim.geocode,
        min_delay_seconds=float(config["GEOCODER_MIN_DELAY_SECONDS"]),
        max_retries=0,
        error_wait_seconds=float(config["GEOCODER_MIN_DELAY_SECONDS"]),
        swallow_exceptions=False,
    )
    return limited


def geocoder_for(app: Flask) -> Geocode | None:
    """The app's geocoder, built once per configuration (its rate limiter must outlive a single run)."""
    settings = tuple(app.config.get(name) for name in _SETTINGS)
    held = app.extensions.get("geocoder")
    if held is None or held[0] != settings:
        held = (settings, build_geocoder(app.config))
        app.extensions["geocoder"] = held
    geocode: Geocode | None = held[1]
    return geocode


# --- queries and the cache ----------------------------------------------------------------------------


def _clean(text: str) -> str:
    # NFKC folds full-width digits, letters and punctuation (common in typed Chinese addresses) to their
    # ASCII forms, so "人民中路１号" and "人民中路1号" are one query.
    return " ".join(unicodedata.normalize("NFKC", text).split())


def normalise_query(text: str, *context: str | None) -> str:
    """The geocoder query for an address: its text, then each context part (district, city) it lacks."""
    query = _clean(text)
    for part in context:
        cleaned = _clean(part or "")
        if cleaned and cleaned not in query:
            query = f"{query}, {cleaned}"
    return query


def cache_key(query: str) -> str:
    """The cache's primary key for ``query``: the query itself, or a digest-suffixed prefix when too long."""
    if len(query) <= _KEY_LENGTH:
        return query
    digest = hashlib.sha256(query.encode()).hexdigest()
    return f"{query[: _KEY_LENGTH - len(digest) - 1]}#{digest}"


def cached_answers(queries: Iterable[str]) -> dict[str, Answer]:
    """The cached answers for those of ``queries`` that were asked before (misses included)."""
    by_key = {cache_key(query): query for query in queries}
    if not by_key:
        return {}
    rows = db.session.execute(
        sa.select(
            GeocodeCacheEntry.query,
            GeocodeCacheEntry.lat,
            GeocodeCacheEntry.lng,
            GeocodeCacheEntry.display_name,
        ).where(GeocodeCacheEntry.query.in_(by_key))
    )
    return {by_key[row.query]: Answer(row.lat, row.lng, row.display_name) for row in rows}


def remember(query: str, answer: Answer, now: datetime) -> None:
    """Cache ``answer`` for ``query`` (the caller commits); an answer already cached stays."""
    insert = postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(GeocodeCacheEntry).on_conflict_do_nothing(index_elements=["query"])
    db.session.execute(
        statement.values(
            query=cache_key(query),
            lat=answer.lat,
            lng=answer.lng,
            display_name=answer.display_name,
            provider=PROVIDER,
            created_at=now,
        )
    )


# --- pure policy --------------------------------------------------------------------------------------


def retry_delay(failures: int) -> timedelta:
    """How long to wait after the ``failures``-th failure in a row: 60 s, doubling, at most 6 h."""
    exponent = min(max(failures, 1) - 1, 20)  # 2**20 minutes is far past the cap; no huge integers
    return min(FIRST_RETRY * (1 << exponent), MAX_RETRY)


def within_reach(answer: Answer, centroid: tuple[float, float] | None, max_km: float) -> bool:
    """Whether a hit lies within ``max_km`` of the district centroid (a same-named street in another city
    does not); without a centroid there is nothing to compare with."""
    if answer.lat is None or answer.lng is None:
        return False
    if centroid is None:
        return True
    return bool(geodesic((answer.lat, answer.lng), centroid).km <= max_km)


# --- the scheduler job --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    id: int
    query: str
    centroid: tuple[float, float] | None
    attempts: int


def _claim(now: datetime, lease_until: datetime, limit: int) -> list[_Claimed]:
    """Lease up to ``limit`` due addresses (their ``geocode_next_at`` moves to ``lease_until``); the caller
    commits."""
    due = Address.geocode_next_at <= now
    candidates = sa.select(Address.id).where(due).order_by(Address.geocode_next_at, Address.id).limit(limit)
    if db.session.get_bind().dialect.name == "postgresql":
        # Concurrent schedulers take disjoint rows; the CTE is materialised so the locking select runs once
        # (as in sla/tick.py). SQLite has no SKIP LOCKED but serialises writers with BEGIN IMMEDIATE.
        locked = candidates.with_for_update(skip_locked=True).cte("due_addresses").prefix_with("MATERIALIZED")
        claim = sa.update(Address).where(Address.id == locked.c.id)
    else:
        claim = sa.update(Address).where(Address.id.in_(candidates.scalar_subquery()), due)
    ids = list(
        db.session.scalars(
            claim.values(geocode_next_at=lease_until)
            .returning(Address.id)
            .execution_options(synchronize_session=False)
        )
    )
    if not ids:
        return []
    rows = db.session.execute(
        sa.select(
            Address.id,
            Address.text,
            Address.district_name,
            Address.geocode_attempts,
            District.city,
            District.lat,
            District.lng,
        )
        .outerjoin(District, District.id == Address.district_id)
        .where(Address.id.in_(ids))
        .order_by(Address.id)
    )
    return [
        _Claimed(
            id=row.id,
            query=normalise_query(row.text, row.district_name, row.city),
            centroid=(row.lat, row.lng) if row.lat is not None and row.lng is not None else None,
            attempts=row.geocode_attempts or 0,
        )
        for row in rows
    ]


def _settle(address: _Claimed, lease_until: datetime, **values: Any) -> bool:
    """Write ``values`` to a claimed address unless its lease was lost (then another scheduler has it)."""
    statement = (
        sa.update(Address)
        .where(Address.id == address.id, Address.geocode_next_at == lease_until)
        .values(**values)
        .returning(Address.id)
        .execution_options(synchronize_session=False)
    )
    return db.session.execute(statement).first() is not None


def _ask(geocode: Geocode, query: str) -> Answer:
    location = geocode(query, exactly_one=True)
    if location is None:
        return MISS
    return Answer(float(location.latitude), float(location.longitude), str(location.address)[:500])


def geocode_pending(now: datetime, *, limit: int = BATCH) -> GeocodeResult:
    """Scheduler job: geocode the addresses due at ``now`` (cache first), one committed address at a time."""
    result = GeocodeResult()
    geocode = geocoder_for(current_app)
    if geocode is None:
        return result  # GEOCODER=none: the centroids stay and the addresses stay scheduled for a geocoder
    max_km = float(current_app.config["GEOCODE_MAX_KM_FROM_DISTRICT"])
    max_attempts = int(current_app.config["GEOCODE_MAX_ATTEMPTS"])
    lease_until = now + LEASE
    claimed = _claim(now, lease_until, limit)
    if not claimed:
        db.session.commit()
        return result
    answers = cached_answers({address.query for address in claimed})
    # The lease is visible to other schedulers before any request, and no transaction (on SQLite: no write
    # lock) is held while the geocoder is asked.
    db.session.commit()
    unreachable = False
    for address in claimed:
        answer = answers.get(address.query)
        if answer is None and unreachable:
            # The geocoder just failed: a server that is down costs one request per run, not one per address.
            # The address is due again at once, without a failure counted against it.
            _settle(address, lease_until, geocode_next_at=now)
            db.session.commit()
            continue
        if answer is None:
            try:
                answer = _ask(geocode, address.query)
            except FAILURES as exc:
                unreachable = True
                _fail(address, lease_until, now, max_attempts, exc, result)
                db.session.commit()
                continue
            if answer.found and not within_reach(answer, address.centroid, max_km):
                log.info("geocoder placed address %s more than %s km from its district", address.id, max_km)
                answer = MISS
            answers[address.query] = answer
            remember(address.query, answer, now)
        if within_reach(answer, address.centroid, max_km):
            applied = _settle(
                address,
                lease_until,
                lat=answer.lat,
                lng=answer.lng,
                location_source="geocoded",
                geocode_next_at=None,
            )
            result.geocoded += int(applied)
        else:
            # A definite "not found" is not asked again; the centroid stays.
            result.missed += int(_settle(address, lease_until, geocode_next_at=None))
        db.session.commit()
    return result


def _fail(
    address: _Claimed,
    lease_until: datetime,
    now: datetime,
    max_attempts: int,
    exc: BaseException,
    result: GeocodeResult,
) -> None:
    """Count a failed request against the address: retry later with backoff, or give up on the centroid."""
    attempts = address.attempts + 1
    why = type(exc).__name__  # not the message: geopy's can carry the request URL, the customer's address
    if attempts >= max_attempts:
        log.warning(
            "geocoding address %s failed %d times (%s); keeping its centroid", address.id, attempts, why
        )
        result.gave_up += int(_settle(address, lease_until, geocode_attempts=attempts, geocode_next_at=None))
        return
    retry_at = now + retry_delay(attempts)
    log.warning("geocoding address %s failed (%s); retry %d at %s", address.id, why, attempts, retry_at)
    result.failed += int(_settle(address, lease_until, geocode_attempts=attempts, geocode_next_at=retry_at))
