"""RTCP parse/build against byte layouts written out by hand from RFC 3550 §6.4-6.7, RFC 3611."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.rtp.rtcp import (
    App,
    Bye,
    ReceiverReport,
    ReportBlock,
    Sdes,
    SdesChunk,
    SdesItem,
    SenderReport,
    UnknownRtcp,
    VoipMetrics,
    XrBlock,
    XrPacket,
    ntp_middle32,
    parse_rtcp,
    serialize_rtcp,
)

SR_WIRE = (
    bytes.fromhex("81 C8 000C")  # V=2 RC=1 PT=200 length=12 words
    + bytes.fromhex("11223344")  # sender SSRC
    + bytes.fromhex("E1234567 89ABCDEF")  # NTP
    + bytes.fromhex("00001F40")  # RTP ts 8000
    + bytes.fromhex("00000064 00003E80")  # 100 packets, 16000 octets
    # report block: ssrc, fraction 0x40 (25%), cumulative lost -3 (0xFFFFFD), ext seq, jitter,
    + bytes.fromhex("55667788 40FFFFFD 0001FFFF 00000021 4567 89AB 00018000")
)
SDES_WIRE = (
    bytes.fromhex("81 CA 0004")  # SC=1 PT=202 length=4
    + bytes.fromhex("11223344")
    + bytes.fromhex("01 09")  # CNAME, 9 bytes
    + b"cw@host.x"
    + b"\x00"  # END; 4 + 2 + 9 + 1 = 16 bytes is already 32-bit aligned
)


def test_sender_report_fields() -> None:
    (sr,) = parse_rtcp(SR_WIRE)
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == 0x11223344 and sr.ntp_timestamp == 0xE123456789ABCDEF
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (8000, 100, 16000)
    (rb,) = sr.reports
    assert rb.ssrc == 0x55667788 and rb.fraction_lost == 64 and rb.cumulative_lost == -3
    assert rb.highest_seq == 0x1FFFF and rb.jitter == 33
    assert rb.lsr == 0x456789AB and rb.dlsr == 0x18000
    assert serialize_rtcp([sr]) == SR_WIRE
    assert ntp_middle32(sr.ntp_timestamp) == 0x456789AB


def test_sdes_cname_and_padding() -> None:
    wire = SDES_WIRE
    assert len(wire) == 4 + 16
    (sdes,) = parse_rtcp(wire)
    assert isinstance(sdes, Sdes) and sdes.chunks[0].cname == "cw@host.x"
    assert serialize_rtcp([sdes]) == wire
    # 8-byte CNAME: 4+2+8 = 14 -> END + 1 pad = 16
    s2 = Sdes((SdesChunk(1, (SdesItem(1, b"abcdefgh"),)),))
    assert serialize_rtcp([s2]) == bytes.fromhex("81CA0004 00000001 0108") + b"abcdefgh" + b"\0\0"


def test_compound_rr_sdes_bye() -> None:
    rr = ReceiverReport(7, (ReportBlock(9, 1, 2, 3, 4, 5, 6),))
    sdes = Sdes((SdesChunk(7, (SdesItem(1, b"x"), SdesItem(6, b"callward"))),))
    bye = Bye((7, 8), b"done")
    wire = serialize_rtcp([rr, sdes, bye])
    # BYE: header + 2 ssrc + (1 len + 4 text, padded to 8) = 4 + 8 + 8
    assert wire[-20:] == bytes.fromhex("82 CB 0004 00000007 00000008 04") + b"done" + b"\0\0\0"
    assert parse_rtcp(wire, strict=True) == (rr, sdes, bye)


def test_app_and_unknown_feedback_roundtrip() -> None:
    app = App(0xA, b"CWRD", 3, b"\x01\x02\x03\x04")
    assert serialize_rtcp([app]) == bytes.fromhex("83 CC 0003 0000000A") + b"CWRD" + b"\1\2\3\4"
    nack = UnknownRtcp(205, 1, bytes.fromhex("00000001 00000002 00100003"))
    assert parse_rtcp(serialize_rtcp([app, nack])) == (app, nack)


def test_xr_voip_metrics_layout() -> None:
    # RFC 3611 §4.7 field order, packed by hand
    body = struct.pack(
        "!IBBBBHHHHbbBBBBBBBBHHH",
        0xCAFE, 12, 3, 40, 2, 120, 5000, 80, 60, -20, -70, 127, 16, 88, 127, 41, 42,
        0x80, 0, 40, 80, 200,
    )  # fmt: skip
    wire = bytes.fromhex("80 CF 000A 00000001 07 00 0008") + body
    (xr,) = parse_rtcp(wire)
    assert isinstance(xr, XrPacket)
    (vm,) = xr.blocks
    assert isinstance(vm, VoipMetrics)
    assert (vm.ssrc, vm.loss_rate, vm.discard_rate, vm.burst_density) == (0xCAFE, 12, 3, 40)
    assert (vm.burst_duration, vm.gap_duration, vm.round_trip_delay) == (120, 5000, 80)
    assert (vm.signal_level, vm.noise_level, vm.r_factor, vm.mos_lq, vm.mos_cq) == (
        -20, -70, 88, 41, 42,
    )  # fmt: skip
    assert (vm.rx_config, vm.jb_nominal, vm.jb_maximum, vm.jb_abs_max) == (0x80, 40, 80, 200)
    assert serialize_rtcp([xr]) == wire
    other = XrPacket(1, (XrBlock(4, 0, bytes(8)), vm))
    assert parse_rtcp(serialize_rtcp([other])) == (other,)


def test_padding_on_last_packet() -> None:
    wire = bytes.fromhex("A0 C9 0002 00000005 00000004")  # RR, P=1, 4 padding octets
    (rr,) = parse_rtcp(wire, strict=True)
    assert rr == ReceiverReport(5)


@pytest.mark.parametrize(
    "wire",
    [
        b"\x80\xc9",
        bytes.fromhex("40 C9 0001 00000005"),  # version 1
        bytes.fromhex("80 C9 0005 00000005"),  # length overrun
        bytes.fromhex("81 C9 0001 00000005"),  # RC=1 but no block
        bytes.fromhex("A0 C9 0001 00000000"),  # padding count 0
        bytes.fromhex("81 CA 0002 00000001 0109"),  # SDES item overrun
        bytes.fromhex("80 C9 0001 00000005 80"),  # trailing garbage
        bytes.fromhex("80 CF 0002 00000001 07000008"),  # XR block overrun
    ],
)
def test_malformed(wire: bytes) -> None:
    with pytest.raises(MediaError):
        parse_rtcp(wire)


def test_strict_first_packet_must_be_report() -> None:
    wire = serialize_rtcp([Bye((1,))])
    assert parse_rtcp(wire) == (Bye((1,)),)  # reduced-size RTCP (RFC 5506) is fine
    with pytest.raises(MediaError, match="SR or RR"):
        parse_rtcp(wire, strict=True)


def test_values_validated() -> None:
    with pytest.raises(MediaError):
        ReportBlock(1, cumulative_lost=1 << 23)
    with pytest.raises(MediaError):
        App(1, b"abc")
    with pytest.raises(MediaError):
        VoipMetrics(1, signal_level=200)


blocks = st.builds(
    ReportBlock,
    st.integers(0, 2**32 - 1),
    st.integers(0, 255),
    st.integers(-(2**23), 2**23 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
u32 = st.integers(0, 2**32 - 1)
packets = st.one_of(
    st.builds(SenderReport, u32, st.integers(0, 2**64 - 1), u32, u32, u32,
              st.lists(blocks, max_size=3).map(tuple)),
    st.builds(ReceiverReport, u32, st.lists(blocks, max_size=3).map(tuple)),
    st.builds(Bye, st.lists(u32, max_size=3).map(tuple), st.binary(max_size=20)),
    st.builds(Sdes, st.lists(st.builds(SdesChunk, u32, st.lists(
        st.builds(SdesItem, st.integers(1, 8), st.binary(max_size=12)), max_size=3).map(tuple)),
        max_size=3).map(tuple)),
    st.builds(XrPacket, u32, st.lists(st.builds(VoipMetrics, u32, st.integers(0, 255)),
                                      max_size=2).map(tuple)),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(packets, min_size=1, max_size=4))
def test_roundtrip(pkts: list[object]) -> None:
    assert parse_rtcp(serialize_rtcp(pkts)) == tuple(pkts)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_never_crashes(data: bytes) -> None:
    try:
        parse_rtcp(data)
    except MediaError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=100), st.integers(0, 200))
def test_mutated_valid_never_crashes(noise: bytes, at: int) -> None:
    base = bytearray(SR_WIRE + SDES_WIRE)
    pos = at % len(base)
    base[pos : pos + len(noise)] = noise
    try:
        parse_rtcp(bytes(base))
    except MediaError:
        pass
