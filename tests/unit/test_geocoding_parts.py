"""Pure parts of geocoding without an app: queries and cache keys, backoff, the distance check, the
NOMINATIM_URL parsing, the geocoder the settings build, and the settings' validation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from geopy.extra.rate_limiter import RateLimiter
from geopy.geocoders import Nominatim

from dispatch.config import ConfigError, load_config
from dispatch.geo.geocoding import (
    USER_AGENT,
    Answer,
    build_geocoder,
    cache_key,
    normalise_query,
    parse_nominatim_url,
    retry_delay,
    within_reach,
)

WUHUA = (25.0426, 102.7041)


@pytest.mark.parametrize(
    ("text", "context", "query"),
    [
        ("昆明市五华区人民中路2号", ("五华区", "昆明市"), "昆明市五华区人民中路2号"),
        ("  人民中路 \t 2号\n", ("五华区", "昆明市"), "人民中路 2号, 五华区, 昆明市"),
        ("人民中路２号　Ａ栋", ("五华区",), "人民中路2号 A栋, 五华区"),  # full-width forms and space
        ("五华区人民中路2号", ("五华区", None, ""), "五华区人民中路2号"),
    ],
)
def test_the_query_is_the_cleaned_text_with_the_context_it_lacks(text, context, query):
    assert normalise_query(text, *context) == query


def test_differently_typed_same_addresses_give_one_query():
    typed = normalise_query("昆明市五华区人民中路２号  ", "五华区")
    assert typed == normalise_query(" 昆明市五华区人民中路2号", "五华区")


def test_a_cache_key_is_the_query_unless_too_long_for_the_column():
    assert cache_key("昆明市五华区人民中路2号") == "昆明市五华区人民中路2号"
    long_a, long_b = "路" * 700 + "1号", "路" * 700 + "2号"
    assert len(cache_key(long_a)) == 600
    assert cache_key(long_a) != cache_key(long_b)
    assert cache_key(long_a) == cache_key(long_a)


def test_retry_delay_doubles_from_a_minute_and_is_capped_at_six_hours():
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [timedelta(seconds=s) for s in (60, 120, 240, 480)]
    assert retry_delay(9) == timedelta(seconds=60 * 256)
    assert retry_delay(10) == timedelta(hours=6)
    assert retry_delay(10_000) == timedelta(hours=6)
    assert retry_delay(0) == timedelta(seconds=60)


def test_a_hit_counts_only_within_reach_of_the_district_centroid():
    near = Answer(25.0441, 102.7093)  # ~0.6 km
    beijing = Answer(39.9087, 116.3975)
    assert within_reach(near, WUHUA, 30)
    assert not within_reach(near, WUHUA, 0.1)
    assert not within_reach(beijing, WUHUA, 30)
    assert within_reach(beijing, None, 30)  # no centroid to compare with
    assert not within_reach(Answer(), WUHUA, 30)  # a miss is never a hit


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("http://127.0.0.1:8080", ("http", "127.0.0.1:8080")),
        ("https://nominatim.example.org/", ("https", "nominatim.example.org")),
        ("https://maps.example.org/nominatim/", ("https", "maps.example.org/nominatim")),
        ("http://127.0.0.1:8080/nominatim/search", ("http", "127.0.0.1:8080/nominatim")),
    ],
)
def test_nominatim_url_becomes_scheme_and_domain_with_its_path_prefix(url, parsed):
    assert parse_nominatim_url(url) == parsed


@pytest.mark.parametrize(
    "url",
    [None, "", "nominatim.example.org", "ftp://h", "http://", "http://h:port", "http://h:0", "http://h/?q=1"],
)
def test_an_unusable_nominatim_url_is_a_config_error(url):
    with pytest.raises(ConfigError, match="NOMINATIM_URL"):
        parse_nominatim_url(url)


def settings(**overrides):
    return load_config({"GEOCODER_MIN_DELAY_SECONDS": 0.0, **overrides})


def test_geocoder_none_builds_no_geocoder():
    assert build_geocoder(settings(GEOCODER="none")) is None


def test_nominatim_is_built_behind_a_rate_limiter_that_lets_failures_through():
    config = settings(
        GEOCODER="nominatim",
        NOMINATIM_URL="https://maps.example.org/nominatim",
        GEOCODER_TIMEOUT_SECONDS=2.5,
        GEOCODER_MIN_DELAY_SECONDS=1.5,
    )

    limiter = build_geocoder(config)

    assert isinstance(limiter, RateLimiter)
    assert limiter.min_delay_seconds == 1.5
    assert limiter.max_retries == 0 and limiter.swallow_exceptions is False
    nominatim = limiter.func.__self__
    assert isinstance(nominatim, Nominatim)
    assert nominatim.api == "https://maps.example.org/nominatim/search"
    assert nominatim.timeout == 2.5
    assert nominatim.headers["User-Agent"] == USER_AGENT


def test_the_geocoding_defaults_follow_the_public_nominatim_policy(monkeypatch):
    names = ("GEOCODER", "GEOCODER_TIMEOUT_SECONDS", "GEOCODER_MIN_DELAY_SECONDS")
    for name in (*names, "GEOCODE_MAX_KM_FROM_DISTRICT", "GEOCODE_MAX_ATTEMPTS"):
        monkeypatch.delenv(name, raising=False)
    config = load_config()
    assert config["GEOCODER"] == "none"
    assert config["GEOCODER_TIMEOUT_SECONDS"] == 5
    assert config["GEOCODER_MIN_DELAY_SECONDS"] == 1.0
    assert config["GEOCODE_MAX_KM_FROM_DISTRICT"] == 30
    assert config["GEOCODE_MAX_ATTEMPTS"] == 8


def test_geocoding_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("GEOCODER", "nominatim")
    monkeypatch.setenv("NOMINATIM_URL", "http://127.0.0.1:8088")
    monkeypatch.setenv("GEOCODER_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("GEOCODE_MAX_ATTEMPTS", "3")
    config = load_config()
    assert (config["GEOCODER"], config["NOMINATIM_URL"]) == ("nominatim", "http://127.0.0.1:8088")
    assert (config["GEOCODER_TIMEOUT_SECONDS"], config["GEOCODE_MAX_ATTEMPTS"]) == (2.5, 3)


def test_geocoder_nominatim_without_a_url_in_the_environment_is_a_config_error(monkeypatch):
    monkeypatch.setenv("GEOCODER", "nominatim")
    monkeypatch.delenv("NOMINATIM_URL", raising=False)
    with pytest.raises(ConfigError, match="NOMINATIM_URL"):
        load_config()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GEOCODER": "google"}, "GEOCODER must be one of none, nominatim"),
        ({"GEOCODER_TIMEOUT_SECONDS": "soon"}, "GEOCODER_TIMEOUT_SECONDS must be a number"),
        ({"GEOCODER_TIMEOUT_SECONDS": "0"}, "GEOCODER_TIMEOUT_SECONDS must be positive"),
        ({"GEOCODER_MIN_DELAY_SECONDS": "-1"}, "GEOCODER_MIN_DELAY_SECONDS"),
        ({"GEOCODE_MAX_KM_FROM_DISTRICT": "0"}, "GEOCODE_MAX_KM_FROM_DISTRICT"),
        ({"GEOCODE_MAX_ATTEMPTS": "0"}, "GEOCODE_MAX_ATTEMPTS"),
    ],
)
def test_bad_geocoding_settings_are_config_errors(monkeypatch, env, message):
    monkeypatch.delenv("GEOCODER", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_config()
