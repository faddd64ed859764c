"""The day planner: a :class:`~dispatch.planning.model.Problem` solved with OR-Tools' routing library.

The model: one routing node per visit plus a start and an end node per vehicle (an open end is a node that
costs nothing to reach, so the route stops at its last visit). A time dimension carries service plus travel
with waiting as slack; windows and shifts are ranges on its cumuls. A load dimension holds capacity.
Optional visits are disjunctions priced by their drop penalty; skills and pinning restrict each visit's
vehicle variable. Arc cost is distance, plus a fixed cost per used vehicle that by default outweighs any
distance, which makes the objective hierarchical (vehicles first, then distance).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ortools.constraint_solver import pywrapcp, routing_enums_pb2

from dispatch.planning.model import Key, NoPlanFound, Problem, Solution, solution_from_sequences

FIRST_SOLUTION = "PARALLEL_CHEAPEST_INSERTION"
READ_BACK_SECONDS = 0.05
# OR-Tools' default is 0.1. On Solomon at 30 s, 0.5 cut the gap on R2/RC2/RC1 (e.g. R205 11.2 → 6.2 %,
# RC201 8.7 → 4.2 %) and tied on C1/R1: with long routes, penalties must bite harder to leave a local optimum.
GLS_LAMBDA = 0.5
METAHEURISTIC = "GUIDED_LOCAL_SEARCH"


@dataclass
class _Built:
    """The routing model and what is needed to read a plan back from it."""

    manager: pywrapcp.RoutingIndexManager
    routing: pywrapcp.RoutingModel
    n_visits: int


def hierarchical_vehicle_cost(problem: Problem) -> int:
    """A fixed cost per used vehicle larger than any plan's total distance, so fewer vehicles always win."""
    longest = max((max(row) for row in problem.distance), default=0)
    return (len(problem.visits) + len(problem.vehicles) + 1) * max(longest, 1)


def _build(problem: Problem, vehicle_fixed_cost: int) -> _Built:
    visits, vehicles = problem.visits, problem.vehicles
    n_visits, n_vehicles = len(visits), len(vehicles)
    n_nodes = n_visits + 2 * n_vehicles
    starts = [n_visits + 2 * k for k in range(n_vehicles)]
    ends = [n_visits + 2 * k + 1 for k in range(n_vehicles)]
    # Each node's location; None for an open end, which every node reaches for free.
    location: list[int | None] = [v.location for v in visits]
    service = [v.service for v in visits] + [0] * (2 * n_vehicles)
    demand = [v.demand for v in visits] + [0] * (2 * n_vehicles)
    for vehicle in vehicles:
        location += [vehicle.start, vehicle.end]

    manager = pywrapcp.RoutingIndexManager(n_nodes, n_vehicles, starts, ends)
    routing = pywrapcp.RoutingModel(manager)

    # Node-indexed matrices (OR-Tools maps routing indices to nodes itself): evaluated in C++, with no Python
    # callback per arc, which makes the local search several times faster than a Python transit callback.
    travel, dist = problem.travel_time, problem.distance
    time_rows: list[list[int]] = []
    dist_rows: list[list[int]] = []
    for a_node, a in enumerate(location):
        t_row, d_row = [], []
        for b in location:
            if a is None or b is None:
                t_row.append(service[a_node])
                d_row.append(0)
            else:
                t_row.append(service[a_node] + travel[a][b])
                d_row.append(dist[a][b])
        time_rows.append(t_row)
        dist_rows.append(d_row)
    time_cb = routing.RegisterTransitMatrix(time_rows)
    dist_cb = routing.RegisterTransitMatrix(dist_rows)
    load_cb = routing.RegisterUnaryTransitVector(demand)

    routing.SetArcCostEvaluatorOfAllVehicles(dist_cb)
    if vehicle_fixed_cost:
        routing.SetFixedCostOfAllVehicles(vehicle_fixed_cost)

    horizon = max([v.window[1] for v in visits] + [v.shift[1] for v in vehicles] + [0])
    routing.AddDimension(time_cb, horizon, horizon, False, "Time")
    time_dim = routing.GetDimensionOrDie("Time")
    routing.AddDimensionWithVehicleCapacity(load_cb, 0, [v.capacity for v in vehicles], True, "Load")

    for node, visit in enumerate(visits):
        index = manager.NodeToIndex(node)
        time_dim.CumulVar(index).SetRange(visit.window[0], visit.window[1])
        allowed = [k for k, v in enumerate(vehicles) if visit.may_use(v.id)]
        if visit.drop_penalty is not None:
            routing.AddDisjunction([index], visit.drop_penalty)
        elif not allowed:
            raise NoPlanFound(f"visit {visit.id!r} is mandatory but no vehicle may serve it")
        if len(allowed) < n_vehicles:
            # An empty value list would mean "any vehicle" to OR-Tools (or-tools#4644); -1 is "unperformed",
            # which only an optional visit may be.
            values = allowed if visit.drop_penalty is None else [-1, *allowed]
            routing.VehicleVar(index).SetValues(values)
    for k, vehicle in enumerate(vehicles):
        for index in (routing.Start(k), routing.End(k)):
            time_dim.CumulVar(index).SetRange(vehicle.shift[0], vehicle.shift[1])
        # Earliest departure and finish are what the schedule reports; these make the solver prefer them too.
        routing.AddVariableMinimizedByFinalizer(time_dim.CumulVar(routing.Start(k)))
        routing.AddVariableMinimizedByFinalizer(time_dim.CumulVar(routing.End(k)))
    return _Built(manager, routing, n_visits)


def search_parameters(
    time_limit_seconds: float,
    *,
    first_solution: str | None = FIRST_SOLUTION,
    metaheuristic: str | None = METAHEURISTIC,
) -> object:
    """Search parameters; None keeps OR-Tools' default (automatic first solution, plain descent)."""
    params = pywrapcp.DefaultRoutingSearchParameters()
    if first_solution is not None:
        params.first_solution_strategy = getattr(routing_enums_pb2.FirstSolutionStrategy, first_solution)
    if metaheuristic is not None:
        params.local_search_metaheuristic = getattr(routing_enums_pb2.LocalSearchMetaheuristic, metaheuristic)
    if metaheuristic == "GUIDED_LOCAL_SEARCH":
        params.guided_local_search_lambda_coefficient = GLS_LAMBDA
    params.time_limit.FromMilliseconds(max(1, int(time_limit_seconds * 1000)))
    return params


def _read(problem: Problem, built: _Built, assignment: object) -> tuple[list[list[Key]], list[Key]]:
    routing, manager = built.routing, built.manager
    sequences: list[list[Key]] = []
    for k in range(len(problem.vehicles)):
        index = routing.Start(k)
        seq: list[Key] = []
        index = assignment.Value(routing.NextVar(index))  # type: ignore[attr-defined]
        while not routing.IsEnd(index):
            seq.append(problem.visits[manager.IndexToNode(index)].id)
            index = assignment.Value(routing.NextVar(index))  # type: ignore[attr-defined]
        sequences.append(seq)
    served = {vid for seq in sequences for vid in seq}
    dropped = [v.id for v in problem.visits if v.id not in served]
    return sequences, dropped


def _search(
    problem: Problem,
    vehicle_fixed_cost: int,
    seconds: float,
    first_solution: str | None,
    metaheuristic: str | None,
    initial_routes: Sequence[Sequence[Key]] | None = None,
) -> list[list[Key]]:
    """One OR-Tools search within ``seconds`` (model building included); each vehicle's visit sequence."""
    started = time.perf_counter()
    built = _build(problem, vehicle_fixed_cost)
    # The limit is the caller's wall clock: building the model and reading the plan back count too.
    left = seconds - (time.perf_counter() - started) - READ_BACK_SECONDS
    params = search_parameters(max(left, 0.01), first_solution=first_solution, metaheuristic=metaheuristic)
    routing = built.routing
    if initial_routes is not None:
        node = {v.id: i for i, v in enumerate(problem.visits)}
        routes = [[built.manager.NodeToIndex(node[vid]) for vid in seq] for seq in initial_routes]
        start = routing.ReadAssignmentFromRoutes(routes, True)
        if start is None:
            raise ValueError("initial routes are not feasible in the model")
        assignment = routing.SolveFromAssignmentWithParameters(start, params)
    else:
        assignment = routing.SolveWithParameters(params)
    if assignment is None:
        raise NoPlanFound()
    return _read(problem, built, assignment)[0]


def _cost(problem: Problem, sequences: Sequence[Sequence[Key]], vehicle_fixed_cost: int) -> float:
    """The objective of a plan in the original model; infinite when a mandatory visit is left out."""
    solution = solution_from_sequences(problem, sequences)
    penalties = 0.0
    for vid in solution.dropped:
        penalty = problem.visit(vid).drop_penalty
        if penalty is None:
            return math.inf
        penalties += penalty
    return solution.distance + vehicle_fixed_cost * solution.vehicles_used + penalties


def _without_vehicle(problem: Problem, keep: set[Key], penalty: int) -> Problem:
    """The problem restricted to vehicles ``keep``, every visit optional (mandatory ones cost ``penalty``)."""
    visits = tuple(
        replace(
            v,
            allowed_vehicles=frozenset(keep if v.allowed_vehicles is None else keep & v.allowed_vehicles),
            drop_penalty=penalty if v.drop_penalty is None else v.drop_penalty,
        )
        for v in problem.visits
    )
    return replace(problem, visits=visits)


def _reduce_vehicles(
    problem: Problem,
    sequences: list[list[Key]],
    vehicle_fixed_cost: int,
    seconds: float,
    attempt_seconds: float,
    first_solution: str | None,
    metaheuristic: str | None,
) -> list[list[Key]]:
    """Route elimination: empty the smallest route and let the search re-insert its visits elsewhere.

    Guided local search alone seldom empties a route (every single move towards it costs distance), so each
    attempt forbids one used vehicle and every unused one, makes every visit optional at a price above any
    distance, and keeps the result only if it beats the current plan in the original objective.
    """
    deadline = time.perf_counter() + seconds
    best = _cost(problem, sequences, vehicle_fixed_cost)
    tried: set[Key] = set()
    while (left := deadline - time.perf_counter()) > 0.1:
        used = [k for k, seq in enumerate(sequences) if seq]
        pinned = {v.pinned_vehicle for v in problem.visits}
        candidates = sorted(
            (k for k in used if problem.vehicles[k].id not in pinned and problem.vehicles[k].id not in tried),
            key=lambda k: len(sequences[k]),
        )
        if len(used) <= 1 or not candidates:
            break
        out = candidates[0]
        keep = {problem.vehicles[k].id for k in used if k != out}
        relaxed = _without_vehicle(problem, keep, vehicle_fixed_cost)
        start = [[] if k == out else list(seq) for k, seq in enumerate(sequences)]
        try:
            trial = _search(
                relaxed, vehicle_fixed_cost, min(left, attempt_seconds), first_solution, metaheuristic, start
            )
        except NoPlanFound:
            break
        cost = _cost(problem, trial, vehicle_fixed_cost)
        if cost < best:
            sequences, best, tried = trial, cost, set()
        else:
            # This route would not dissolve; another (larger, but maybe better placed) one may.
            tried.add(problem.vehicles[out].id)
    return sequences


# Shares of the time limit: a first search, route elimination, then polishing distance with the rest.
FIRST_SHARE, REDUCE_SHARE, ATTEMPT_SHARE = 0.3, 0.5, 0.15


def solve(
    problem: Problem,
    time_limit_seconds: float,
    *,
    vehicle_fixed_cost: int | None = None,
    first_solution: str | None = FIRST_SOLUTION,
    metaheuristic: str | None = METAHEURISTIC,
    initial_routes: Sequence[Sequence[Key]] | None = None,
    reduce_vehicles: bool = False,
) -> Solution:
    """Plan the day: routes (one per vehicle, maybe empty), dropped optional visits and the total distance.

    ``vehicle_fixed_cost`` None is hierarchical (vehicles first, then distance); 0 prices distance only.
    ``first_solution`` / ``metaheuristic`` name OR-Tools enum members; None keeps OR-Tools' default.
    ``reduce_vehicles`` (hierarchical objective with a metaheuristic only) spends part of the time limit on
    route elimination; off by default, as on Solomon's instances it saved no vehicle within 30 s and cost
    distance (bench/solomon.py). Raises :class:`NoPlanFound` when no plan serves every mandatory visit.
    """
    started = time.perf_counter()
    hierarchical = vehicle_fixed_cost is None
    fixed = hierarchical_vehicle_cost(problem) if vehicle_fixed_cost is None else vehicle_fixed_cost
    args = (first_solution, metaheuristic)
    if not (hierarchical and reduce_vehicles and metaheuristic is not None):
        sequences = _search(problem, fixed, time_limit_seconds, *args, initial_routes)
    else:
        sequences = _search(problem, fixed, FIRST_SHARE * time_limit_seconds, *args, initial_routes)
        sequences = _reduce_vehicles(
            problem,
            sequences,
            fixed,
            REDUCE_SHARE * time_limit_seconds,
            ATTEMPT_SHARE * time_limit_seconds,
            *args,
        )
        left = time_limit_seconds - (time.perf_counter() - started)
        if left > 0.05:
            sequences = _search(problem, fixed, left, *args, sequences)
    solution = solution_from_sequences(problem, sequences, int(_cost(problem, sequences, fixed)))
    solution.stats["seconds"] = time.perf_counter() - started
    return solution
