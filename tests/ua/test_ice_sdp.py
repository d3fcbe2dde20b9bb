"""ICE in the phone's SDP (RFC 8839): our lines round-trip through the peer's parser, the
default candidate prefers relay > srflx > host, and hostile SDP only ever yields None or a
RemoteProtocolError (488)."""

from __future__ import annotations

import aioice
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callward.errors import RemoteProtocolError
from callward.ua.ice_sdp import MAX_CANDIDATES, add_ice, default_candidate, ice_lines, remote_ice
from callward.ua.sdp_offer import offer_sdp

HOST = aioice.Candidate("1", 1, "udp", 2130706431, "192.168.1.2", 40000, "host")
SRFLX = aioice.Candidate(
    "2", 1, "udp", 1694498815, "203.0.113.7", 41000, "srflx",
    related_address="192.168.1.2", related_port=40000,
)  # fmt: skip
RELAY = aioice.Candidate(
    "3", 1, "udp", 16777215, "198.51.100.1", 49152, "relay",
    related_address="203.0.113.7", related_port=41000,
)  # fmt: skip
UFRAG, PWD = "abcd", "p" * 22


def test_round_trip_and_default_candidate() -> None:
    assert default_candidate([HOST, SRFLX, RELAY]) is RELAY
    assert default_candidate([HOST, SRFLX]) is SRFLX
    assert default_candidate([]) is None
    sdp = add_ice(offer_sdp("198.51.100.1", 49152, 1), ice_lines(UFRAG, PWD, [HOST, SRFLX, RELAY]))
    ice = remote_ice(sdp)
    assert ice is not None and (ice.ufrag, ice.pwd) == (UFRAG, PWD)
    assert [(c.type, c.host, c.port) for c in ice.candidates] == [
        ("host", "192.168.1.2", 40000), ("srflx", "203.0.113.7", 41000),
        ("relay", "198.51.100.1", 49152),
    ]  # fmt: skip
    assert remote_ice(offer_sdp("192.0.2.1", 4000, 1)) is None, "no ICE: None"


def test_limits() -> None:
    many = ice_lines(UFRAG, PWD, [HOST] * (MAX_CANDIDATES + 1))
    with pytest.raises(RemoteProtocolError) as err:
        remote_ice(add_ice(offer_sdp("192.0.2.1", 4000, 1), many))
    assert err.value.status_hint == 488
    with pytest.raises(RemoteProtocolError):
        remote_ice(add_ice(offer_sdp("192.0.2.1", 4000, 1), ice_lines(UFRAG, "short", [HOST])))
    bad = [f"a=ice-ufrag:{UFRAG}", f"a=ice-pwd:{PWD}", "a=candidate:1 1 udp"]
    with pytest.raises(RemoteProtocolError):
        remote_ice(add_ice(offer_sdp("192.0.2.1", 4000, 1), bad))


@given(st.lists(st.text(max_size=60), max_size=6))
def test_hostile_candidate_lines(values: list[str]) -> None:
    lines = [f"a=ice-ufrag:{UFRAG}", f"a=ice-pwd:{PWD}", *(f"a=candidate:{v}" for v in values)]
    sdp = add_ice(
        offer_sdp("192.0.2.1", 4000, 1), [ln.replace("\r", "").replace("\n", "") for ln in lines]
    )
    try:
        remote_ice(sdp)
    except RemoteProtocolError:
        pass
