"""The greedy baseline's plans pass the checkers, and the Solomon CLI plans real files end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dispatch.planning import greedy, solomon
from dispatch.planning.feasibility import check, check_solomon
from dispatch.planning.model import Vehicle, Visit
from dispatch.planning.solver import solve

from .conftest import line_problem

REPO = Path(__file__).resolve().parents[3]


def test_greedy_plans_a_hand_made_problem_with_all_the_rules() -> None:
    vehicles = [Vehicle("a", 0, 0, (0, 300), capacity=2), Vehicle("b", 0, None, (50, 300), capacity=5)]
    visits = [
        Visit("w1", 1, (0, 100), service=10, demand=1),
        Visit("w2", 2, (0, 200), service=10, demand=1),
        Visit("w3", 3, (100, 250), service=10, demand=1),
        Visit("fibre", 2, (0, 300), allowed_vehicles=frozenset({"b"})),
        Visit("taken", 1, (0, 300), pinned_vehicle="a"),
        Visit("never", 3, (0, 1), drop_penalty=5),
    ]
    problem = line_problem([0, 10, 20, 40], visits, vehicles)
    solution = greedy.plan(problem)
    assert check(problem, solution) == []
    assert solution.dropped == ("never",)


def test_greedy_and_solver_plans_of_a_real_truncated_instance_pass_both_checkers(solomon_dir: Path) -> None:
    for name in ("C101", "R201", "RC105"):
        inst = solomon.read(solomon_dir / f"{name}.txt").truncated(25)
        problem = solomon.to_problem(inst)
        for solution in (greedy.plan(problem), solve(problem, 0.3)):
            assert check(problem, solution) == []
            assert solution.dropped == ()
            assert check_solomon(inst, solomon.routes_of(solution)) == []


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dispatch.planning.solomon", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_prints_a_json_plan_that_the_solomon_checker_accepts(solomon_dir: Path) -> None:
    result = cli(str(solomon_dir / "R101.txt"), "--time-limit", "1")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert set(plan) == {"vehicles", "distance", "routes"}
    inst = solomon.read(solomon_dir / "R101.txt")
    assert check_solomon(inst, plan["routes"]) == []
    assert plan["vehicles"] == len(plan["routes"])
    assert plan["distance"] == round(solomon.route_distance(inst, plan["routes"]), 2)


def test_cli_rejects_a_bad_file_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("this is not\nan instance\n")
    for path in (bad, tmp_path / "missing.txt"):
        result = cli(str(path), "--time-limit", "1")
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.startswith("error: cannot read") and "Traceback" not in result.stderr
