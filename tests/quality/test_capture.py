"""Capture readers: pcap/pcapng variants, link types, IPv4/IPv6, fragments, bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import CaptureError
from callward.quality.analysis import collect, stream_reports
from callward.quality.capture import (
    LinkType,
    Reassembler,
    decode_udp,
    iter_blocks,
    iter_datagrams,
    iter_frames,
)
from callward.quality.report import analyze_capture
from callward.quality.synth import (
    Frame,
    RtpSpec,
    ethernet_ipv4_udp,
    ipv4_fragments,
    ipv4_packet,
    rtp_frames,
    rtp_header,
    udp_datagram,
    write_pcap,
    write_pcapng,
)

T0 = 1_700_000_000.0


def _frames(n: int = 20) -> list[Frame]:
    return rtp_frames(RtpSpec(count=n, jitter_ms=3))


@pytest.mark.parametrize("nsec", [False, True])
@pytest.mark.parametrize("big", [False, True])
def test_pcap_variants(tmp_path: Path, nsec: bool, big: bool) -> None:
    fr = _frames()
    p = tmp_path / "a.pcap"
    write_pcap(p, fr, nsec=nsec, big_endian=big)
    got = list(iter_frames(p))
    assert [g[2] for g in got] == [f.data for f in fr]
    assert [g[0] for g in got] == [round(f.ts * 1e6) * 1000 for f in fr]
    assert all(g[1] == LinkType.ETHERNET for g in got)


@pytest.mark.parametrize("tsresol", [3, 6, 9])
@pytest.mark.parametrize("simple", [False, True])
def test_pcapng_variants(tmp_path: Path, tsresol: int, simple: bool) -> None:
    fr = _frames()
    p = tmp_path / "a.pcapng"
    write_pcapng(p, fr, tsresol=tsresol, simple=simple)
    got = list(iter_frames(p))
    assert [g[2] for g in got] == [f.data for f in fr]
    if not simple:
        unit = 10 ** (9 - tsresol)
        us = [round(f.ts * 1e6) for f in fr]
        want = [u * 1000 if tsresol >= 6 else round(u / 10 ** (6 - tsresol)) * unit for u in us]
        assert [g[0] for g in got] == want


def _block(btype: int, body: bytes) -> bytes:
    body += b"\0" * ((-len(body)) % 4)
    n = 12 + len(body)
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def test_pcapng_two_interfaces_linktypes_and_binary_tsresol(tmp_path: Path) -> None:
    udp = ethernet_ipv4_udp("10.0.0.1", 4000, "10.0.0.2", 4002, rtp_header(0, 1, 0, 7) + b"x" * 20)
    raw = udp[14:]
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb0 = _block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HHB3xHH", 9, 1, 6, 0, 0))
    # interface 1: raw IP, if_tsresol = 2^-10 s
    idb1 = _block(1, struct.pack("<HHI", 101, 0, 0) + struct.pack("<HHB3xHH", 9, 1, 0x8A, 0, 0))
    epb0 = _block(6, struct.pack("<IIIII", 0, 0, 5_000_000, len(udp), len(udp)) + udp)
    epb1 = _block(6, struct.pack("<IIIII", 1, 0, 2048, len(raw), len(raw)) + raw)
    p = tmp_path / "two.pcapng"
    p.write_bytes(shb + idb0 + idb1 + epb0 + epb1)
    got = list(iter_frames(p))
    assert got[0] == (5_000_000_000, 1, udp)
    assert got[1] == (2_000_000_000, 101, raw)  # 2048 / 1024 s
    dgs = list(iter_datagrams(p))
    assert [(d.src, d.sport, d.dport) for d in dgs] == [("10.0.0.1", 4000, 4002)] * 2


def _link_frames() -> dict[int, bytes]:
    eth = ethernet_ipv4_udp(
        "10.0.0.1", 4000, "10.0.0.2", 4002, rtp_header(0, 5, 800, 9) + bytes(40)
    )
    ip = eth[14:]
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\2\0\0\0\0\1\0\0", 0x0800) + ip
    sll2 = struct.pack("!HHIHBB8s", 0x0800, 0, 3, 1, 0, 6, b"\2\0\0\0\0\1\0\0") + ip
    vlan = ethernet_ipv4_udp(
        "10.0.0.1", 4000, "10.0.0.2", 4002, rtp_header(0, 5, 800, 9) + bytes(40), vlan=7
    )
    return {LinkType.ETHERNET: eth, LinkType.LINUX_SLL: sll, LinkType.LINUX_SLL2: sll2,
            LinkType.RAW: ip, LinkType.IPV4: ip, 1000 + LinkType.ETHERNET: vlan}  # fmt: skip


@pytest.mark.parametrize("lt", sorted(_link_frames()))
def test_link_types_fast_and_reference_agree(tmp_path: Path, lt: int) -> None:
    data = _link_frames()[lt]
    linktype = lt % 1000
    d = decode_udp(linktype, data)
    assert d is not None and d[:4] == ("10.0.0.1", 4000, "10.0.0.2", 4002)
    p = tmp_path / "l.pcap"
    write_pcap(p, [Frame(T0 + i * 0.02, data) for i in range(3)], linktype=linktype)
    reps = stream_reports(collect(p))
    assert [(r.src, r.sport, r.dst, r.dport, r.ssrc, r.stats.packets) for r in reps] == [
        ("10.0.0.1", 4000, "10.0.0.2", 4002, 9, 3)
    ]


def test_ipv6_and_fragments_take_the_reference_path(tmp_path: Path) -> None:
    v6 = rtp_frames(RtpSpec(count=10, ipv6=True, src="2001:db8::a", dst="2001:db8::b"))
    big = rtp_header(0, 1, 0, 0x77) + bytes(300)
    frags = ipv4_fragments("10.9.0.1", 6000, "10.9.0.2", 6002, big, mtu_payload=128)
    assert len(frags) == 3
    p = tmp_path / "m.pcap"
    write_pcap(p, v6 + [Frame(T0 + 1 + i * 0.001, f) for i, f in enumerate(reversed(frags))])
    reps = {(r.src, r.ssrc): r for r in stream_reports(collect(p))}
    assert reps[("2001:db8::a", 0x11223344)].stats.packets == 10
    assert reps[("10.9.0.1", 0x77)].stats.packets == 1


def test_reassembler_overlap_and_bound() -> None:
    r = Reassembler(max_pending=2)
    key = (b"a", b"b", 17, 1)
    assert r.add(key, 8, True, b"BBBBBBBB") is None
    assert r.add(key, 0, True, b"AAAAAAAAAAAA") is None  # overlaps the next fragment
    # overlapping bytes come from the earlier-offset fragment (first 12 bytes of A, then B's tail)
    assert r.add(key, 16, False, b"CC") == b"AAAAAAAAAAAA" + b"BBBB" + b"CC"
    for i in range(10):
        r.add((b"x", b"y", 17, i), 8, False, b"z")
    assert len(r._pending) <= 3


def test_small_chunks_equal_one_chunk(tmp_path: Path) -> None:
    fr = _frames(200)
    p = tmp_path / "c.pcap"
    write_pcap(p, fr)
    small = [
        f
        for b in iter_blocks(p, chunk_bytes=700)
        for f in (b.frame(i) for i in range(len(b.offsets)))
    ]
    assert small == [f.data for f in fr]
    p2 = tmp_path / "c.pcapng"
    write_pcapng(p2, fr)
    small2 = [
        f
        for b in iter_blocks(p2, chunk_bytes=500)
        for f in (b.frame(i) for i in range(len(b.offsets)))
    ]
    assert small2 == [f.data for f in fr]


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(CaptureError):
        list(iter_frames(tmp_path / "missing.pcap"))
    (tmp_path / "short").write_bytes(b"\xd4\xc3")
    with pytest.raises(CaptureError):
        list(iter_frames(tmp_path / "short"))
    (tmp_path / "text").write_bytes(b"hello world, not a capture")
    with pytest.raises(CaptureError):
        list(iter_frames(tmp_path / "text"))
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    (tmp_path / "bad").write_bytes(hdr + struct.pack("<IIII", 0, 0, 50_000_000, 10) + b"x" * 64)
    with pytest.raises(CaptureError):
        list(iter_frames(tmp_path / "bad"))


def test_truncated_last_record_is_tolerated(tmp_path: Path) -> None:
    fr = _frames(5)
    p = tmp_path / "t.pcap"
    write_pcap(p, fr)
    p.write_bytes(p.read_bytes()[:-30])
    assert len(list(iter_frames(p))) == 4


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["pcap", "pcapng"]), st.binary(max_size=600), st.integers(0, 400))
def test_fuzz_readers_only_raise_capture_error(tmp_path_factory, kind, junk, cut) -> None:
    d = tmp_path_factory.mktemp("fz")
    p = d / "f"
    fr = _frames(4)
    (write_pcap if kind == "pcap" else write_pcapng)(p, fr)
    data = p.read_bytes()
    p.write_bytes(data[: max(4, len(data) - cut)] + junk)
    try:
        col = collect(p)
        stream_reports(col)
        analyze_capture(p)  # the whole `analyze` path: correlation, MOS, alerts
    except CaptureError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 300), st.binary(max_size=200))
def test_fuzz_decode_udp(lt, data) -> None:
    decode_udp(lt, data, Reassembler())
    decode_udp(LinkType.ETHERNET, b"\0" * 12 + b"\x08\x00" + data, Reassembler())


def test_ipv4_packet_checksum_valid() -> None:
    ip = ipv4_packet("1.2.3.4", "5.6.7.8", 17, udp_datagram(1, 2, b"abc"))
    s = sum(struct.unpack("!10H", ip[:20]))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    assert s == 0xFFFF


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 40)), min_size=1, max_size=12))
def test_speculative_walk_on_mixed_sizes(tmp_path_factory, runs) -> None:
    """Runs of equal and changing record sizes: the run-verified walk must see every frame."""
    frames = []
    t = T0
    for size, count in runs:
        for _ in range(count):
            t += 0.001
            frames.append(
                Frame(t, ethernet_ipv4_udp("10.0.0.1", 1, "10.0.0.2", 2, bytes(size * 7)))
            )
    d = tmp_path_factory.mktemp("mx")
    write_pcap(d / "m.pcap", frames)
    write_pcapng(d / "m.pcapng", frames, tsresol=9)
    want_ts = [round(f.ts * 1e6) * 1000 for f in frames]
    for name in ("m.pcap", "m.pcapng"):
        for chunk in (300, 1 << 20):
            blocks = list(iter_blocks(d / name, chunk_bytes=chunk))
            got = [b.frame(i) for b in blocks for i in range(len(b.offsets))]
            assert got == [f.data for f in frames]
            assert [int(t) for b in blocks for t in b.ts_ns] == want_ts
