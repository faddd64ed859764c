"""The independent checkers: a good plan passes, and each kind of broken plan is caught by name."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dispatch.planning.feasibility import check, check_solomon
from dispatch.planning.model import (
    Problem,
    Route,
    Solution,
    Stop,
    Vehicle,
    Visit,
    schedule,
    solution_from_sequences,
)
from dispatch.planning.solomon import parse

from .conftest import line_problem


@pytest.fixture
def problem() -> Problem:
    vehicles = [Vehicle("a", 0, 0, (0, 200), capacity=3), Vehicle("b", 0, 0, (0, 200), capacity=3)]
    visits = [
        Visit("v1", 1, (0, 100), service=5, demand=1),
        Visit("v2", 2, (20, 100), service=5, demand=1),
        Visit("opt", 1, (0, 100), demand=1, drop_penalty=50),
        Visit("fibre", 2, (0, 100), allowed_vehicles=frozenset({"b"})),
        Visit("taken", 1, (0, 200), pinned_vehicle="b"),
    ]
    return line_problem([0, 10, 20], visits, vehicles)


def good(problem: Problem) -> Solution:
    return solution_from_sequences(problem, [["v1", "v2"], ["fibre", "taken"]])


def with_route(problem: Problem, solution: Solution, k: int, route: Route) -> Solution:
    routes = list(solution.routes)
    routes[k] = route
    return replace(solution, routes=tuple(routes), distance=sum(r.distance for r in routes))


def test_good_plan_passes(problem: Problem) -> None:
    solution = good(problem)
    assert solution.dropped == ("opt",)
    assert check(problem, solution) == []


def test_dropped_mandatory_visit_is_caught(problem: Problem) -> None:
    solution = solution_from_sequences(problem, [["v1"], ["fibre", "taken"]])
    assert check(problem, solution) == ["mandatory visit 'v2' is dropped"]


def test_visit_served_twice_is_caught(problem: Problem) -> None:
    solution = solution_from_sequences(problem, [["v1", "v2"], ["fibre", "taken", "v1"]])
    assert any("'v1' is served 2 times" in v for v in check(problem, solution))


def test_unlisted_visit_is_caught(problem: Problem) -> None:
    solution = replace(good(problem), dropped=())
    assert check(problem, solution) == ["visit 'opt' is neither served nor dropped"]


def test_closed_window_is_caught(problem: Problem) -> None:
    late = replace(
        problem, visits=tuple(replace(v, window=(0, 15)) if v.id == "v2" else v for v in problem.visits)
    )
    assert any("after the window closes at 15" in v for v in check(late, good(late)))


def test_reported_time_before_the_window_opens_is_caught(problem: Problem) -> None:
    solution = good(problem)
    route = solution.routes[0]
    first, second = route.stops
    # Arrives at 25 (10 + 5 service + 10 travel); claiming service starts on arrival ignores no window,
    # but claiming it at 19 is before arrival and before the window opens at 20.
    broken = replace(route, stops=(first, Stop("v2", 19, 19)))
    assert any(
        "arrival 19 is before it can get there (25)" in v
        for v in check(problem, with_route(problem, solution, 0, broken))
    )
    assert second.start == 25


def test_ignored_service_time_is_caught(problem: Problem) -> None:
    # With v1's 5 minutes of service forgotten, v2 would be reached at 20.
    no_service = replace(
        problem, visits=tuple(replace(v, service=0) if v.id == "v1" else v for v in problem.visits)
    )
    solution = good(problem)
    broken = schedule(no_service, problem.vehicles[0], ["v1", "v2"])
    assert broken.stops[1].start == 20
    assert any(
        "before it can get there (25)" in v for v in check(problem, with_route(problem, solution, 0, broken))
    )


def test_capacity_overload_is_caught(problem: Problem) -> None:
    solution = solution_from_sequences(problem, [["v1", "v2", "opt"], ["fibre", "taken"]])
    assert check(problem, solution) == []
    small = replace(problem, vehicles=(replace(problem.vehicles[0], capacity=2), problem.vehicles[1]))
    assert check(small, solution) == ["vehicle 'a' carries 3, over its capacity 2"]


def test_shift_end_is_caught(problem: Problem) -> None:
    short = replace(problem, vehicles=(replace(problem.vehicles[0], shift=(0, 40)), problem.vehicles[1]))
    violations = check(short, good(short))
    assert violations == ["vehicle 'a' is done at 50, after its shift closes at 40"]


def test_leaving_before_the_shift_is_caught(problem: Problem) -> None:
    solution = good(problem)
    early = replace(solution.routes[0], departure=-5)
    assert any("before its shift opens" in v for v in check(problem, with_route(problem, solution, 0, early)))


def test_vehicle_without_the_skill_is_caught(problem: Problem) -> None:
    solution = solution_from_sequences(problem, [["v1", "v2", "fibre"], ["taken"]])
    assert check(problem, solution) == ["vehicle 'a' at visit 'fibre': not allowed (skills)"]


def test_pinned_visit_on_another_vehicle_is_caught(problem: Problem) -> None:
    solution = solution_from_sequences(problem, [["v1", "v2", "taken"], ["fibre"]])
    assert check(problem, solution) == ["vehicle 'a' at visit 'taken': pinned to another vehicle"]


def test_misreported_distance_is_caught(problem: Problem) -> None:
    solution = good(problem)
    assert check(problem, replace(solution, distance=solution.distance - 1)) != []


SOLOMON = """T
VEHICLE
NUMBER CAPACITY
2 10
CUSTOMER
0 0 0 0 0 100 0
1 3 4 4 0 10 5
2 6 8 5 0 20 1
3 0 1 6 0 100 0
"""


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ([[1, 2], [3]], None),
        ([[1, 2]], "customers never visited: [3]"),
        ([[1, 2], [3, 1]], "customer 1 is visited 2 times"),
        ([[2, 1], [3]], "arrives at customer 1 at 16.000000, after its due 10"),
        ([[1, 3, 2], [4]], "customer 4 is not a customer"),
        ([[1], [2], [3]], "3 routes for a fleet of 2"),
        ([[1, 2, 3]], "load 15 over the capacity 10"),
    ],
)
def test_solomon_checker(routes: list[list[int]], expected: str | None) -> None:
    violations = check_solomon(parse(SOLOMON, "T"), routes)
    if expected is None:
        assert violations == []
    else:
        assert any(expected in v for v in violations), violations


def test_solomon_checker_counts_service_time() -> None:
    # 5 to customer 1, 5 of service, 5 to customer 2: 15 <= 20. With customer 1's service at 11: 21 > 20.
    slow = SOLOMON.replace("1 3 4 4 0 10 5", "1 3 4 4 0 10 11")
    assert check_solomon(parse(SOLOMON), [[1, 2], [3]]) == []
    assert any("customer 2 at 21.000000" in v for v in check_solomon(parse(slow), [[1, 2], [3]]))


def test_solomon_checker_catches_a_late_return_to_the_depot() -> None:
    late = (
        SOLOMON.replace("0 0 0 0 0 100 0", "0 0 0 0 0 20 0")
        .replace("0 20 1", "0 19 1")
        .replace("0 100 0\n", "0 19 0\n")
    )
    violations = check_solomon(parse(late), [[1, 2], [3]])
    assert any("back at the depot at 26.000000, after its due 20" in v for v in violations), violations
