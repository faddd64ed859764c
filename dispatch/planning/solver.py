"""The day planner: a :class:`~dispatch.planning.model.Problem` solved with OR-Tools' routing library.

The model: one routing node per visit plus a start and an end node per vehicle (an open end is a node that
costs nothing to reach, so the route stops at its last visit). A time dimension carries service plus travel
with waiting as slack; windows and shifts are ranges on its cumuls. A load dimension holds capacity.
Optional visits are disjunctions priced by their drop penalty; skills and pinning restrict each visit's
vehicle variable. Arc cost is distance, plus a fixed cost per used vehicle that by default outweighs any
distance, which makes the objective hierarchical (vehicles first, then distance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ortools.constraint_solver import pywrapcp, routing_enums_pb2

from dispatch.planning.model import Key, NoPlanFound, Problem, Solution, solution_from_sequences

FIRST_SOLUTION = "PARALLEL_CHEAPEST_INSERTION"
READ_BACK_SECONDS = 0.1  # of the time limit, kept for OR-Tools overshooting it and reading the plan back
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


def _read(problem: Problem, built: _Built, assignment: object) -> list[list[Key]]:
    """The visit sequence of every vehicle."""
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
    return sequences


def solve(
    problem: Problem,
    time_limit_seconds: float,
    *,
    vehicle_fixed_cost: int | None = None,
    first_solution: str | None = FIRST_SOLUTION,
    metaheuristic: str | None = METAHEURISTIC,
) -> Solution:
    """Plan the day: routes (one per vehicle, maybe empty), dropped optional visits and the total distance.

    ``vehicle_fixed_cost`` None is hierarchical (vehicles first, then distance); 0 prices distance only.
    ``first_solution`` / ``metaheuristic`` name OR-Tools enum members; None keeps OR-Tools' default.
    The time limit covers building the model too. Raises :class:`NoPlanFound` when no plan serves every
    mandatory visit. (Route elimination, emptying the smallest route and re-inserting its visits, was tried
    on Solomon's instances and saved no vehicle within 30 s: guided local search alone is used.)
    """
    started = time.perf_counter()
    fixed = hierarchical_vehicle_cost(problem) if vehicle_fixed_cost is None else vehicle_fixed_cost
    built = _build(problem, fixed)
    # OR-Tools stops a little after its limit, and reading the plan back takes a moment: keep a margin.
    left = time_limit_seconds - (time.perf_counter() - started) - READ_BACK_SECONDS
    params = search_parameters(max(left, 0.001), first_solution=first_solution, metaheuristic=metaheuristic)
    assignment = built.routing.SolveWithParameters(params)
    if assignment is None:
        raise NoPlanFound()
    sequences = _read(problem, built, assignment)
    objective = int(assignment.ObjectiveValue())
    solution = solution_from_sequences(problem, sequences, objective)
    solution.stats["seconds"] = time.perf_counter() - started
    return solution
