"""Plan checkers written apart from the solver, so a solver bug cannot hide behind its own arithmetic.

:func:`check` verifies a :class:`Solution` against its integer :class:`Problem`; :func:`check_solomon`
replays routes of customer numbers against a Solomon instance in double precision (BKS.md's SINTEF rules).
Both return human-readable violations; an empty list means the plan is feasible.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dispatch.planning.model import Problem, Solution

if TYPE_CHECKING:  # the Solomon module is the CLI, and it imports the solver (OR-Tools)
    from dispatch.planning.solomon import Instance


def check(problem: Problem, solution: Solution) -> list[str]:
    """Every violation of the problem's rules in the solution (empty when feasible)."""
    out: list[str] = []
    visits = problem.visits_by_id
    vehicles = {v.id: v for v in problem.vehicles}
    served = Counter(s.visit_id for r in solution.routes for s in r.stops)
    for vid, times in served.items():
        if vid not in visits:
            out.append(f"visit {vid!r} is not in the problem")
        elif times > 1:
            out.append(f"visit {vid!r} is served {times} times")
    dropped = set(solution.dropped)
    for visit in problem.visits:
        if visit.id in served and visit.id in dropped:
            out.append(f"visit {visit.id!r} is both served and dropped")
        elif visit.id not in served and visit.id not in dropped:
            out.append(f"visit {visit.id!r} is neither served nor dropped")
        elif visit.id not in served and visit.drop_penalty is None:
            out.append(f"mandatory visit {visit.id!r} is dropped")
    seen_vehicles: set[object] = set()
    total = 0
    for route in solution.routes:
        vehicle = vehicles.get(route.vehicle_id)
        if vehicle is None:
            out.append(f"route for unknown vehicle {route.vehicle_id!r}")
            continue
        if vehicle.id in seen_vehicles:
            out.append(f"vehicle {vehicle.id!r} has two routes")
        seen_vehicles.add(vehicle.id)
        if not route.stops:
            continue
        label = f"vehicle {vehicle.id!r}"
        # Replay the route: the reported times must be reachable and inside every window and the shift.
        if route.departure < vehicle.shift[0]:
            out.append(f"{label} leaves at {route.departure}, before its shift opens at {vehicle.shift[0]}")
        t, loc, load, dist = route.departure, vehicle.start, 0, 0
        for stop in route.stops:
            if stop.visit_id not in visits:
                continue
            visit = visits[stop.visit_id]
            where = f"{label} at visit {visit.id!r}"
            if not visit.may_use(vehicle.id):
                why = (
                    "pinned to another vehicle"
                    if visit.pinned_vehicle is not None
                    else "not allowed (skills)"
                )
                out.append(f"{where}: {why}")
            earliest = t + problem.travel_time[loc][visit.location]
            dist += problem.distance[loc][visit.location]
            if stop.arrival < earliest:
                out.append(f"{where}: arrival {stop.arrival} is before it can get there ({earliest})")
            if stop.start < max(stop.arrival, earliest, visit.window[0]):
                out.append(f"{where}: service starts at {stop.start}, before arrival or window open")
            if stop.start > visit.window[1]:
                out.append(
                    f"{where}: service starts at {stop.start}, after the window closes at {visit.window[1]}"
                )
            load += visit.demand
            t, loc = max(stop.start, earliest, visit.window[0]) + visit.service, visit.location
        if vehicle.end is not None:
            t += problem.travel_time[loc][vehicle.end]
            dist += problem.distance[loc][vehicle.end]
        if t > vehicle.shift[1]:
            out.append(f"{label} is done at {t}, after its shift closes at {vehicle.shift[1]}")
        if route.finish < t:
            out.append(f"{label} reports finishing at {route.finish}, before it can ({t})")
        if load > vehicle.capacity:
            out.append(f"{label} carries {load}, over its capacity {vehicle.capacity}")
        if route.distance != dist:
            out.append(f"{label} reports distance {route.distance}, the route measures {dist}")
        total += dist
    if solution.distance != total:
        out.append(f"total distance {solution.distance} differs from the routes' sum {total}")
    return out


def check_solomon(instance: Instance, routes: Sequence[Sequence[int]]) -> list[str]:
    """Violations of routes (customer numbers, depot excluded) replayed in double precision."""
    out: list[str] = []
    rows = {c.number: c for c in instance.customers}
    depot = instance.depot
    counts = Counter(c for route in routes for c in route)
    for number, times in counts.items():
        if number == depot.number or number not in rows:
            out.append(f"customer {number} is not a customer of {instance.name}")
        elif times > 1:
            out.append(f"customer {number} is visited {times} times")
    missing = sorted(c.number for c in instance.customers[1:] if c.number not in counts)
    if missing:
        out.append(f"customers never visited: {missing}")
    if len(routes) > instance.fleet:
        out.append(f"{len(routes)} routes for a fleet of {instance.fleet}")
    for r, route in enumerate(routes, 1):
        t, here, load = depot.ready, depot, 0
        for number in route:
            c = rows.get(number)
            if c is None or c is depot:
                continue
            arrival = t + math.sqrt((here.x - c.x) ** 2 + (here.y - c.y) ** 2)
            if arrival > c.due:
                out.append(
                    f"route {r}: arrives at customer {number} at {arrival:.6f}, after its due {c.due:g}"
                )
            t = max(arrival, c.ready) + c.service
            load += c.demand
            here = c
        back = t + math.sqrt((here.x - depot.x) ** 2 + (here.y - depot.y) ** 2)
        if back > depot.due:
            out.append(f"route {r}: back at the depot at {back:.6f}, after its due {depot.due:g}")
        if load > instance.capacity:
            out.append(f"route {r}: load {load} over the capacity {instance.capacity}")
    return out
