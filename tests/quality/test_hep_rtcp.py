"""The relay's RTCP as HEP: with ``quality.hep_collector`` set, the runtime's ng relay (the one
`callward serve` runs) sends every RTCP packet a leg sends it to the collector as HEPv3 type 5,
the report rendered as the JSON Homer/heplify expect and correlated by Call-ID. Real loopback
sockets: callward's ng client sets up the call, a UDP 'phone' sends an RTCP SR and a
``HepReceiver`` is the collector."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from callward.config import CallwardConfig
from callward.ng import NgCommand, NgRequest
from callward.ng.transport import NgConnection
from callward.quality.hep import HepMessage, HepProto, HepReceiver, rtcp_json
from callward.rtp.rtcp import ReceiverReport, ReportBlock, SenderReport, serialize_rtcp
from callward.runtime import open_runtime
from callward.sdp import parse_sdp

pytestmark = pytest.mark.timeout(60)

HEP_PORT = 23411


def _sdp(port: int) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _sr() -> bytes:
    block = ReportBlock(0x99, fraction_lost=26, cumulative_lost=12, highest_seq=70_000,
                        jitter=80, lsr=0x1234_5678, dlsr=6554)  # fmt: skip
    sr = SenderReport(0x77, ntp_timestamp=(3_900_000_000 << 32) | 0x8000_0000,
                      rtp_timestamp=16_000, packet_count=100, octet_count=16_000,
                      reports=(block,))  # fmt: skip
    return serialize_rtcp([sr])


def test_rtcp_json_is_homers_rendering() -> None:
    doc = json.loads(rtcp_json(_sr()) or b"")
    assert doc == {
        "ssrc": 0x77, "type": 200, "report_count": 1,
        "sender_information": {"ntp_timestamp_sec": 3_900_000_000,
                               "ntp_timestamp_usec": 0x8000_0000, "rtp_timestamp": 16_000,
                               "packets": 100, "octets": 16_000},
        "report_blocks": [{"source_ssrc": 0x99, "fraction_lost": 26, "packets_lost": 12,
                           "highest_seq_no": 70_000, "ia_jitter": 80, "lsr": 0x1234_5678,
                           "dlsr": 6554}],
    }  # fmt: skip
    rr = json.loads(rtcp_json(serialize_rtcp([ReceiverReport(5)])) or b"")
    assert rr["type"] == 201 and rr["report_blocks"] == [] and "sender_information" not in rr
    assert rtcp_json(b"\x80\xc8\x00") is None  # truncated: nothing to export


async def test_runtime_relay_exports_rtcp_to_the_hep_collector(tmp_path: Path) -> None:
    got: list[HepMessage] = []
    transport, _rx = await HepReceiver.listen("127.0.0.1", HEP_PORT, got.append)
    cfg = CallwardConfig.model_validate({
        "storage": {"data_dir": str(tmp_path)},
        "media": {"rtp_port_min": 23500, "rtp_port_max": 23599},
        "quality": {"hep_collector": f"127.0.0.1:{HEP_PORT}", "hep_capture_id": 77},
    })  # fmt: skip
    rt = await open_runtime(cfg)
    daemon = await rt.start_relay(ng_listen="127.0.0.1:0")
    a, b = _udp(), _udp()
    a_addr = a.getsockname()
    conn = await NgConnection.open(daemon.bound, timeout_s=0.5)
    try:
        r = await conn.request(NgRequest(NgCommand.OFFER, call_id="hep-1", from_tag="A",
                                         sdp=_sdp(a.getsockname()[1])))  # fmt: skip
        r = await conn.request(NgRequest(NgCommand.ANSWER, call_id="hep-1", from_tag="A",
                                         to_tag="B", sdp=_sdp(b.getsockname()[1])))  # fmt: skip
        to_a = parse_sdp(r.sdp).media[0].port  # where phone a sends (no rtcp-mux: RTCP on +1)
        for _ in range(50):
            a.sendto(_sr(), ("127.0.0.1", to_a + 1))
            await asyncio.sleep(0.05)
            if any(m.proto_type == HepProto.RTCP for m in got):
                break
    finally:
        conn.close()
        a.close()
        b.close()
        await rt.close()
        transport.close()
    rtcp = [m for m in got if m.proto_type == HepProto.RTCP]
    assert rtcp, "no HEP type 5 reached the collector"
    m = rtcp[0]
    assert m.correlation_id == b"hep-1" and m.capture_id == 77
    assert (m.src, m.sport) == a_addr
    assert (m.dst, m.dport) == ("127.0.0.1", to_a + 1)
    doc = json.loads(m.payload)
    assert doc["type"] == 200 and doc["ssrc"] == 0x77
    assert doc["sender_information"]["packets"] == 100
    assert doc["report_blocks"][0]["packets_lost"] == 12
