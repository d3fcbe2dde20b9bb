"""tshark (an independent dissector) decodes what callward puts on the wire: RTP headers and
G.711 payloads, SRTP headers, RTCP SR/RR/SDES/BYE/APP/XR VoIP metrics, RFC 4733 events, the
DSCP the relay marks, and RFC 3550 loss/jitter equal to tshark's own rtp,streams analysis."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from callward.relay.leg import LegConfig
from callward.relay.session import MediaRelay
from callward.rtp.dtmf import encode_digit
from callward.rtp.packet import RtpPacket
from callward.rtp.rtcp import (
    App,
    Bye,
    ReceiverReport,
    ReportBlock,
    Sdes,
    SdesChunk,
    SdesItem,
    SenderReport,
    VoipMetrics,
    XrPacket,
    serialize_rtcp,
)
from callward.rtp.srtp import SrtpContext, SrtpKeying
from callward.rtp.stats import ReceiverStats
from peers import free_port, tshark_capture

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

if shutil.which("tshark") is None:  # pragma: no cover
    pytest.skip("why: tshark not installed", allow_module_level=True)


def fields(
    pcap: Path, decode: list[str], names: list[str], extra: list[str] | None = None
) -> list[list[str]]:
    cmd = ["tshark", "-r", str(pcap)]
    for d in decode:
        cmd += ["-d", d]
    cmd += extra or []
    cmd += ["-T", "fields", "-E", "separator=|"] + [x for n in names for x in ("-e", n)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def sink(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))  # a listener, so loopback sends cause no ICMP noise
    return s


def test_rtp_and_srtp_headers_and_payload(tmp_path: Path) -> None:
    port, sport = free_port(), free_port()
    pcap = tmp_path / "rtp.pcap"
    tx = SrtpContext(SrtpKeying.generate(), inbound=False)
    sent = []
    with sink(port) as rx, sink(sport) as srx, tshark_capture(pcap, [port, sport]), \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:  # fmt: skip
        for seq in range(65530, 65536 + 6):
            pkt = RtpPacket(0, seq % 65536, 1000 + 160 * seq, 0xCAFEF00D, bytes([seq % 256]) * 160,
                            marker=seq == 65530, csrc=(7,) if seq % 2 else ())  # fmt: skip
            sent.append(pkt)
            out.sendto(bytes(pkt), ("127.0.0.1", port))
            out.sendto(tx.protect(bytes(pkt)), ("127.0.0.1", sport))
            time.sleep(0.002)
        del rx, srx
    rows = fields(pcap, [f"udp.port=={port},rtp"],
                  ["rtp.seq", "rtp.timestamp", "rtp.ssrc", "rtp.p_type", "rtp.marker",
                   "rtp.cc", "rtp.payload"],
                  ["-Y", f"udp.dstport=={port}"])  # fmt: skip
    assert len(rows) == len(sent)
    for row, pkt in zip(rows, sent, strict=True):
        assert int(row[0]) == pkt.sequence_number
        assert int(row[1]) == pkt.timestamp and int(row[2], 16) == pkt.ssrc
        assert int(row[3]) == 0 and (row[4] in ("1", "True")) == pkt.marker
        assert int(row[5]) == len(pkt.csrc)
        assert bytes.fromhex(row[6].replace(":", "")) == pkt.payload
    srows = fields(pcap, [f"udp.port=={sport},rtp"], ["rtp.seq", "rtp.ssrc", "udp.length"],
                   ["-Y", f"udp.dstport=={sport}"])  # fmt: skip
    assert [int(r[0]) for r in srows] == [p.sequence_number for p in sent]
    # SRTP adds exactly the 10-byte HMAC-SHA1-80 tag; headers stay in clear (RFC 3711 §3.1)
    assert [int(r[2]) - 8 for r in srows] == [len(bytes(p)) + 10 for p in sent]


def test_rtcp_compound_decoded(tmp_path: Path) -> None:
    port = free_port()
    pcap = tmp_path / "rtcp.pcap"
    ntp = (3_900_000_000 << 32) | 0x80000000
    compound = serialize_rtcp([
        SenderReport(0x11223344, ntp, 123456, 500, 80000,
                     (ReportBlock(0x55667788, 64, 17, 0x1FFFF, 42, 0x12345678, 0x00018000),)),
        Sdes((SdesChunk(0x11223344, (SdesItem(1, b"relay@callward"),)),)),
        XrPacket(0x11223344, (VoipMetrics(0x55667788, loss_rate=12, r_factor=88, mos_lq=41,
                                          jb_nominal=40, jb_maximum=80, jb_abs_max=200),)),
        App(0x11223344, b"CWRD", 1, b"abcd"),
        Bye((0x11223344,), b"done"),
    ])  # fmt: skip
    rr = serialize_rtcp([ReceiverReport(0x99, (ReportBlock(0x11223344, 0, -2, 70000, 5),))])
    with (
        sink(port),
        tshark_capture(pcap, [port]),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as o,
    ):
        o.sendto(compound, ("127.0.0.1", port))
        o.sendto(rr, ("127.0.0.1", port))
    rows = fields(pcap, [f"udp.port=={port},rtcp"],
                  ["rtcp.pt", "rtcp.senderssrc", "rtcp.sender.packetcount", "rtcp.ssrc.fraction",
                   "rtcp.ssrc.cum_nr", "rtcp.ssrc.high_seq", "rtcp.ssrc.jitter", "rtcp.ssrc.lsr",
                   "rtcp.ssrc.dlsr", "rtcp.sdes.text", "rtcp.app.name",
                   "rtcp.xr.voipmetrics.rfactor", "rtcp.xr.voipmetrics.moslq",
                   "rtcp.xr.voipmetrics.jbabsmax", "rtcp.ssrc.high_cycles"])  # fmt: skip
    assert len(rows) == 2
    sr = rows[0]
    assert sr[0].split(",") == ["200", "202", "207", "204", "203"]
    assert int(sr[1].split(",")[0], 16) == 0x11223344 and sr[2] == "500"
    first = [v.split(",")[0] for v in sr]  # the XR block reuses some field names
    # extended highest seq 0x1FFFF = 1 cycle + seq 65535
    assert first[3] == "64" and first[4] == "17" and (first[14], first[5]) == ("1", "65535")
    assert first[6] == "42" and first[7] == str(0x12345678) and first[8] == str(0x18000)
    assert sr[3].split(",")[1] == "12"  # XR VoIP loss rate, shown as a fraction by tshark
    # tshark files the BYE reason under the same text field as the SDES CNAME
    assert sr[9].split(",") == ["relay@callward", "done"] and sr[10] == "CWRD"
    assert sr[11] == "88" and sr[12] == "4.1" and sr[13] == "200"
    assert rows[1][0] == "201" and rows[1][4] == "-2"  # signed 24-bit cumulative loss


def test_rfc4733_events_decoded(tmp_path: Path) -> None:
    port = free_port()
    pcap = tmp_path / "dtmf.pcap"
    pkts = encode_digit("#", start_timestamp=16000, duration_ms=120)
    pkts += encode_digit("7", start_timestamp=24000, duration_ms=80)
    with (
        sink(port),
        tshark_capture(pcap, [port]),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as o,
    ):
        for seq, p in enumerate(pkts):
            wire = RtpPacket(101, seq, p.timestamp, 0xD7F, bytes(p.event), marker=p.marker)
            o.sendto(bytes(wire), ("127.0.0.1", port))
            time.sleep(0.002)
    rows = fields(pcap, [f"udp.port=={port},rtp", "rtp.pt==101,rtpevent"],
                  ["rtp.timestamp", "rtpevent.event_id", "rtpevent.end_of_event",
                   "rtpevent.duration", "rtpevent.volume"])  # fmt: skip
    assert len(rows) == len(pkts)
    for row, p in zip(rows, pkts, strict=True):
        assert int(row[0]) == p.timestamp and int(row[1]) == p.event.event
        assert (row[2] in ("1", "True")) == p.event.end
        assert int(row[3]) == p.event.duration and int(row[4]) == p.event.volume
    ends = [r for r in rows if r[2] in ("1", "True")]
    assert len(ends) == 6 and {int(r[1]) for r in ends} == {11, 7}


def test_loss_and_jitter_match_tshark_rtp_streams(tmp_path: Path) -> None:
    port = free_port()
    pcap = tmp_path / "stream.pcap"
    skip = {12, 13, 40}
    with (
        sink(port),
        tshark_capture(pcap, [port]),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as o,
    ):
        for seq in range(1, 101):
            if seq in skip:
                continue
            o.sendto(
                bytes(RtpPacket(0, seq, seq * 160, 0xABCD, b"\xff" * 160)), ("127.0.0.1", port)
            )
            time.sleep(0.004 + 0.003 * (seq % 3))  # uneven spacing -> jitter
    # our RFC 3550 statistics fed with tshark's own arrival times
    rows = fields(pcap, [f"udp.port=={port},rtp"], ["frame.time_epoch", "rtp.seq", "rtp.timestamp"])
    st = ReceiverStats(0xABCD, 8000, probation=0)
    max_jitter = 0.0
    for t, seq, ts in rows:
        st.receive(int(seq), int(ts), float(t))
        max_jitter = max(max_jitter, st.jitter * 1000 / 8000)
    assert st.cumulative_lost == len(skip)
    out = subprocess.run(
        ["tshark", "-q", "-r", str(pcap), "-d", f"udp.port=={port},rtp", "-z", "rtp,streams"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    line = next(ln for ln in out.splitlines() if "0x0000abcd" in ln.lower())
    # columns: ... Payload  Pkts  Lost (pct)  Min Delta  Mean Delta  Max Delta  Min Jitter
    #          Mean Jitter  Max Jitter  Problem?
    m = re.search(r"(\d+)\s+(-?\d+)\s+\(([-\d.]+)%\)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+"
                  r"([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)  # fmt: skip
    assert m, line
    assert int(m.group(1)) == 100 - len(skip) and int(m.group(2)) == len(skip)
    assert float(m.group(9)) == pytest.approx(max_jitter, abs=0.01)


def test_relay_marks_dscp_ef_on_the_wire(tmp_path: Path) -> None:
    pcap = tmp_path / "relay.pcap"
    dest = free_port()

    async def run() -> tuple[int, int]:
        relay = MediaRelay()
        s = await relay.create_session(
            "c",
            LegConfig("a", trusted=True),
            LegConfig("b", trusted=True, remote=("127.0.0.1", dest)),
        )
        a_port = s.local_address("a")[1]
        b_port = s.local_address("b")[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as o:
            for seq in range(5):
                o.sendto(
                    bytes(RtpPacket(8, seq, seq * 160, 1, b"\xd5" * 160)), ("127.0.0.1", a_port)
                )
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await relay.close_all()
        return a_port, b_port

    with sink(dest), tshark_capture(pcap, [dest]):
        _, b_port = asyncio.run(run())
    rows = fields(pcap, [f"udp.port=={dest},rtp"], ["ip.dsfield.dscp", "udp.srcport", "rtp.p_type"])
    assert len(rows) == 5
    assert all(r == ["46", str(b_port), "8"] for r in rows)
