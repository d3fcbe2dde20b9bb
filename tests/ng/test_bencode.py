"""Bencode against BEP 3's own examples and rtpengine's documented ping, round trips, and
hostile input: every byte string either decodes or raises NgError naming the offset."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callward.errors import NgError
from callward.ng.bencode import BencodeLimits, bdecode, bencode

# BEP 3 ("The connectivity is as follows") examples, and rtpengine's ping (interop.md)
VECTORS = [
    (b"4:spam", "spam"),
    (b"0:", ""),
    (b"i3e", 3),
    (b"i-3e", -3),
    (b"i0e", 0),
    (b"l4:spam4:eggse", ["spam", "eggs"]),
    (b"d3:cow3:moo4:spam4:eggse", {"cow": "moo", "spam": "eggs"}),
    (b"d4:spaml1:a1:bee", {"spam": ["a", "b"]}),
    (b"d7:command4:pinge", {"command": "ping"}),
    (b"d6:result4:ponge", {"result": "pong"}),
]


@pytest.mark.parametrize("wire, value", VECTORS)
def test_vectors(wire: bytes, value: object) -> None:
    assert bdecode(wire) == value
    assert bencode(value) == wire


@pytest.mark.parametrize(
    "wire, needle",
    [
        (b"i03e", "leading zero"),
        (b"i-0e", "-0"),
        (b"ie", "not a decimal"),
        (b"03:abc", "leading zero"),
        (b"5:abc", "past the end"),
        (b"l4:spam", "unterminated list"),
        (b"d3:cowe", "unexpected byte"),
        (b"d3:cow", "value expected"),
        (b"di1e3:mooe", "key is not a string"),
        (b"d1:a1:b1:a1:ce", "duplicate"),
        (b"4:spamX", "trailing"),
        (b"x", "unexpected byte"),
        (b"", "input ended"),
        (b"i12345678901234567890123e", "too long"),
        (b"l" * 40 + b"e" * 40, "nesting"),
    ],
)
def test_errors_are_precise(wire: bytes, needle: str) -> None:
    with pytest.raises(NgError, match=needle):
        bdecode(wire)


def test_limits() -> None:
    with pytest.raises(NgError, match="exceeds"):
        bdecode(b"4:spam", BencodeLimits(max_bytes=5))
    with pytest.raises(NgError, match="items"):
        bdecode(b"l" + b"i1e" * 11 + b"e", BencodeLimits(max_items=10))


def test_unsorted_keys_accepted() -> None:
    # Kamailio's rtpengine module appends keys in the order it builds them
    assert bdecode(b"d7:command5:offer4:call1:xe") == {"command": "offer", "call": "x"}


def test_keys_sorted_as_raw_bytes_and_bytes_values() -> None:
    assert bencode({"b": 1, "a": b"\xff"}) == b"d1:a1:\xff1:bi1ee"
    # non-UTF-8 bytes survive a round trip
    assert bencode(bdecode(b"1:\xff")) == b"1:\xff"
    with pytest.raises(NgError):
        bencode(True)
    with pytest.raises(NgError):
        bencode(1.5)


values = st.recursive(
    st.text(max_size=20) | st.integers(min_value=-(10**18), max_value=10**18),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert bdecode(bencode(value)) == value


@given(st.binary(max_size=300))
def test_garbage_never_crashes(data: bytes) -> None:
    try:
        value = bdecode(data)
    except NgError as exc:
        assert "offset" in str(exc) or "bytes" in str(exc)
    else:
        assert bdecode(bencode(value)) == value  # (dict keys need not arrive sorted)


@given(values, st.binary(max_size=4), st.integers(min_value=0, max_value=200))
def test_mutations_never_crash(value: object, junk: bytes, at: int) -> None:
    wire = bencode(value)
    at = min(at, len(wire))
    try:
        bdecode(wire[:at] + junk + wire[at + len(junk) :])
    except NgError:
        pass
