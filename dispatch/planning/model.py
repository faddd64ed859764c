"""The VRPTW problem and its solution as plain frozen dataclasses (integer units throughout).

Times are integers in any unit the caller chooses (seconds for the service, hundredths or thousandths of a
distance unit for Solomon) and are absolute on one axis: a window ``(open, close)`` means service may *start*
at any time in ``[open, close]``; arriving early means waiting. Locations are indices into the caller's square
``travel_time`` and ``distance`` matrices, so several visits may share a place.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from dispatch.errors import DispatchError

Key = int | str
Matrix = Sequence[Sequence[int]]


class NoPlanFound(DispatchError):
    """The solver found no plan that serves every mandatory visit within the limits."""

    http_status = 422
    default_message = "No feasible plan serves every mandatory visit"


@dataclass(frozen=True)
class Visit:
    """One job at one place: served once, by one vehicle, starting inside its window."""

    id: Key
    location: int
    window: tuple[int, int]
    service: int = 0
    demand: int = 0
    # None means any vehicle may serve it (no skill restriction); an empty set means none can.
    allowed_vehicles: frozenset[Key] | None = None
    # None means mandatory; otherwise the objective cost of leaving the visit unplanned.
    drop_penalty: int | None = None
    # Orders already taken or appointed stay with their engineer.
    pinned_vehicle: Key | None = None

    def may_use(self, vehicle_id: Key) -> bool:
        """Whether this vehicle is allowed (skills and pinning) to serve the visit."""
        if self.pinned_vehicle is not None and vehicle_id != self.pinned_vehicle:
            return False
        return self.allowed_vehicles is None or vehicle_id in self.allowed_vehicles


@dataclass(frozen=True)
class Vehicle:
    """An engineer (or truck): leaves ``start`` no earlier than the shift opens, done by the shift's close."""

    id: Key
    start: int
    # None is an open end: the route finishes at its last visit (engineers need not return to the depot).
    end: int | None
    shift: tuple[int, int]
    capacity: int = 10**9


@dataclass(frozen=True)
class Problem:
    """Visits, vehicles and the integer travel time and distance matrices between locations."""

    visits: tuple[Visit, ...]
    vehicles: tuple[Vehicle, ...]
    travel_time: Matrix
    distance: Matrix

    def __post_init__(self) -> None:
        n = len(self.travel_time)
        if (
            len(self.distance) != n
            or any(len(r) != n for r in self.travel_time)
            or any(len(r) != n for r in self.distance)
        ):
            raise ValueError("travel_time and distance must be square matrices of the same size")
        if len({v.id for v in self.visits}) != len(self.visits):
            raise ValueError("visit ids must be unique")
        if len({v.id for v in self.vehicles}) != len(self.vehicles):
            raise ValueError("vehicle ids must be unique")
        known = {v.id for v in self.vehicles}
        for visit in self.visits:
            if not 0 <= visit.location < n:
                raise ValueError(f"visit {visit.id!r}: location {visit.location} outside the matrices")
            if visit.window[0] > visit.window[1]:
                raise ValueError(f"visit {visit.id!r}: window opens after it closes")
            if visit.pinned_vehicle is not None and visit.pinned_vehicle not in known:
                raise ValueError(f"visit {visit.id!r}: pinned to unknown vehicle {visit.pinned_vehicle!r}")
        for vehicle in self.vehicles:
            for loc in (vehicle.start, vehicle.end):
                if loc is not None and not 0 <= loc < n:
                    raise ValueError(f"vehicle {vehicle.id!r}: location {loc} outside the matrices")

    def visit(self, visit_id: Key) -> Visit:
        """The visit with this id."""
        return self.visits_by_id[visit_id]

    def vehicle(self, vehicle_id: Key) -> Vehicle:
        """The vehicle with this id."""
        return next(v for v in self.vehicles if v.id == vehicle_id)

    @functools.cached_property
    def visits_by_id(self) -> dict[Key, Visit]:
        """The visits by id (built once: schedules and checks look visits up per stop)."""
        return {v.id: v for v in self.visits}


@dataclass(frozen=True)
class Stop:
    """A planned visit: when the vehicle arrives and when service starts (the earliest feasible schedule)."""

    visit_id: Key
    arrival: int
    start: int


@dataclass(frozen=True)
class Route:
    """One vehicle's day: its stops in order, when it leaves and when it is done (at its end or last stop)."""

    vehicle_id: Key
    stops: tuple[Stop, ...]
    departure: int
    finish: int
    distance: int

    @property
    def visit_ids(self) -> list[Key]:
        """The visit ids in route order."""
        return [s.visit_id for s in self.stops]


@dataclass(frozen=True)
class Solution:
    """Routes for the vehicles that are used, the visits left unplanned, and the plan's totals."""

    routes: tuple[Route, ...]
    dropped: tuple[Key, ...] = ()
    distance: int = 0
    objective: int = 0
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def vehicles_used(self) -> int:
        """How many vehicles have at least one stop."""
        return sum(1 for r in self.routes if r.stops)


def schedule(problem: Problem, vehicle: Vehicle, visit_ids: Sequence[Key]) -> Route:
    """The earliest schedule of a visit sequence: leave when the shift opens, wait for closed windows."""
    visits = problem.visits_by_id
    t = vehicle.shift[0]
    loc = vehicle.start
    dist = 0
    stops = []
    for vid in visit_ids:
        visit = visits[vid]
        arrival = t + problem.travel_time[loc][visit.location]
        dist += problem.distance[loc][visit.location]
        start = max(arrival, visit.window[0])
        stops.append(Stop(vid, arrival, start))
        t = start + visit.service
        loc = visit.location
    if vehicle.end is not None:
        t += problem.travel_time[loc][vehicle.end]
        dist += problem.distance[loc][vehicle.end]
    return Route(vehicle.id, tuple(stops), vehicle.shift[0], t, dist)


def solution_from_sequences(
    problem: Problem, sequences: Sequence[Sequence[Key]], objective: int = 0
) -> Solution:
    """A solution (earliest schedules, totals) from one visit sequence per vehicle, in vehicle order."""
    routes: list[Route] = [
        schedule(problem, v, seq) for v, seq in zip(problem.vehicles, sequences, strict=True)
    ]
    served = {vid for seq in sequences for vid in seq}
    dropped = tuple(v.id for v in problem.visits if v.id not in served)
    return Solution(tuple(routes), dropped, sum(r.distance for r in routes), objective)
