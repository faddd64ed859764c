"""The console's server-side SVG charts: geometry, target marks, met colours, escaping, accessibility."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from api.console.charts import (
    COLOURS,
    LABEL_WIDTH,
    VALUE_WIDTH,
    Bar,
    bar_chart,
    nice_scale,
    number,
    percent,
)

SVG = "{http://www.w3.org/2000/svg}"
WIDTH = 640
SPAN = WIDTH - LABEL_WIDTH - VALUE_WIDTH


def parse(markup: Markup) -> ET.Element:
    return ET.fromstring(str(markup))  # noqa: S314 - our own output; well-formed XML, or this raises


def groups(root: ET.Element) -> list[ET.Element]:
    return root.findall(f"{SVG}g")


def rect(group: ET.Element, cls: str) -> ET.Element | None:
    return next((r for r in group.findall(f"{SVG}rect") if r.get("class") == cls), None)


def test_bars_are_as_long_as_their_share_of_the_scale_with_the_target_mark_where_the_target_is() -> None:
    root = parse(
        bar_chart(
            [
                Bar("宽带新装", 0.5, "50.0%", target=0.98, target_text="≥ 98%", met=False),
                Bar("商机单", 0.9, "90.0%", target=0.8, target_text="≥ 80%", met=True),
            ],
            title="竣工率",
            width=WIDTH,
        )
    )
    first, second = groups(root)
    fill = rect(first, "fill")
    assert fill is not None and float(fill.get("width", "")) == pytest.approx(SPAN * 0.5, abs=0.1)
    mark = first.find(f"{SVG}line")
    assert mark is not None and mark.get("class") == "target"
    assert float(mark.get("x1", "")) == pytest.approx(LABEL_WIDTH + SPAN * 0.98, abs=0.1)
    second_fill = rect(second, "fill")
    assert second_fill is not None
    assert float(second_fill.get("width", "")) == pytest.approx(SPAN * 0.9, abs=0.1)


def test_met_is_green_not_met_red_and_no_target_neutral() -> None:
    root = parse(
        bar_chart(
            [
                Bar("a", 0.99, "99%", target=0.98, met=True),
                Bar("b", 0.5, "50%", target=0.98, met=False),
                Bar("c", 0.7, "70%"),
            ],
            title="t",
        )
    )
    classes = [g.get("class") for g in groups(root)]
    assert classes == ["bar met-yes", "bar met-no", "bar met-none"]
    fills = [rect(g, "fill") for g in groups(root)]
    assert [f.get("fill") for f in fills if f is not None] == [COLOURS[True], COLOURS[False], COLOURS[None]]
    assert [g.get("data-met") for g in groups(root)] == ["yes", "no", ""]
    assert groups(root)[2].find(f"{SVG}line") is None  # no target, no mark


def test_each_bar_says_its_value_target_and_outcome_in_its_title() -> None:
    root = parse(
        bar_chart(
            [
                Bar(
                    "IPTV+",
                    0.75,
                    "75.0%",
                    target=1.0,
                    target_text="≥ 100%",
                    met=False,
                    series="竣工率",
                    detail="3/4",
                )
            ],
            title="各类工单竣工率",
        )
    )
    assert root.get("role") == "img" and root.get("aria-label") == "各类工单竣工率"
    assert root.findtext(f"{SVG}title") == "各类工单竣工率"
    (bar,) = groups(root)
    assert bar.findtext(f"{SVG}title") == "IPTV+ 竣工率：75.0%（3/4）；目标 ≥ 100%；未达标"
    assert (bar.get("data-value"), bar.get("data-target")) == ("0.75", "1.0")
    texts = [t.text for t in bar.findall(f"{SVG}text")]
    assert texts == ["IPTV+", "竣工率", "75.0%（目标 ≥ 100%）"]


def test_a_figure_without_data_has_no_bar_and_says_so() -> None:
    root = parse(bar_chart([Bar("修障", None, "—", target=0.9, met=None)], title="t"))
    (bar,) = groups(root)
    assert rect(bar, "fill") is None and rect(bar, "track") is not None
    assert bar.findtext(f"{SVG}title") == "修障：无数据"
    assert bar.get("class") == "bar met-none" and bar.get("data-value") == ""


def test_an_empty_chart_still_renders() -> None:
    root = parse(bar_chart([], title="空"))
    assert groups(root) == [] and "无数据" in "".join(root.itertext())


def test_values_beyond_the_scale_are_clamped_to_the_row() -> None:
    root = parse(
        bar_chart([Bar("首问后端", 90, "90 件/日", target=60, scale=75), Bar("x", -3, "-3")], title="t")
    )
    over, under = groups(root)
    over_fill, under_fill = rect(over, "fill"), rect(under, "fill")
    assert over_fill is not None and float(over_fill.get("width", "")) == pytest.approx(SPAN, abs=0.1)
    assert under_fill is not None and float(under_fill.get("width", "")) == 0
    mark = over.find(f"{SVG}line")
    assert mark is not None and float(mark.get("x1", "")) == pytest.approx(
        LABEL_WIDTH + SPAN * 60 / 75, abs=0.1
    )


def test_rows_of_one_label_print_the_label_once() -> None:
    root = parse(
        bar_chart(
            [Bar("宽带新装", 0.9, "90%", series="竣工率"), Bar("宽带新装", 0.8, "80%", series="及时率")],
            title="t",
        )
    )
    labels = [t.text for g in groups(root) for t in g.findall(f"{SVG}text") if t.get("class") == "label"]
    assert labels == ["宽带新装"]


def test_text_from_the_database_is_escaped() -> None:
    evil = '<script>alert("x")</script>&"'
    markup = bar_chart(
        [Bar(evil, 0.5, evil, series=evil, target_text=evil, detail=evil)], title=evil, chart_id=evil
    )
    assert isinstance(markup, Markup)
    assert "<script>" not in markup
    root = parse(markup)  # still well-formed
    (bar,) = groups(root)
    assert bar.get("data-label") == evil
    assert root.get("aria-label") == evil and root.get("id") == evil
    assert evil in (bar.findtext(f"{SVG}title") or "")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((0.5,), 1.0),
        ((60, 8), 80.0),
        ((8, 0.08), 10.0),
        ((None, 4), 5.0),
        ((2.2,), 2.5),
        ((), 1.5),
        ((0, 0), 1.0),
    ],
)
def test_nice_scale_is_a_round_number_above_the_largest_value(
    values: tuple[float, ...], expected: float
) -> None:
    assert nice_scale(*values, minimum=1.0 if values else 1.5) == expected


def test_formatting_of_rates_and_counts() -> None:
    assert percent(0.975) == "97.5%" and percent(1.0, 0) == "100%" and percent(None) == "—"
    assert number(1.5) == "1.5" and number(0.08) == "0.08" and number(60.0) == "60" and number(0) == "0"
    assert number(None) == "—"
