"""Solomon VRPTW instances: the text format, the scaled integer problem, and the benchmark CLI.

``python -m dispatch.planning.solomon FILE [--time-limit S]`` prints ``{"vehicles", "distance", "routes"}``.
Distances are Euclidean in double precision and travel time equals distance (the SINTEF convention,
shared/benchmarks/solomon/BKS.md). The solver works in integers, so times are scaled by :data:`SCALE` and
rounded the safe way (travel and service up, window opens up, closes down): every plan feasible in the integer
model is then feasible in double precision. The reported distance is recomputed in double precision.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatch.planning.model import Problem, Solution, Vehicle, Visit
from dispatch.planning.solver import solve

SCALE = 1000
DEFAULT_TIME_LIMIT = 30.0


class SolomonFormatError(ValueError):
    """The text is not a Solomon-format instance."""


@dataclass(frozen=True)
class Customer:
    """One row of the customer table; number 0 is the depot."""

    number: int
    x: float
    y: float
    demand: int
    ready: float
    due: float
    service: float


@dataclass(frozen=True)
class Instance:
    """A parsed Solomon instance: fleet size, capacity, and the depot followed by the customers."""

    name: str
    fleet: int
    capacity: int
    customers: tuple[Customer, ...]

    @property
    def depot(self) -> Customer:
        """The depot row (customer number 0)."""
        return self.customers[0]

    def distance(self, a: int, b: int) -> float:
        """Euclidean distance in double precision between rows ``a`` and ``b`` (positions, not numbers)."""
        p, q = self.customers[a], self.customers[b]
        return math.sqrt((p.x - q.x) ** 2 + (p.y - q.y) ** 2)

    def truncated(self, customers: int) -> Instance:
        """The depot and the first ``customers`` customers (small fixtures from real files)."""
        return Instance(self.name, self.fleet, self.capacity, self.customers[: customers + 1])


def _numbers(line: str) -> list[float] | None:
    try:
        return [float(tok) for tok in line.split()]
    except ValueError:
        return None


def parse(text: str, name: str = "instance") -> Instance:
    """Parse Solomon's text layout (name, VEHICLE NUMBER/CAPACITY, then the 7-column customer table)."""
    lines = [ln.strip() for ln in text.splitlines()]
    fleet = capacity = None
    rows: list[Customer] = []
    fleet_line = -1
    for i, line in enumerate(lines):
        if line.upper().startswith("NUMBER") and "CAPACITY" in line.upper():
            fleet_line = next((j for j in range(i + 1, len(lines)) if lines[j]), -1)
            values = _numbers(lines[fleet_line]) if fleet_line >= 0 else None
            if not values or len(values) != 2:
                raise SolomonFormatError("expected 'NUMBER CAPACITY' followed by two numbers")
            fleet, capacity = int(values[0]), int(values[1])
            continue
        if i == fleet_line:
            continue
        values = _numbers(line) if line else None
        if fleet is not None and values and len(values) == 7:
            number, x, y, demand, ready, due, service = values
            if ready > due or min(demand, service, ready) < 0:
                raise SolomonFormatError(f"customer {int(number)}: bad demand, window or service time")
            rows.append(Customer(int(number), x, y, int(demand), ready, due, service))
        elif fleet is not None and values:
            raise SolomonFormatError(f"line {i + 1}: expected 7 numbers, got {len(values)}")
    if fleet is None or capacity is None:
        raise SolomonFormatError("no VEHICLE section (NUMBER CAPACITY)")
    if fleet < 1 or capacity < 1:
        raise SolomonFormatError("the fleet and the capacity must be positive")
    if not rows or rows[0].number != 0:
        raise SolomonFormatError("the customer table must start with the depot, customer 0")
    if len({r.number for r in rows}) != len(rows):
        raise SolomonFormatError("customer numbers repeat")
    return Instance(name, fleet, capacity, tuple(rows))


def read(path: Path | str) -> Instance:
    """Parse a Solomon instance file."""
    path = Path(path)
    return parse(path.read_text(encoding="utf-8"), path.stem)


def to_problem(instance: Instance, scale: int = SCALE) -> Problem:
    """The integer problem: travel rounded up, windows shrunk in, so integer-feasible is double-feasible."""
    n = len(instance.customers)
    exact = [[instance.distance(a, b) for b in range(n)] for a in range(n)]
    travel = [[math.ceil(d * scale) for d in row] for row in exact]
    distance = [[round(d * scale) for d in row] for row in exact]
    depot = instance.depot
    visits = tuple(
        Visit(
            id=c.number,
            location=i,
            window=(math.ceil(c.ready * scale), math.floor(c.due * scale)),
            service=math.ceil(c.service * scale),
            demand=c.demand,
        )
        for i, c in enumerate(instance.customers)
        if i > 0
    )
    shift = (math.ceil(depot.ready * scale), math.floor(depot.due * scale))
    vehicles = tuple(Vehicle(k, 0, 0, shift, instance.capacity) for k in range(instance.fleet))
    return Problem(visits, vehicles, travel, distance)


def routes_of(solution: Solution) -> list[list[int]]:
    """The non-empty routes as customer numbers."""
    return [[int(v) for v in r.visit_ids] for r in solution.routes if r.stops]


def route_distance(instance: Instance, routes: Sequence[Sequence[int]]) -> float:
    """Total length in double precision of routes given as customer numbers, depot to depot."""
    position = {c.number: i for i, c in enumerate(instance.customers)}
    total = 0.0
    for route in routes:
        path = [0, *(position[c] for c in route), 0]
        total += sum(instance.distance(a, b) for a, b in zip(path, path[1:], strict=False))
    return total


def plan(instance: Instance, time_limit_seconds: float = DEFAULT_TIME_LIMIT) -> dict[str, object]:
    """Plan an instance with the day planner; the CLI's JSON document."""
    solution = solve(to_problem(instance), time_limit_seconds)
    routes = routes_of(solution)
    return {"vehicles": len(routes), "distance": round(route_distance(instance, routes), 2), "routes": routes}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: plan one file and print the JSON plan."""
    parser = argparse.ArgumentParser(prog="python -m dispatch.planning.solomon", description=__doc__)
    parser.add_argument("file", type=Path, help="a Solomon-format instance (e.g. C101.txt)")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, help="seconds (default 30)")
    args = parser.parse_args(argv)
    if args.time_limit <= 0:
        parser.error("--time-limit must be positive")
    try:
        instance = read(args.file)
    except (OSError, UnicodeDecodeError, SolomonFormatError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan(instance, args.time_limit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
