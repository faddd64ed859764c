"""Day planner on the Solomon VRPTW benchmark (shared/QUALITY.md, the "day plan" row).

For every instance in shared/benchmarks/solomon/*.txt (100 customers each; BENCH_SOLOMON_INSTANCES=C101,R101
selects some), three planners run on the same scaled integer model (dispatch/planning/solomon.py), one after
another (never two solver processes at once):

* ours: :func:`dispatch.planning.solver.solve` with its chosen search (hierarchical objective, guided local
  search), time limit BENCH_SOLOMON_TIME_LIMIT (30) seconds;
* the reference: OR-Tools routing with *default* search parameters on the same model (automatic first
  solution, plain local-search descent, no metaheuristic), same time limit (it usually stops far earlier);
* the greedy baseline: :func:`dispatch.planning.greedy.plan` (cheapest insertion).

Every plan is replayed by the double-precision Solomon checker (dispatch/planning/feasibility.py); an
infeasible plan is an error (exit 1). Distances are double precision; the yardstick is BKS.md's SINTEF
hierarchical table (vehicles first, then distance; where two mirrors disagree the smaller distance is used):
the table shows the vehicle difference and the distance gap in %. Bars: mean distance gap ≤ 3 % above BKS and
every instance ≤ 30 s. Exit 0 unless something broke; BENCH_STRICT=1 also fails on a missed bar.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatch.planning import greedy, solomon  # noqa: E402
from dispatch.planning.feasibility import check_solomon  # noqa: E402
from dispatch.planning.model import NoPlanFound, Solution  # noqa: E402
from dispatch.planning.solver import solve  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "solomon"
TIME_LIMIT = float(os.environ.get("BENCH_SOLOMON_TIME_LIMIT", "30"))
SELECTED = [s.strip().upper() for s in os.environ.get("BENCH_SOLOMON_INSTANCES", "").split(",") if s.strip()]
STRICT = os.environ.get("BENCH_STRICT") == "1"
BAR_GAP_PCT, BAR_SECONDS = 3.0, 30.0


def sintef_bks(path: Path) -> dict[str, tuple[int, float]]:
    """Instance → (vehicles, distance) from BKS.md's SINTEF columns; the smaller of two mirrored distances."""
    out: dict[str, tuple[int, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 9 or not re.fullmatch(r"(C|R|RC)\d{3}", cells[0]):
            continue
        distances = [float(x) for x in re.findall(r"\d+\.\d+", cells[8])]
        out[cells[0]] = (int(cells[7]), min(distances))
    return out


Result = tuple[int, float, float, list[str]] | None


def measure(label: str, inst: solomon.Instance, run: Callable[[], Solution], required: bool) -> Result:
    """Vehicles, double-precision distance, seconds and checker violations of one planner's plan.

    None when the planner found no plan; that is an error for ours, a result for the reference.
    """
    start = time.perf_counter()
    try:
        solution = run()
    except NoPlanFound:
        if required:
            return 0, math.nan, time.perf_counter() - start, [f"{inst.name} {label}: no plan found"]
        return None
    seconds = time.perf_counter() - start
    routes = solomon.routes_of(solution)
    problems = [f"{inst.name} {label}: {v}" for v in check_solomon(inst, routes)]
    return len(routes), solomon.route_distance(inst, routes), seconds, problems


def main() -> int:
    bks = sintef_bks(DATA / "BKS.md")
    files = sorted(DATA.glob("*.txt"), key=lambda p: (re.sub(r"\d", "", p.stem), p.stem))
    if SELECTED:
        files = [p for p in files if p.stem.upper() in SELECTED]
        missing = set(SELECTED) - {p.stem.upper() for p in files}
        if missing:
            print(f"unknown instances: {sorted(missing)}", file=sys.stderr)
            return 1
    print(
        f"Solomon VRPTW, {len(files)} instances, time limit {TIME_LIMIT:g} s, double precision vs SINTEF BKS"
    )
    head = (
        f"{'inst':6} {'BKS veh':>7} {'BKS dist':>9} | {'veh':>3} {'Δveh':>4} {'dist':>8} {'gap%':>6} {'s':>5}"
        f" | {'ref':>3} {'Δveh':>4} {'dist':>8} {'gap%':>6} {'s':>5}"
        f" | {'gr':>3} {'Δveh':>4} {'dist':>8} {'gap%':>6} {'s':>5}"
    )
    print(head)
    print("-" * len(head))
    errors: list[str] = []
    # Per instance: name, then (Δvehicles, gap %, seconds) for ours, the reference and greedy; NaN = no plan.
    rows: list[tuple[str, list[tuple[float, float, float]]]] = []
    for path in files:
        inst = solomon.read(path)
        problem = solomon.to_problem(inst)
        bv, bd = bks[inst.name]
        results = [
            measure("ours", inst, lambda p=problem: solve(p, TIME_LIMIT), True),
            measure(
                "reference",
                inst,
                lambda p=problem: solve(p, TIME_LIMIT, first_solution=None, metaheuristic=None),
                False,
            ),
            measure("greedy", inst, lambda p=problem: greedy.plan(p), True),
        ]
        cells = [f"{inst.name:6} {bv:7d} {bd:9.2f}"]
        figures: list[tuple[float, float, float]] = []
        for result in results:
            if result is None:
                cells.append(f"{'no plan':>26}")
                figures.append((math.nan, math.nan, math.nan))
                continue
            vehicles, distance, seconds, problems = result
            errors += problems
            gap = 100 * (distance - bd) / bd
            cells.append(f"{vehicles:3d} {vehicles - bv:+4d} {distance:8.2f} {gap:6.2f} {seconds:5.1f}")
            figures.append((vehicles - bv, gap, seconds))
        print(" | ".join(cells), flush=True)
        rows.append((inst.name, figures))
    if not rows:
        print("no instances", file=sys.stderr)
        return 1

    print()
    print(
        f"{'class':6} {'n':>3} | {'ours Δveh':>9} {'gap%':>6} {'max s':>6} | {'ref Δveh':>8} {'gap%':>6}"
        f" {'no plan':>7} | {'greedy Δveh':>11} {'gap%':>6}"
    )
    classes: dict[str, list[tuple[str, list[tuple[float, float, float]]]]] = {}
    for row in rows:
        classes.setdefault(re.sub(r"\d{2}$", "", row[0]), []).append(row)
    for name, group in [*classes.items(), ("all", rows)]:
        cols = []
        for who in range(3):
            got = [r[1][who] for r in group if not math.isnan(r[1][who][0])]
            cols.append(
                (
                    sum(g[0] for g in got),
                    statistics.mean(g[1] for g in got) if got else math.nan,
                    max((g[2] for g in got), default=math.nan),
                    len(group) - len(got),
                )
            )
        print(
            f"{name:6} {len(group):3d} | {cols[0][0]:+9.0f} {cols[0][1]:6.2f} {cols[0][2]:6.1f}"
            f" | {cols[1][0]:+8.0f} {cols[1][1]:6.2f} {cols[1][3]:7d} | {cols[2][0]:+11.0f} {cols[2][1]:6.2f}"
        )
    if errors:
        print("\nINFEASIBLE OR MISSING PLANS:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    mean_gap = statistics.mean(r[1][0][1] for r in rows)
    more = [r[0] for r in rows if r[1][0][0] > 0]
    slowest = max(r[1][0][2] for r in rows)
    print()
    print(f"mean distance gap vs BKS: {mean_gap:.2f} % (bar ≤ {BAR_GAP_PCT:g} %)")
    print(f"instances with more vehicles than BKS: {len(more)} of {len(rows)} {more if more else ''}")
    print(f"max time per instance: {slowest:.1f} s (bar ≤ {BAR_SECONDS:g} s)")
    missed = mean_gap > BAR_GAP_PCT or slowest > BAR_SECONDS
    print("bars:", "missed" if missed else "met")
    return 1 if STRICT and missed else 0


if __name__ == "__main__":
    sys.exit(main())
