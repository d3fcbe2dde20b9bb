"""OfferAnswerSession: re-offers (handover, hold/resume), o= versions, glare, conflicts."""

from __future__ import annotations

import pytest

from callward.errors import LocalProtocolError, SdpError
from callward.sdp import (
    Connection,
    Direction,
    LocalMedia,
    OAState,
    OfferAnswerSession,
    SecurityPolicy,
    parse_sdp,
)

TRUSTED = SecurityPolicy(allow_plain_rtp=True, trusted_leg=True)


def _offer(version: int, conn: str = "198.51.100.1", port: int = 5004, extra: str = "") -> str:
    return (
        f"v=0\r\no=peer 42 {version} IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 {conn}\r\n"
        f"t=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        f"{extra}"
    )


def _session() -> OfferAnswerSession:
    return OfferAnswerSession(
        LocalMedia("192.0.2.10", (30000,)), security=TRUSTED, rng=lambda n: b"\x05" * n
    )


def test_reinvite_changes_address_handover() -> None:
    """RFC 3264 §8.3.1: a re-offer with a new c=/port moves the stream."""
    s = _session()
    first = s.receive_offer(parse_sdp(_offer(1)))
    assert s.last_update is not None and s.last_update.initial
    again = s.receive_offer(parse_sdp(_offer(2, conn="203.0.113.77", port=6000)))
    (stream,) = s.streams
    assert (stream.remote_address, stream.remote_port) == ("203.0.113.77", 6000)
    assert s.last_update is not None and s.last_update.address_changed
    assert not s.last_update.codec_changed
    # Our answer did not change, so our o= version must not change either (§8).
    assert again == first
    assert again.origin.session_version == first.origin.session_version


def test_reoffer_codec_change() -> None:
    """§8.3.2: the set of formats may change in a re-offer."""
    s = _session()
    s.receive_offer(parse_sdp(_offer(1)))
    answer = s.receive_offer(parse_sdp(_offer(2).replace("RTP/AVP 0 8 101", "RTP/AVP 8 101")))
    assert answer.media[0].formats[0] == "8"
    assert s.last_update is not None and s.last_update.codec_changed
    assert answer.origin.session_version == 2  # our SDP changed: version + 1


def test_hold_and_resume_by_peer() -> None:
    s = _session()
    s.receive_offer(parse_sdp(_offer(1)))
    held = s.receive_offer(parse_sdp(_offer(2, extra="a=sendonly\r\n")))
    assert held.media[0].direction_attribute is Direction.RECVONLY
    assert s.on_hold and s.last_update is not None and s.last_update.direction_changed
    resumed = s.receive_offer(parse_sdp(_offer(3, extra="a=sendrecv\r\n")))
    assert resumed.media[0].direction_attribute is Direction.SENDRECV
    assert not s.on_hold


def test_we_hold_and_handover_our_side() -> None:
    s = _session()
    s.receive_offer(parse_sdp(_offer(1)))
    v = s.local_sdp.origin.session_version if s.local_sdp else 0
    hold = s.create_offer(hold=True)
    assert hold.origin.session_version == v + 1
    assert hold.media[0].direction_attribute is Direction.SENDONLY
    answer = parse_sdp(_offer(2, extra="a=recvonly\r\n").replace("0 8 101", "0"))
    s.receive_answer(answer)
    assert s.state is OAState.STABLE and s.on_hold
    # Handover: our address moves (Wi-Fi -> LTE); o= identity stays, c= changes.
    moved = s.create_offer(local=LocalMedia("10.99.0.5", (31000,)))
    assert moved.origin.identity() == hold.origin.identity()
    assert moved.origin.session_version == v + 2
    assert moved.connection == Connection("10.99.0.5")
    assert moved.media[0].port == 31000


def test_glare_is_491_and_rollback_restores() -> None:
    """RFC 3261 §14.2: an offer while ours is pending -> 491; state is untouched."""
    s = _session()
    s.receive_offer(parse_sdp(_offer(1)))
    before = s.streams
    s.create_offer(hold=True)
    with pytest.raises(SdpError) as info:
        s.receive_offer(parse_sdp(_offer(2)))
    assert info.value.status_hint == 491
    assert s.state is OAState.OFFER_SENT
    s.rollback()  # our re-INVITE got a 491 back too
    assert s.state is OAState.STABLE and s.streams == before and not s.local_hold
    s.receive_offer(parse_sdp(_offer(2)))  # the peer's retry now succeeds


def test_second_pending_offer_is_a_local_error() -> None:
    s = _session()
    s.create_offer()
    with pytest.raises(LocalProtocolError):
        s.create_offer()
    with pytest.raises(LocalProtocolError):
        OfferAnswerSession(LocalMedia("192.0.2.1", (1,))).receive_answer(parse_sdp(_offer(1)))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (_offer(2).replace("o=peer 42", "o=other 42"), "o= line changed"),
        (_offer(0), "went back"),
        (_offer(1, port=7000), "version stayed"),
        (
            _offer(2).replace("m=audio 5004 RTP/AVP 0 8 101", "m=video 5004 RTP/AVP 0 8 101"),
            "media type",
        ),
    ],
)
def test_conflicting_reoffer_rejected(text: str, match: str) -> None:
    """RFC 3264 §8: o= identity fixed, version +1 when changed, m= slots keep their type."""
    s = _session()
    s.receive_offer(parse_sdp(_offer(1)))
    before = (s.local_sdp, s.remote_sdp, s.streams)
    with pytest.raises(SdpError, match=match) as info:
        s.receive_offer(parse_sdp(text))
    assert info.value.status_hint == 488
    assert (s.local_sdp, s.remote_sdp, s.streams) == before


def test_fewer_m_lines_rejected() -> None:
    s = _session()
    two = _offer(1) + "m=video 0 RTP/AVP 31\r\n"
    s.receive_offer(parse_sdp(two))
    with pytest.raises(SdpError, match="fewer"):
        s.receive_offer(parse_sdp(_offer(2)))


def test_unchanged_reoffer_same_answer_same_keys() -> None:
    """Session refresh: identical offer (same version) -> identical answer, no rekey."""
    sdes = OfferAnswerSession(LocalMedia("192.0.2.10", (30000,)))  # os.urandom keys
    key = "inline:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"
    text = _offer(1, extra=f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {key}\r\n").replace(
        "RTP/AVP", "RTP/SAVP"
    )
    a1 = sdes.receive_offer(parse_sdp(text))
    a2 = sdes.receive_offer(parse_sdp(text))
    assert a1 == a2


def test_reoffer_keeps_rejected_slots() -> None:
    """§8: our re-offer keeps every m= line; the rejected video stays as port 0."""
    s = _session()
    s.receive_offer(parse_sdp(_offer(1) + "m=video 5006 RTP/AVP 31\r\n"))
    reoffer = s.create_offer(hold=True)
    assert [(m.media, m.port) for m in reoffer.media] == [("audio", 30000), ("video", 0)]


def test_hold_when_already_held_goes_inactive() -> None:
    """RFC 3264 §8.4: a stream that was recvonly is put on hold by marking it inactive."""
    s = _session()
    s.receive_offer(parse_sdp(_offer(1, extra="a=sendonly\r\n")))  # they hold us: we recvonly
    offer = s.create_offer(hold=True)
    assert offer.media[0].direction_attribute is Direction.INACTIVE
    s.rollback()
    plain = _session()
    plain.receive_offer(parse_sdp(_offer(1)))
    assert plain.create_offer(hold=True).media[0].direction_attribute is Direction.SENDONLY


def test_ipv6_answer() -> None:
    s = OfferAnswerSession(LocalMedia("2001:db8::10", (30000,)), security=TRUSTED)
    text = _offer(1).replace("IN IP4 198.51.100.1", "IN IP6 2001:db8::1")
    answer = s.receive_offer(parse_sdp(text))
    assert answer.connection == Connection("2001:db8::10", "IN", "IP6")
    assert answer.origin.addrtype == "IP6"
    assert s.streams[0].remote_address == "2001:db8::1"


def test_reoffer_adds_and_removes_streams() -> None:
    """RFC 3264 §8.1/§8.2: a re-offer may add m= lines (we refuse what we cannot take with
    port 0) and disable one with port 0; the m= count never shrinks."""
    s = OfferAnswerSession(LocalMedia("192.0.2.10", (30000, 30002)), security=TRUSTED)
    s.receive_offer(parse_sdp(_offer(1)))
    added = _offer(2) + "m=video 5006 RTP/AVP 31\r\nm=audio 5008 RTP/AVP 8\r\n"
    answer = s.receive_offer(parse_sdp(added))
    assert [(m.media, m.port) for m in answer.media] == [
        ("audio", 30000),
        ("video", 0),
        ("audio", 30002),
    ]
    assert [st.index for st in s.streams] == [0, 2]
    disabled = added.replace("o=peer 42 2", "o=peer 42 3").replace("m=audio 5008", "m=audio 0")
    answer = s.receive_offer(parse_sdp(disabled))
    assert [m.port for m in answer.media] == [30000, 0, 0]
    assert [st.index for st in s.streams] == [0]
    # The slot of the disabled video may now carry audio (§8.2 reuse of a port-0 slot).
    reuse = disabled.replace("o=peer 42 3", "o=peer 42 4").replace(
        "m=video 5006 RTP/AVP 31", "m=audio 5010 RTP/AVP 0"
    )
    answer = s.receive_offer(parse_sdp(reuse))
    assert [(m.media, m.port) for m in answer.media] == [
        ("audio", 30000),
        ("audio", 30002),
        ("audio", 0),
    ]
