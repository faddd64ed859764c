"""Candidate ranking (dispatch/assignment/scoring.py): pure numpy over a pool of engineer facts, no app."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.assignment.scoring import FACTORS, HARD_FILTERS, Pool, Weights, rank, violations
from dispatch.geo.distance import geodesic_km, haversine_km

ORDER = (25.0423, 102.7065)  # 五华区
W = Weights()


def pool_of(rows: list[dict[str, object]]) -> Pool:
    """A pool from per-engineer dicts (defaults: qualified, 1 km north-ish, idle, own team)."""
    n = len(rows)
    broken = np.zeros((n, len(HARD_FILTERS)), dtype=bool)
    for i, row in enumerate(rows):
        for code in row.get("broken", ()):  # type: ignore[attr-defined]
            broken[i, HARD_FILTERS.index(code)] = True

    def col(name: str, default: object, dtype: type) -> np.ndarray:
        return np.array([row.get(name, default) for row in rows], dtype=dtype)

    return Pool(
        ids=col("id", 0, np.int64),
        broken=broken,
        lat=col("lat", ORDER[0] + 0.009, np.float64),
        lng=col("lng", ORDER[1], np.float64),
        load=col("load", 0, np.int64),
        capacity=col("capacity", 6, np.int64),
        urgent=col("urgent", 0, np.int64),
        team=col("team", 0, np.int64),
        open_orders=col("open", 0, np.int64),
    )


def test_the_closer_of_two_otherwise_equal_engineers_ranks_first() -> None:
    pool = pool_of([{"id": 1, "lat": ORDER[0] + 0.1}, {"id": 2, "lat": ORDER[0] + 0.01}])
    ranked = rank(pool, *ORDER, W, max_km=30, limit=10)
    assert [r.engineer_id for r in ranked] == [2, 1]
    assert ranked[0].haversine_km == pytest.approx(1.112, abs=0.01)


def test_each_factor_moves_the_score_in_its_direction() -> None:
    base = {"id": 1, "team": 0, "open": 1}
    busy = {"id": 2, "load": 5, "team": 0, "open": 1}
    late = {"id": 3, "urgent": 3, "team": 0, "open": 1}
    crowded_team = {"id": 4, "team": 1, "open": 9}
    ranked = rank(pool_of([base, busy, late, crowded_team]), *ORDER, W, max_km=30, limit=10)
    assert ranked[0].engineer_id == 1
    by_id = {r.engineer_id: r for r in ranked}
    assert by_id[2].reasons["load"]["value"] == pytest.approx(1 / 6, abs=1e-4)
    assert by_id[3].reasons["sla_urgency"]["value"] == 0
    assert by_id[4].reasons["team_balance"]["value"] == 0
    assert by_id[1].reasons["team_balance"]["value"] == 1  # the least loaded team


def test_equally_loaded_teams_make_team_balance_no_preference() -> None:
    ranked = rank(
        pool_of([{"id": 1, "team": 0, "open": 2}, {"id": 2, "team": 1, "open": 2}]),
        *ORDER,
        W,
        max_km=30,
        limit=9,
    )
    assert [r.reasons["team_balance"]["value"] for r in ranked] == [1, 1]


def test_the_score_is_the_weighted_mean_of_the_reasons() -> None:
    weights = Weights.parse("distance=2,load=1,sla_urgency=0,team_balance=1")
    pool = pool_of([{"id": 7, "lat": ORDER[0] + 0.05, "load": 2, "urgent": 1}])
    (only,) = rank(pool, *ORDER, weights, max_km=20, limit=1)
    expected = sum(only.reasons[f]["value"] * only.reasons[f]["weight"] for f in FACTORS) / weights.total()
    assert only.score == pytest.approx(expected, abs=1e-4)
    assert {f: only.reasons[f]["weight"] for f in FACTORS} == weights.as_dict()
    assert only.reasons["distance"]["km"] == pytest.approx(5.56, abs=0.01)
    assert only.reasons["load"]["orders_that_day"] == 2


def test_an_engineer_without_a_position_scores_nothing_for_distance_but_may_still_rank() -> None:
    pool = pool_of([{"id": 1, "lat": math.nan, "lng": math.nan}, {"id": 2}])
    ranked = rank(pool, *ORDER, W, max_km=30, limit=10)
    assert [r.engineer_id for r in ranked] == [2, 1]
    assert ranked[1].haversine_km is None
    assert ranked[1].reasons["distance"]["value"] == 0


def test_beyond_max_km_distance_is_worth_nothing() -> None:
    pool = pool_of([{"id": 1, "lat": ORDER[0] + 1.0}])
    (only,) = rank(pool, *ORDER, W, max_km=30, limit=1)
    assert only.reasons["distance"]["value"] == 0


@pytest.mark.parametrize(
    "text",
    ["speed=1", "distance", "distance=-1", "distance=nan", "distance=0,load=0,sla_urgency=0,team_balance=0"],
)
def test_bad_weights_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Weights.parse(text)


def test_haversine_agrees_with_geodesic_within_half_a_percent() -> None:
    lats = np.array([24.9, 25.1, 25.3, 24.8])
    lngs = np.array([102.6, 102.8, 102.9, 102.5])
    fast = haversine_km(*ORDER, lats, lngs)
    for km, lat, lng in zip(fast, lats, lngs, strict=True):
        assert km == pytest.approx(geodesic_km(ORDER, (lat, lng)), rel=0.005)


# --- properties -----------------------------------------------------------------------------------------

engineer_rows = st.lists(
    st.fixed_dictionaries(
        {
            "broken": st.lists(st.sampled_from(HARD_FILTERS), max_size=3, unique=True),
            "lat": st.one_of(st.just(math.nan), st.floats(24.5, 25.5)),
            "lng": st.floats(102.2, 103.2),
            "load": st.integers(0, 8),
            "capacity": st.integers(1, 8),
            "urgent": st.integers(0, 5),
            "team": st.integers(-1, 3),
            "open": st.integers(0, 20),
        }
    ),
    min_size=0,
    max_size=40,
)


def with_ids(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{**row, "id": i + 1} for i, row in enumerate(rows)]


@settings(max_examples=200, deadline=None)
@given(rows=engineer_rows, limit=st.integers(1, 50))
def test_an_engineer_failing_any_hard_filter_is_never_proposed(
    rows: list[dict[str, object]], limit: int
) -> None:
    rows = with_ids(rows)
    pool = pool_of(rows)
    ranked = rank(pool, *ORDER, W, max_km=30, limit=limit)
    qualified = {row["id"] for row in rows if not row["broken"]}
    assert {r.engineer_id for r in ranked} <= qualified
    assert len(ranked) == min(limit, len(qualified))
    for r in ranked:
        assert violations(pool, r.index) == []
        assert 0 <= r.score <= 1
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)


@settings(max_examples=200, deadline=None)
@given(rows=engineer_rows, seed=st.randoms(use_true_random=False))
def test_ranking_is_deterministic_and_independent_of_the_pool_order(
    rows: list[dict[str, object]], seed
) -> None:  # type: ignore[no-untyped-def]
    rows = with_ids(rows)
    first = rank(pool_of(rows), *ORDER, W, max_km=30, limit=50)
    again = rank(pool_of(rows), *ORDER, W, max_km=30, limit=50)
    shuffled = list(rows)
    seed.shuffle(shuffled)
    other = rank(pool_of(shuffled), *ORDER, W, max_km=30, limit=50)
    assert [(r.engineer_id, r.score) for r in first] == [(r.engineer_id, r.score) for r in again]
    assert [(r.engineer_id, r.score) for r in first] == [(r.engineer_id, r.score) for r in other]
