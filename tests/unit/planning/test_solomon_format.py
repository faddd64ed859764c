"""Solomon text format: parsing, the scaled integer problem and the double-precision distance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dispatch.planning import solomon

TINY = """TINY

VEHICLE
NUMBER     CAPACITY
  2          10

CUSTOMER
CUST NO.  XCOORD.   YCOORD.    DEMAND   READY TIME  DUE DATE   SERVICE   TIME

    0      0          0          0          0        100          0
    1      3          4          4          0         50          5
    2      0          2          7         10         20          1
"""


def test_parses_a_hand_written_instance() -> None:
    inst = solomon.parse(TINY.replace("\n", "\r\n"), "TINY")
    assert (inst.name, inst.fleet, inst.capacity) == ("TINY", 2, 10)
    assert [c.number for c in inst.customers] == [0, 1, 2]
    c1 = inst.customers[1]
    assert (c1.x, c1.y, c1.demand, c1.ready, c1.due, c1.service) == (3, 4, 4, 0, 50, 5)
    assert inst.distance(0, 1) == 5.0


def test_parses_every_real_file_with_depot_and_100_customers(solomon_dir: Path) -> None:
    files = sorted(solomon_dir.glob("*.txt"))
    assert len(files) == 56
    for path in files:
        inst = solomon.read(path)
        assert inst.fleet == 25 and inst.capacity in (200, 700, 1000), path.name
        assert [c.number for c in inst.customers] == list(range(101)), path.name
    c101 = solomon.read(solomon_dir / "C101.txt")
    assert c101.customers[1] == solomon.Customer(1, 45, 68, 10, 912, 967, 90)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "VEHICLE"),
        ("X\nVEHICLE\nNUMBER CAPACITY\n 25 x\n", "two numbers"),
        ("X\nNUMBER CAPACITY\n25 200\n1 0 0 0 0 10 0\n", "depot"),
        ("X\nNUMBER CAPACITY\n25 200\n0 0 0 0 0 10 0\n1 2 3\n", "7 numbers"),
        ("X\nNUMBER CAPACITY\n25 200\n0 0 0 0 0 10 0\n1 0 0 1 9 5 0\n", "window"),
        ("X\nNUMBER CAPACITY\n25 200\n0 0 0 0 0 10 0\n0 0 0 0 0 10 0\n", "repeat"),
    ],
)
def test_rejects_malformed_text(text: str, message: str) -> None:
    with pytest.raises(solomon.SolomonFormatError, match=message):
        solomon.parse(text)


def test_scaled_problem_rounds_travel_up_and_windows_in() -> None:
    inst = solomon.parse(TINY.replace("0         50", "0.0004     50.0009"))
    problem = solomon.to_problem(inst, scale=1000)
    # sqrt(2**2 + 3**2) = 3.6055...: travel rounds up, the objective's distance to nearest.
    assert problem.travel_time[1][2] == 3606 and problem.distance[1][2] == 3606
    assert problem.travel_time[0][1] == 5000
    assert problem.visits[0].window == (1, 50000)
    assert problem.vehicles[0].shift == (0, 100000) and problem.vehicles[0].capacity == 10
    assert math.isclose(solomon.route_distance(inst, [[1, 2]]), 5 + math.sqrt(13) + 2)
