"""The OR-Tools day planner on small hand-made problems: every rule of the model holds in its plans."""

from __future__ import annotations

import pytest

from dispatch.planning.feasibility import check
from dispatch.planning.model import NoPlanFound, Problem, Solution, Vehicle, Visit
from dispatch.planning.solver import solve

from .conftest import line_problem

LIMIT = 0.2


def planned(problem: Problem) -> Solution:
    solution = solve(problem, LIMIT)
    assert check(problem, solution) == []
    return solution


def route_of(solution: Solution, vehicle_id: str) -> list[object]:
    return next(r.visit_ids for r in solution.routes if r.vehicle_id == vehicle_id)


def test_windows_decide_the_order_and_early_arrival_waits() -> None:
    # Distance alone says near (10) then far (20); the windows say far first, then back to near.
    problem = line_problem(
        [0, 10, 20],
        [Visit("near", 1, (100, 200), service=5), Visit("far", 2, (0, 30), service=5)],
    )
    solution = planned(problem)
    assert route_of(solution, "a") == ["far", "near"]
    far, near = solution.routes[0].stops
    assert (far.arrival, far.start) == (20, 20)
    assert (near.arrival, near.start) == (35, 100)  # waits for the window to open
    assert solution.routes[0].finish == 115


def test_skills_send_a_visit_only_to_an_allowed_vehicle() -> None:
    vehicles = [Vehicle("near", 1, 1, (0, 1000)), Vehicle("skilled", 0, 0, (0, 1000))]
    problem = line_problem(
        [0, 50], [Visit("fibre", 1, (0, 1000), allowed_vehicles=frozenset({"skilled"}))], vehicles
    )
    assert route_of(planned(problem), "skilled") == ["fibre"]


def test_optional_visit_with_skills_is_served_by_an_allowed_vehicle() -> None:
    vehicles = [Vehicle("near", 1, 1, (0, 1000)), Vehicle("skilled", 0, 0, (0, 1000))]
    visit = Visit("fibre", 1, (0, 1000), allowed_vehicles=frozenset({"skilled"}), drop_penalty=10**6)
    assert route_of(planned(line_problem([0, 50], [visit], vehicles)), "skilled") == ["fibre"]


def test_no_allowed_vehicle_drops_an_optional_visit_and_fails_a_mandatory_one() -> None:
    optional = Visit("x", 1, (0, 1000), allowed_vehicles=frozenset(), drop_penalty=10**6)
    assert planned(line_problem([0, 5], [optional])).dropped == ("x",)
    with pytest.raises(NoPlanFound):
        solve(line_problem([0, 5], [Visit("x", 1, (0, 1000), allowed_vehicles=frozenset())]), LIMIT)


def test_pinned_visit_stays_with_its_engineer_though_another_is_closer() -> None:
    vehicles = [Vehicle("close", 1, 1, (0, 1000)), Vehicle("owner", 0, 0, (0, 1000))]
    problem = line_problem([0, 80], [Visit("taken", 1, (0, 1000), pinned_vehicle="owner")], vehicles)
    assert route_of(planned(problem), "owner") == ["taken"]


def test_capacity_splits_the_visits_over_vehicles() -> None:
    vehicles = [Vehicle(k, 0, 0, (0, 1000), capacity=2) for k in ("a", "b")]
    visits = [Visit(f"v{i}", 1, (0, 1000), demand=1) for i in range(3)]
    solution = planned(line_problem([0, 5], visits, vehicles))
    assert sorted(len(r.stops) for r in solution.routes) == [1, 2]


def test_shift_end_leaves_late_work_to_the_later_shift() -> None:
    vehicles = [Vehicle("early", 0, 0, (0, 100)), Vehicle("late", 0, 0, (100, 400))]
    visits = [Visit("evening", 1, (150, 300), service=10), Visit("morning", 1, (0, 50), service=10)]
    solution = planned(line_problem([0, 10], visits, vehicles))
    assert route_of(solution, "early") == ["morning"]
    assert route_of(solution, "late") == ["evening"]
    assert solution.routes[1].departure >= 100


def test_impossible_optional_visit_is_dropped_and_the_rest_planned() -> None:
    visits = [Visit("ok", 1, (0, 100)), Visit("too far", 2, (0, 50), drop_penalty=1000)]
    solution = planned(line_problem([0, 10, 500], visits))
    assert solution.dropped == ("too far",)
    assert route_of(solution, "a") == ["ok"]


def test_impossible_mandatory_visit_means_no_plan() -> None:
    with pytest.raises(NoPlanFound):
        solve(line_problem([0, 500], [Visit("too far", 1, (0, 50))]), LIMIT)


def test_open_end_route_finishes_at_its_last_visit() -> None:
    vehicles = [Vehicle("home-free", 0, None, (0, 1000))]
    visits = [Visit("one", 1, (0, 1000), service=5), Visit("two", 2, (0, 1000), service=5)]
    solution = planned(line_problem([0, 10, 30], visits, vehicles))
    route = solution.routes[0]
    assert route.visit_ids == ["one", "two"]
    assert (route.distance, route.finish) == (30, 40)  # no way back counted
    assert solution.distance == 30


def test_open_end_lets_a_long_shift_end_far_from_the_depot() -> None:
    # Returning would take until 220 > 150; an open end may stop at the customer.
    visits = [Visit("far", 1, (0, 200))]
    closed = line_problem([0, 100], visits, [Vehicle("a", 0, 0, (0, 150))])
    with pytest.raises(NoPlanFound):
        solve(closed, LIMIT)
    opened = line_problem([0, 100], visits, [Vehicle("a", 0, None, (0, 150))])
    assert route_of(planned(opened), "a") == ["far"]


def test_vehicles_are_minimised_before_distance() -> None:
    # Two vehicles at each end of the line would travel less, but one vehicle suffices.
    vehicles = [Vehicle("a", 0, 0, (0, 1000)), Vehicle("b", 0, 0, (0, 1000))]
    visits = [Visit("west", 1, (0, 1000)), Visit("east", 2, (0, 1000))]
    solution = planned(line_problem([0, -10, 10], visits, vehicles))
    assert solution.vehicles_used == 1
    distance_only = solve(line_problem([0, -10, 10], visits, vehicles), LIMIT, vehicle_fixed_cost=0)
    assert distance_only.distance == solution.distance == 40
