"""RTP packet parse/build against byte layouts written out by hand from RFC 3550 §5.1 / RFC 8285."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.rtp.packet import ExtensionElement, RtpExtension, RtpPacket, is_rtcp, parse_rtp


def test_minimal_packet_layout_matches_rfc3550_figure() -> None:
    # V=2 P=0 X=0 CC=0 | M=1 PT=0 | seq=0x1234 | ts=0xDEADBEEF | ssrc=0x01020304
    wire = bytes.fromhex("8080 1234 deadbeef 01020304") + b"\xff" * 160
    pkt = parse_rtp(wire)
    assert (pkt.payload_type, pkt.marker, pkt.sequence_number) == (0, True, 0x1234)
    assert (pkt.timestamp, pkt.ssrc) == (0xDEADBEEF, 0x01020304)
    assert pkt.payload == b"\xff" * 160 and pkt.csrc == () and pkt.extension is None
    assert bytes(pkt) == wire


def test_csrc_extension_padding_all_at_once() -> None:
    # V=2 P=1 X=1 CC=2 -> 0xB2; M=0 PT=111 -> 0x6F
    wire = (
        bytes.fromhex("B2 6F 0001 00000064 AABBCCDD")
        + bytes.fromhex("00000011 00000022")  # two CSRCs
        + bytes.fromhex("BEDE 0001")  # one-byte extension, 1 word
        + bytes.fromhex("10 7F 00 00")  # id=1 len=1 data=0x7F, then 2 padding bytes
        + b"opus"
        + bytes.fromhex("000003")  # 3 padding octets, last one is the count
    )
    pkt = parse_rtp(wire)
    assert pkt.csrc == (0x11, 0x22)
    assert pkt.payload_type == 111 and not pkt.marker
    assert pkt.extension is not None and pkt.extension.profile == 0xBEDE
    assert pkt.extension.elements() == (ExtensionElement(1, b"\x7f"),)
    assert pkt.payload == b"opus" and pkt.padding == 3
    assert bytes(pkt) == wire


def test_one_byte_extension_stop_id_and_padding() -> None:
    # id=2 len=2 (L=1) "ab", padding 0, id=15 -> stop, rest ignored
    ext = RtpExtension(0xBEDE, bytes.fromhex("11 6162 00 F0 99 99 99"))
    assert ext.elements() == (ExtensionElement(1, b"ab"),)


def test_two_byte_extension() -> None:
    # RFC 8285 §4.3: 0x100 + appbits 0x5; id=20 len=0; id=3 len=3 "xyz"; pad to 8 bytes
    ext = RtpExtension(0x1005, bytes.fromhex("14 00 03 03 78797A 00"))
    assert ext.is_two_byte and ext.profile & 0xF == 5
    assert ext.elements() == (ExtensionElement(20, b""), ExtensionElement(3, b"xyz"))


def test_from_elements_chooses_form() -> None:
    small = RtpExtension.from_elements([ExtensionElement(3, b"\x01\x02")])
    assert small.profile == 0xBEDE and small.data == bytes.fromhex("31 0102 00")
    big = RtpExtension.from_elements([ExtensionElement(200, b"\x09")])
    assert big.profile == 0x1000 and big.data == bytes.fromhex("C8 01 09 00")


def test_non_8285_profile_keeps_raw_bytes() -> None:
    wire = bytes.fromhex("90 00 0000 00000000 00000001 ABCD 0001 01020304") + b"x"
    pkt = parse_rtp(wire)
    assert pkt.extension == RtpExtension(0xABCD, bytes.fromhex("01020304"))
    with pytest.raises(MediaError):
        pkt.extension.elements()
    assert bytes(pkt) == wire


@pytest.mark.parametrize(
    "wire, why",
    [
        (b"\x80\x00\x00", "short"),
        (bytes.fromhex("40 00 0000 00000000 00000001"), "version 1"),
        (bytes.fromhex("81 00 0000 00000000 00000001"), "CSRC overrun"),
        (bytes.fromhex("90 00 0000 00000000 00000001 BEDE"), "ext header truncated"),
        (bytes.fromhex("90 00 0000 00000000 00000001 BEDE 0002 00000000"), "ext overrun"),
        (bytes.fromhex("A0 00 0000 00000000 00000001 00"), "padding count 0"),
        (bytes.fromhex("A0 00 0000 00000000 00000001 0005"), "padding overrun"),
    ],
)
def test_malformed_rejected(wire: bytes, why: str) -> None:
    with pytest.raises(MediaError):
        parse_rtp(wire)


def test_size_limit() -> None:
    with pytest.raises(MediaError, match="limit"):
        parse_rtp(bytes(RtpPacket(0, 1, 2, 3, b"x" * 200)), max_size=100)


def test_invalid_values_cannot_exist() -> None:
    with pytest.raises(MediaError):
        RtpPacket(128, 0, 0, 0)
    with pytest.raises(MediaError):
        RtpPacket(0, 70000, 0, 0)
    with pytest.raises(MediaError):
        RtpPacket(0, 0, 0, 0, csrc=tuple(range(16)))
    with pytest.raises(MediaError):
        RtpExtension(0xBEDE, b"abc")


def test_rtcp_demux_rfc5761() -> None:
    sr = bytes.fromhex("80 C8 0006") + bytes(24)  # PT=200 SR
    rr = bytes.fromhex("81 C9 0007") + bytes(28)  # PT=201 RR
    rtp_pcmu = bytes.fromhex("80 00 0001 00000000 00000001")
    rtp_marker_dyn = bytes.fromhex("80 E0 0001 00000000 00000001")  # M=1 PT=96
    assert is_rtcp(sr) and is_rtcp(rr)
    assert not is_rtcp(rtp_pcmu) and not is_rtcp(rtp_marker_dyn)
    assert not is_rtcp(b"\x00\xc8")  # STUN-like first byte: not version 2


elements = st.lists(
    st.builds(ExtensionElement, st.integers(1, 255), st.binary(min_size=0, max_size=20)),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    els=st.none() | elements,
    padding=st.integers(0, 255),
)
def test_roundtrip(pt, seq, ts, ssrc, payload, marker, csrc, els, padding) -> None:
    ext = None if els is None else RtpExtension.from_elements(els)
    pkt = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrc, ext, padding)
    back = parse_rtp(bytes(pkt))
    assert back == pkt
    if ext is not None and els is not None:
        assert back.extension is not None
        assert back.extension.elements() == tuple(els)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_never_crashes(data: bytes) -> None:
    try:
        pkt = parse_rtp(data)
    except MediaError:
        return
    if pkt.extension is not None:
        try:
            pkt.extension.elements()
        except MediaError:
            pass
    assert bytes(pkt) == data or pkt.padding  # padding bytes other than the count are not kept
