"""ng framing, requests and flags: both flag shapes (Kamailio's dictionary keys and
rtpengine's ``flags`` words) give the same NgFlags; hostile messages raise NgError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callward.errors import NgError
from callward.ng.bencode import bencode
from callward.ng.protocol import (
    NgCommand,
    NgFlags,
    NgRequest,
    parse_message,
    parse_request,
    request_body,
    serialize_message,
)


def test_ping_framing_matches_rtpengine_docs() -> None:
    # interop.md: "<cookie> d7:command4:pinge" answers "<cookie> d6:result4:ponge"
    msg = parse_message(b"5323_1 d7:command4:pinge")
    assert msg.cookie == "5323_1" and msg.body == {"command": "ping"}
    assert serialize_message("5323_1", {"result": "pong"}) == b"5323_1 d6:result4:ponge"


@pytest.mark.parametrize(
    "wire, needle",
    [
        (b"d7:command4:pinge", "cookie"),
        (b" d7:command4:pinge", "cookie"),
        (b"abc\x01 d7:command4:pinge", "non-printable"),
        (b"c l4:pinge", "not a dictionary"),
        (b"c d7:command4:pinge junk", "trailing"),
    ],
)
def test_bad_messages(wire: bytes, needle: str) -> None:
    with pytest.raises(NgError, match=needle):
        parse_message(wire)


KAMAILIO_STYLE = {
    "command": "offer",
    "call-id": "c1",
    "from-tag": "ft",
    "via-branch": "z9hG4bK1",
    "sdp": "v=0\r\n",
    "replace": ["origin", "session-connection"],
    "ICE": "remove",
    "transport-protocol": "RTP/SAVP",
    "rtcp-mux": ["offer"],
    "direction": ["internal", "external"],
    "record call": "yes",
    "SDES": ["no-AES_CM_128_HMAC_SHA1_32"],
    "label": "caller",
}
WORDS_STYLE = {
    "command": "offer",
    "call-id": "c1",
    "from-tag": "ft",
    "via-branch": "z9hG4bK1",
    "sdp": "v=0\r\n",
    "label": "caller",
    "flags": [
        "replace-origin", "replace-session-connection", "ICE=remove", "RTP/SAVP",
        "rtcp-mux-offer", "direction=internal", "direction=external", "record-call",
        "SDES-no-AES_CM_128_HMAC_SHA1_32",
    ],
}  # fmt: skip


def test_both_flag_shapes_agree() -> None:
    a, b = parse_request(KAMAILIO_STYLE), parse_request(WORDS_STYLE)
    assert a == b
    f = a.flags
    assert f.replace_origin and f.replace_session_connection and f.record_call
    assert f.ice == "remove" and f.transport_protocol == "RTP/SAVP"
    assert f.rtcp_mux == {"offer"} and f.direction == ("internal", "external")
    assert not f.sdes_allows("AES_CM_128_HMAC_SHA1_32")
    assert f.sdes_allows("AES_CM_128_HMAC_SHA1_80")
    assert a.label == "caller" and a.via_branch == "z9hG4bK1"


def test_request_body_round_trip() -> None:
    req = parse_request(KAMAILIO_STYLE)
    assert parse_request(request_body(req)) == req
    assert request_body(NgRequest(NgCommand.PING)) == {"command": "ping"}


@pytest.mark.parametrize(
    "body, needle",
    [
        ({}, "missing 'command'"),
        ({"command": "frobnicate"}, "unrecognized command"),
        ({"command": "offer", "call-id": "c"}, "missing 'from-tag'"),
        ({"command": "answer", "call-id": "c", "from-tag": "f", "sdp": "x"}, "to-tag"),
        ({"command": "offer", "call-id": ["x"], "from-tag": "f", "sdp": "x"}, "string"),
        ({"command": "offer", "call-id": "c" * 600, "from-tag": "f", "sdp": "x"}, "longer"),
        ({"command": "list", "limit": -1}, "limit"),
        ({**KAMAILIO_STYLE, "transport-protocol": "UDP/TLS"}, "transport-protocol"),
        ({**KAMAILIO_STYLE, "flags": ["x"] * 100}, "more than"),
    ],
)
def test_bad_requests(body: dict, needle: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(NgError, match=needle):
        parse_request(body)


def test_sdes_off() -> None:
    f = NgFlags(sdes=frozenset({"off"}))
    assert not f.sdes_allows("AES_CM_128_HMAC_SHA1_80")
    only = NgFlags(sdes=frozenset({"only-aead_aes_128_gcm"}))
    assert only.sdes_allows("AEAD_AES_128_GCM") and not only.sdes_allows("AES_CM_128_HMAC_SHA1_80")


keys = st.sampled_from(["command", "call-id", "from-tag", "to-tag", "sdp", "flags", "replace",
                        "ICE", "rtcp-mux", "SDES", "direction", "limit", "transport-protocol",
                        "record call", "label", "x"])  # fmt: skip
leaf = (
    st.text(max_size=12)
    | st.integers(-5, 5)
    | st.sampled_from(["offer", "answer", "ping", "list", "query", "delete"])
)
bodies = st.dictionaries(
    keys,
    leaf | st.lists(leaf, max_size=3) | st.dictionaries(st.text(max_size=3), leaf, max_size=2),
    max_size=8,
)


@given(bodies)
def test_hostile_bodies_give_ngerror_only(body: dict) -> None:  # type: ignore[type-arg]
    try:
        req = parse_request(body)
    except NgError:
        return
    assert parse_message(b"c " + bencode(request_body(req))).cookie == "c"
