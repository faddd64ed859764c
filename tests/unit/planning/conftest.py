"""Small hand-made planning problems: places on a line, so travel times are easy to reason about."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.planning.model import Problem, Vehicle, Visit

SOLOMON_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "benchmarks" / "solomon"


def line_problem(positions: list[int], visits: list[Visit], vehicles: list[Vehicle] | None = None) -> Problem:
    """Locations at these points on a line; travel time = distance = |a - b|. Location 0 is the depot."""
    matrix = [[abs(a - b) for b in positions] for a in positions]
    if vehicles is None:
        vehicles = [Vehicle("a", 0, 0, (0, 1000))]
    return Problem(tuple(visits), tuple(vehicles), matrix, matrix)


@pytest.fixture
def solomon_dir() -> Path:
    """shared/benchmarks/solomon beside the repository (skips when the shared folder is absent)."""
    if not (SOLOMON_DIR / "C101.txt").exists():
        pytest.skip("shared/benchmarks/solomon is not available")
    return SOLOMON_DIR
