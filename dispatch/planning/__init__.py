"""Day planning: a pure VRPTW model, the OR-Tools solver, a greedy baseline and an independent checker.

Nothing here knows Flask or the database: callers (the day-plan service, the Solomon CLI, the benchmark)
build a :class:`Problem` from their own data, with travel matrices they computed, and read a
:class:`Solution` back.
"""

from __future__ import annotations

from dispatch.planning.model import Key, NoPlanFound, Problem, Route, Solution, Stop, Vehicle, Visit

__all__ = ["Key", "NoPlanFound", "Problem", "Route", "Solution", "Stop", "Vehicle", "Visit"]
