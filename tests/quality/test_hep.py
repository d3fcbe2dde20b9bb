"""HEPv3: round trip, chunk layout checked byte by byte, file reader, UDP receiver, fuzz."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import CaptureError
from callward.quality.analysis import collect
from callward.quality.hep import (
    HepExporter,
    HepMessage,
    HepReceiver,
    decode_hep,
    encode_hep,
    iter_hep_file,
)
from callward.quality.synth import Frame, ethernet_ipv4_udp, write_pcap

SIP = b"OPTIONS sip:a@example.invalid SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n"


def test_round_trip_v4_and_v6() -> None:
    for src, dst in (("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")):
        m = HepMessage(src, 5060, dst, 5070, 1_700_000_000_123_456_000, 1, SIP, capture_id=7,
                       correlation_id=b"cid")  # fmt: skip
        assert decode_hep(encode_hep(m, auth_key=b"k")) == m


def test_layout_by_hand() -> None:
    data = encode_hep(HepMessage("1.2.3.4", 1, "5.6.7.8", 2, 3_000_004_000, 1, b"P"))
    assert data[:4] == b"HEP3"
    assert struct.unpack("!H", data[4:6])[0] == len(data)
    # first chunk: vendor 0, type 1 (IP family), length 7, value 2 (AF_INET)
    assert data[6:13] == b"\x00\x00\x00\x01\x00\x07\x02"
    # the payload chunk (type 15) is last: 6-byte header + b"P"
    assert data[-7:] == b"\x00\x00\x00\x0f\x00\x07P"
    m = decode_hep(data)
    assert m.ts_ns == 3_000_004_000


def test_file_reader_and_bad_file(tmp_path: Path) -> None:
    msgs = [HepMessage("10.0.0.1", 5060, "10.0.0.2", 5060, i * 1000, 1, SIP) for i in range(3)]
    p = tmp_path / "h.hep"
    p.write_bytes(b"".join(encode_hep(m) for m in msgs))
    assert list(iter_hep_file(p)) == msgs
    p.write_bytes(encode_hep(msgs[0])[:-3])
    with pytest.raises(CaptureError):
        list(iter_hep_file(p))


def test_hep_inside_pcap_is_decapsulated(tmp_path: Path) -> None:
    inner = HepMessage("192.0.2.1", 5060, "192.0.2.2", 5060, 1_700_000_000_000_000_000, 1, SIP)
    frame = ethernet_ipv4_udp("10.1.1.1", 40000, "10.1.1.2", 9060, encode_hep(inner))
    p = tmp_path / "hep.pcap"
    write_pcap(p, [Frame(1_700_000_001.0, frame)])
    col = collect(p)
    assert [(d.src, d.dst, d.payload) for d in col.sip] == [("192.0.2.1", "192.0.2.2", SIP)]


async def test_udp_receiver() -> None:
    got: list[HepMessage] = []
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    transport, proto = await HepReceiver.listen("127.0.0.1", port, got.append)
    try:
        m = HepMessage("127.0.0.1", 5060, "127.0.0.1", 5061, 10**18, 1, SIP)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.sendto(encode_hep(m), ("127.0.0.1", port))
        tx.sendto(b"garbage", ("127.0.0.1", port))
        tx.close()
        for _ in range(100):
            if got and proto.errors:
                break
            await asyncio.sleep(0.01)
        assert got == [m] and proto.errors == 1
    finally:
        transport.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decode(data: bytes) -> None:
    for d in (data, b"HEP3" + data, b"HEP3" + struct.pack("!H", len(data) + 6) + data):
        try:
            decode_hep(d)
        except CaptureError:
            pass


def test_encode_rejects() -> None:
    with pytest.raises(CaptureError):
        encode_hep(HepMessage("host", 1, "10.0.0.1", 2, 0, 1, b""))
    with pytest.raises(CaptureError):
        encode_hep(HepMessage("10.0.0.1", 1, "::1", 2, 0, 1, b""))
    with pytest.raises(CaptureError):
        encode_hep(HepMessage("10.0.0.1", 1, "10.0.0.2", 2, 0, 1, b"x" * 70000))


async def test_exporter_to_receiver() -> None:
    got: list[HepMessage] = []
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    transport, _ = await HepReceiver.listen("127.0.0.1", port, got.append)
    exp = await HepExporter.connect("127.0.0.1", port, capture_id=2001)
    try:
        m = HepMessage("10.0.0.1", 5060, "10.0.0.2", 5060, 10**18, 1, SIP)
        exp.export(m)
        exp.export(HepMessage("10.0.0.1", 1, "10.0.0.2", 2, 0, 1, b"x" * 70000))
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got and got[0].payload == SIP and got[0].capture_id == 2001
        assert exp.sent == 1 and exp.dropped == 1
    finally:
        exp.close()
        transport.close()


def test_analyze_reads_hep_files(tmp_path: Path) -> None:
    from callward.quality.report import analyze_capture
    from callward.quality.synth import RtpSpec, rtp_frames

    msgs = []
    for f in rtp_frames(RtpSpec(count=50, loss=0.1, seed=4)):
        ip = f.data[14:]
        msgs.append(HepMessage("10.0.0.1", 40000, "10.0.0.2", 40002, round(f.ts * 1e9),
                               34, ip[28:]))  # fmt: skip
    p = tmp_path / "rtp.hep"
    p.write_bytes(b"".join(encode_hep(m) for m in msgs))
    rep = analyze_capture(p, mos=False)
    assert len(rep.streams) == 1
    s = rep.streams[0].stats
    seqs = [int.from_bytes(m.payload[2:4], "big") for m in msgs]  # in order, no wrap
    assert s.packets == len(msgs)
    assert s.lost == (seqs[-1] - seqs[0] + 1) - len(msgs)
