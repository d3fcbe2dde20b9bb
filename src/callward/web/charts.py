"""Inline SVG charts for the dashboard: per-call MOS, jitter and loss as bar charts.

Why SVG drawn here and not :func:`callward.quality.plot.plot_streams`: that plot needs a
capture's per-packet arrival times; the dashboard has CDRs, which hold one MOS, jitter and loss
figure per call and per leg. A few dozen bars are a few kilobytes of SVG, need no image
endpoint, scale with the page, and carry no personal data (bars are labelled by table row
number, never by subject).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "bar_chart"]


@dataclass(frozen=True, slots=True)
class Series:
    title: str
    unit: str
    values: Sequence[float | None]
    y_min: float = 0.0
    y_max: float | None = None  # None: from the data
    lines: Sequence[tuple[float, str]] = ()  # horizontal reference lines (value, css class)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def bar_chart(s: Series, width: int = 320, height: int = 140) -> str:
    """One small bar chart as an ``<svg>`` element; bars are numbered 1..n left to right."""
    left, right, top, bottom = 34, 6, 18, 16
    pw, ph = width - left - right, height - top - bottom
    present = [v for v in s.values if v is not None]
    y_max = s.y_max if s.y_max is not None else max([*present, *(v for v, _ in s.lines), 0.0])
    if y_max <= s.y_min:
        y_max = s.y_min + 1.0

    def y(v: float) -> float:
        v = min(max(v, s.y_min), y_max)
        return top + ph - (v - s.y_min) / (y_max - s.y_min) * ph

    out = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(s.title)}</title>",
        f'<text class="chart-title" x="{left}" y="12">{escape(s.title)}'
        f"{f' ({escape(s.unit)})' if s.unit else ''}</text>",
        f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}"/>',
        f'<text class="tick" x="{left - 3}" y="{top + 4}" text-anchor="end">{_fmt(y_max)}</text>',
        f'<text class="tick" x="{left - 3}" y="{top + ph}" text-anchor="end">'
        f"{_fmt(s.y_min)}</text>",
    ]
    n = len(s.values)
    if n:
        slot = pw / n
        bw = max(1.0, slot * 0.7)
        for i, v in enumerate(s.values):
            x = left + i * slot + (slot - bw) / 2
            label = f"#{i + 1}: {'n/a' if v is None else _fmt(v)} {s.unit}".rstrip()
            if v is None:
                out.append(
                    f'<rect class="bar missing" x="{x:.1f}" y="{top + ph - 2}" width="{bw:.1f}"'
                    f' height="2"><title>{escape(label)}</title></rect>'
                )
                continue
            yt = y(v)
            out.append(
                f'<rect class="bar" x="{x:.1f}" y="{yt:.1f}" width="{bw:.1f}"'
                f' height="{top + ph - yt:.1f}"><title>{escape(label)}</title></rect>'
            )
            if n <= 30:
                out.append(
                    f'<text class="tick" x="{x + bw / 2:.1f}" y="{height - 4}"'
                    f' text-anchor="middle">{i + 1}</text>'
                )
    else:
        out.append(f'<text class="tick" x="{left + 6}" y="{top + ph / 2}">no calls</text>')
    for value, css in s.lines:
        yl = y(value)
        out.append(
            f'<line class="ref {escape(css)}" x1="{left}" y1="{yl:.1f}" x2="{left + pw}"'
            f' y2="{yl:.1f}"><title>{escape(css)} {_fmt(value)}</title></line>'
        )
    out.append("</svg>")
    return "".join(out)
