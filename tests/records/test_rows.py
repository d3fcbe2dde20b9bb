"""Row encoding: the legs column is exactly what the stdlib JSON encoder writes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from callward.records.rows import _legs_json
from callward.records.schema import Leg

_opt_f = st.none() | st.floats(allow_nan=True, allow_infinity=True)
_txt = st.text(max_size=12)
_leg = st.builds(
    Leg,
    _txt,
    st.tuples(_txt, _txt),
    st.floats(allow_nan=False),
    _opt_f,
    _opt_f,
    st.integers(0, 699),
    _txt,
    st.tuples(_txt),
    st.integers(0, 10),
    st.integers(0, 2**40),
    st.integers(0, 2**40),
    st.floats(allow_nan=False),
    _opt_f,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_leg, max_size=3).map(tuple))
def test_legs_json_matches_stdlib_json(legs: tuple[Leg, ...]) -> None:
    expected = json.dumps(
        [
            [lg.leg, list(lg.nodes), lg.started, lg.answered, lg.ended, lg.status, lg.reason,
             list(lg.codecs), lg.reinvites, lg.packets, lg.lost, lg.jitter_ms, lg.mos]
            for lg in legs
        ],
        separators=(",", ":"),
    )  # fmt: skip
    assert _legs_json(legs) == expected
