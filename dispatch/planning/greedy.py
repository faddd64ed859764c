"""A greedy baseline: cheapest feasible insertion, one visit at a time, most constrained first.

Not a planner to ship: it is the yardstick the solver must beat (bench/solomon.py) and a second, simple
producer of feasible plans for the checker's tests. Vehicles are opened one at a time, so it also tends to
use few of them.
"""

from __future__ import annotations

from dispatch.planning.model import Key, Problem, Solution, Vehicle, Visit, schedule, solution_from_sequences


def _distance_if_feasible(
    problem: Problem, vehicle: Vehicle, seq: list[Key], visits: dict[Key, Visit]
) -> int | None:
    """The route's distance when ``seq`` fits the vehicle's shift, capacity and every window, else None."""
    route = schedule(problem, vehicle, seq)
    if route.finish > vehicle.shift[1] or sum(visits[v].demand for v in seq) > vehicle.capacity:
        return None
    if any(s.start > visits[s.visit_id].window[1] for s in route.stops):
        return None
    return route.distance


def plan(problem: Problem) -> Solution:
    """A feasible plan by cheapest insertion; visits that fit nowhere are dropped (mandatory ones too)."""
    visits = problem.visits_by_id
    sequences: list[list[Key]] = [[] for _ in problem.vehicles]
    opened: list[bool] = [False] * len(problem.vehicles)
    # Pinned and skill-restricted visits first, then the tightest windows: they have the fewest places to go.
    order = sorted(
        problem.visits,
        key=lambda v: (
            v.pinned_vehicle is None,
            v.allowed_vehicles is None,
            v.window[1] - v.window[0],
            v.window[1],
        ),
    )
    for visit in order:
        best: tuple[int, int, int] | None = None
        for pass_new in (False, True):
            for k, vehicle in enumerate(problem.vehicles):
                # Fill open vehicles before opening another one: fewer vehicles, as the hierarchy asks.
                if opened[k] == pass_new or not visit.may_use(vehicle.id):
                    continue
                seq = sequences[k]
                base = schedule(problem, vehicle, seq).distance
                for pos in range(len(seq) + 1):
                    trial = [*seq[:pos], visit.id, *seq[pos:]]
                    distance = _distance_if_feasible(problem, vehicle, trial, visits)
                    if distance is None:
                        continue
                    delta = distance - base
                    if best is None or delta < best[0]:
                        best = (delta, k, pos)
                if pass_new and best is not None:
                    break
            if best is not None:
                break
        if best is not None:
            _, k, pos = best
            sequences[k].insert(pos, visit.id)
            opened[k] = True
    return solution_from_sequences(problem, sequences)
