"""Server-rendered SVG charts for the console (no JavaScript library: the console works offline).

Pure functions from plain values to SVG markup. Every text and attribute value is escaped here, so a
label can come from the database. Each bar carries a ``<title>`` (what a screen reader and a tooltip say)
and ``data-*`` attributes with the raw figures, so tests read values without measuring pixels.

The bar chart is horizontal, one row per figure, in the manner of a bullet chart: a grey track is the
row's scale, the filled bar its value (green when the target is met, red when not, blue without a
target) and a dark mark the target. Rows may have their own scale (complaints per day against ≤ 60 and
≤ 8 cannot share one axis and stay readable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

LABEL_WIDTH = 150
VALUE_WIDTH = 190
ROW_HEIGHT = 28
BAR_HEIGHT = 16
PAD = 6
COLOURS = {True: "#1a7f37", False: "#c62828", None: "#1f5fbf"}
TRACK = "#e8ecf3"
TARGET = "#223344"
MET_CLASS = {True: "met-yes", False: "met-no", None: "met-none"}
MET_WORD = {True: "达标", False: "未达标", None: ""}


@dataclass(frozen=True)
class Bar:
    """One figure: ``value`` on a scale of ``scale`` (the chart's if None); ``text`` is how it is shown."""

    label: str
    value: float | None
    text: str
    target: float | None = None
    target_text: str = ""
    met: bool | None = None
    scale: float | None = None
    series: str = ""
    detail: str = ""

    @property
    def description(self) -> str:
        """The sentence of the bar's ``<title>``: label, value, detail, target and whether it is met."""
        name = f"{self.label} {self.series}".strip()
        parts = [f"{name}：{self.text if self.value is not None else '无数据'}"]
        if self.detail:
            parts[0] += f"（{self.detail}）"
        if self.target_text:
            parts.append(f"目标 {self.target_text}")
        if self.value is not None and self.met is not None:
            parts.append(MET_WORD[self.met])
        return "；".join(parts)


def percent(value: float | None, digits: int = 1) -> str:
    """``0.975`` → ``97.5%``; None (no denominator) → ``—``."""
    if value is None:
        return "—"
    return f"{value * 100:.{digits}f}%"


def number(value: float | None, digits: int = 2) -> str:
    """A figure such as complaints per day without trailing zeros: ``1.50`` → ``1.5``; None → ``—``."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return text or "0"


def nice_scale(*values: float | None, minimum: float = 1.0) -> float:
    """A round full-scale value a little above the largest of ``values``, and at least ``minimum``."""
    top = max([v for v in values if v is not None and math.isfinite(v)] + [0.0]) * 1.1
    if top <= 0:
        return float(minimum)
    magnitude = 10 ** math.floor(math.log10(top))
    step = next(s for s in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if s * magnitude >= top)
    return float(max(step * magnitude, minimum))


def _num(value: float) -> str:
    return f"{value:.1f}"


def _attr(value: object) -> str:
    return str(escape(str(value)))


def _x(value: float, scale: float, left: float, span: float) -> float:
    """Where ``value`` lies on a row of ``span`` pixels starting at ``left``; clamped to the row."""
    if scale <= 0 or not math.isfinite(value):
        return left
    return left + span * min(max(value / scale, 0.0), 1.0)


def bar_chart(
    bars: Sequence[Bar], *, title: str, scale: float = 1.0, width: int = 640, chart_id: str = ""
) -> Markup:
    """A horizontal bar chart of ``bars`` with target marks, as an ``<svg role="img">`` element."""
    left, span = LABEL_WIDTH, max(width - LABEL_WIDTH - VALUE_WIDTH, 40)
    height = PAD * 2 + ROW_HEIGHT * max(len(bars), 1)
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="max-width:100%;height:auto" '
        f'aria-label="{_attr(title)}"'
        + (f' id="{_attr(chart_id)}"' if chart_id else "")
        + f"><title>{escape(title)}</title>"
    ]
    if not bars:
        out.append(f'<text x="{left}" y="{PAD + ROW_HEIGHT / 2 + 4:.1f}">无数据</text>')
    previous = None
    for index, bar in enumerate(bars):
        top = PAD + index * ROW_HEIGHT
        bar_top = top + (ROW_HEIGHT - BAR_HEIGHT) / 2
        baseline = top + ROW_HEIGHT / 2 + 4
        row_scale = bar.scale if bar.scale is not None else scale
        met = bar.met if bar.value is not None else None
        data = [
            f'data-label="{_attr(bar.label)}"',
            f'data-series="{_attr(bar.series)}"',
            f'data-value="{"" if bar.value is None else _attr(bar.value)}"',
            f'data-target="{"" if bar.target is None else _attr(bar.target)}"',
            f'data-met="{"" if met is None else ("yes" if met else "no")}"',
        ]
        out.append(f'<g class="bar {MET_CLASS[met]}" {" ".join(data)}>')
        out.append(f"<title>{escape(bar.description)}</title>")
        if bar.label != previous:
            out.append(f'<text class="label" x="4" y="{_num(baseline)}">{escape(bar.label)}</text>')
        if bar.series:
            out.append(
                f'<text class="series" x="{left - 6}" y="{_num(baseline)}" text-anchor="end">'
                f"{escape(bar.series)}</text>"
            )
        out.append(
            f'<rect class="track" x="{left}" y="{_num(bar_top)}" width="{_num(span)}" '
            f'height="{BAR_HEIGHT}" fill="{TRACK}"/>'
        )
        if bar.value is not None:
            bar_width = _x(bar.value, row_scale, left, span) - left
            out.append(
                f'<rect class="fill" x="{left}" y="{_num(bar_top)}" width="{_num(bar_width)}" '
                f'height="{BAR_HEIGHT}" fill="{COLOURS[met]}"/>'
            )
        if bar.target is not None:
            tx = _x(bar.target, row_scale, left, span)
            out.append(
                f'<line class="target" x1="{_num(tx)}" x2="{_num(tx)}" y1="{_num(bar_top - 3)}" '
                f'y2="{_num(bar_top + BAR_HEIGHT + 3)}" stroke="{TARGET}" stroke-width="2"/>'
            )
        shown = bar.text if bar.value is not None else "无数据"
        if bar.target_text:
            shown += f"（目标 {bar.target_text}）"
        out.append(f'<text class="value" x="{left + span + 8}" y="{_num(baseline)}">{escape(shown)}</text>')
        out.append("</g>")
        previous = bar.label
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every interpolated text and attribute went through escape()
