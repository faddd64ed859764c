"""Pure pieces of the day planner that know the dispatch domain: service minutes and travel matrices.

The service (dispatch/services/planning.py) reads the database and builds a
:class:`~dispatch.planning.Problem` with these; nothing here touches Flask or the database.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dispatch.geo.distance import geodesic_km
from dispatch.vocabulary import ORDER_TYPES, parse_pairs

DEFAULT_SERVICE_MINUTES = 60


def parse_service_minutes(raw: str) -> dict[str, int]:
    """``PLAN_SERVICE_MINUTES``: ``type=minutes`` pairs, comma separated; unnamed types take 60 minutes."""
    minutes = dict.fromkeys(ORDER_TYPES, DEFAULT_SERVICE_MINUTES)
    for name, value in parse_pairs(raw, ORDER_TYPES).items():
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{name}: minutes must be an integer, got {value!r}") from None
        if not 1 <= number <= 8 * 60:
            raise ValueError(f"{name}: minutes must be between 1 and 480")
        minutes[name] = number
    return minutes


def travel_matrices(
    points: Sequence[tuple[float, float]], speed_kmh: float
) -> tuple[list[list[int]], list[list[int]]]:
    """Travel seconds (rounded up) and geodesic metres between every pair of (lat, lng) points."""
    n = len(points)
    metres = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if points[i] != points[j]:
                metres[i][j] = metres[j][i] = round(geodesic_km(points[i], points[j]) * 1000)
    per_second = speed_kmh / 3.6
    seconds = [[math.ceil(d / per_second) for d in row] for row in metres]
    return seconds, metres
