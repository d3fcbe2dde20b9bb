"""SVG bar charts: bar heights are value/range of the plot height (computed here by hand),
values are escaped, missing values are drawn as stubs, and the output is well-formed XML."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from callward.web.charts import Series, bar_chart

NS = "{http://www.w3.org/2000/svg}"


def _bars(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [r for r in root.iter(NS + "rect") if r.get("class") == "bar"]


def test_bar_heights_are_proportional() -> None:
    svg = bar_chart(Series("Loss", "%", [1.0, 2.0, 4.0]), width=320, height=140)
    heights = [float(b.get("height", "0")) for b in _bars(svg)]
    plot_h = 140 - 18 - 16  # top and bottom margins of the chart
    assert heights == [round(plot_h * v / 4.0, 1) for v in (1.0, 2.0, 4.0)]


def test_mos_axis_range_and_reference_lines() -> None:
    svg = bar_chart(Series("MOS", "", [1.0, 4.5, None], 1.0, 4.5, ((3.6, "warn"),)))
    bars = _bars(svg)
    assert float(bars[0].get("height", "1")) == 0.0  # MOS 1.0 sits on the axis
    assert float(bars[1].get("height", "0")) == 140 - 18 - 16
    assert svg.count('class="bar missing"') == 1
    line = re.search(r'<line class="ref warn" x1="\d+" y1="([\d.]+)"', svg)
    assert line and abs(float(line.group(1)) - (18 + 106 - (3.6 - 1.0) / 3.5 * 106)) < 0.06


def test_titles_are_escaped() -> None:
    svg = bar_chart(Series("<script>", "&", [1.0]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    ET.fromstring(svg)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.none() | st.floats(-1e6, 1e6, allow_nan=False), max_size=60),
    st.floats(-10, 10, allow_nan=False),
)
def test_any_values_make_well_formed_svg(values: list[float | None], y_min: float) -> None:
    svg = bar_chart(Series("t", "u", values, y_min))
    root = ET.fromstring(svg)
    for r in root.iter(NS + "rect"):
        assert float(r.get("height", "0")) >= 0
