"""Live quality on the running system: the runtime's relay rates each leg with the quality
package's per-playout-model estimator (MediaStats.mos), and the runtime's QualityMonitor turns
a lossy leg into one QualityAlert for its tenant, over real loopback sockets and the ng
protocol (callward's own ng client)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from callward.config import CallwardConfig
from callward.events import MediaStats, QualityAlert
from callward.ng import NgCommand, NgRequest
from callward.ng.transport import NgConnection
from callward.quality.live_mos import late_share, playout_mos
from callward.rtp.packet import RtpPacket
from callward.runtime import open_runtime
from callward.sdp import parse_sdp

pytestmark = pytest.mark.timeout(60)


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


def test_late_share_by_hand() -> None:
    # J = 20 ms → σ = 20·√π/2 = 17.72 ms; fixed 50 ms: Q(50/17.72) = Q(2.82) ≈ 0.0024
    late, delay = late_share("fixed50", 20.0)
    assert late == pytest.approx(0.0024, abs=2e-4) and delay == 50.0
    assert late_share("fixed200", 0.0) == (0.0, 200.0)
    late, delay = late_share("adaptive", 20.0)  # (2.054 + 2.97)·17.72 + 5 = 94.0 ms
    assert delay == pytest.approx(94.0, abs=0.2) and late < 0.02
    m = playout_mos("PCMU", 1.0, 20.0, 80.0)
    assert set(m) == {"network", "fixed50", "fixed200", "adaptive"}
    assert m["fixed200"] < m["network"]  # 200 ms of buffer costs delay impairment
    assert playout_mos("speex", 1.0, 1.0, None) == {}


async def test_runtime_relay_rates_legs_and_alerts_the_tenant(tmp_path: Path) -> None:
    cfg = CallwardConfig.model_validate({
        "storage": {"data_dir": str(tmp_path)},
        "media": {"stats_interval_s": 0.3, "rtp_port_min": 43000, "rtp_port_max": 43999},
        "quality": {"tenants": {"default": {"mos_warn": 4.0, "mos_critical": 3.0}}},
    })  # fmt: skip
    rt = await open_runtime(cfg)
    seen: list[object] = []
    rt.bus.subscribe(seen.append)
    daemon = await rt.start_relay(ng_listen="127.0.0.1:0")
    a, b = _udp(), _udp()
    conn = await NgConnection.open(daemon.bound, timeout_s=0.5)
    try:
        r = await conn.request(NgRequest(NgCommand.OFFER, call_id="q1", from_tag="A",
                                         sdp=_sdp(a.getsockname()[1])))  # fmt: skip
        to_b = parse_sdp(r.sdp).media[0].port
        r = await conn.request(NgRequest(NgCommand.ANSWER, call_id="q1", from_tag="A",
                                         to_tag="B", sdp=_sdp(b.getsockname()[1])))  # fmt: skip
        to_a = parse_sdp(r.sdp).media[0].port
        # Leg a: 10 % of packets never sent (seq gaps); leg b clean.
        for seq in range(150):
            if seq % 10 != 5:
                a.sendto(bytes(RtpPacket(0, seq, seq * 160, 7, b"\xff" * 160)),
                         ("127.0.0.1", to_a))  # fmt: skip
            b.sendto(bytes(RtpPacket(0, seq, seq * 160, 9, b"\xff" * 160)), ("127.0.0.1", to_b))
            await asyncio.sleep(0.005)
        for _ in range(40):
            if any(isinstance(e, QualityAlert) for e in seen):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.7)  # more stats periods: the alert must not repeat
    finally:
        conn.close()
        a.close()
        b.close()
        await rt.close()
    stats = [e for e in seen if isinstance(e, MediaStats) and e.packets]
    lossy = [s for s in stats if s.lost > 0]
    assert lossy and all(s.mos is not None for s in stats)
    s = lossy[-1]
    loss = 100.0 * s.lost / (s.packets + s.lost)
    # (the event rounds jitter to µs: allow one step of the 2-decimal MOS)
    assert s.mos == pytest.approx(
        playout_mos("PCMU", loss, s.jitter_ms, s.rtt_ms)["adaptive"], abs=0.011
    )
    alerts = [e for e in seen if isinstance(e, QualityAlert)]
    assert len(alerts) == 1, alerts
    assert (alerts[0].tenant, alerts[0].call_id, alerts[0].cause) == ("default", "q1", "loss")
    assert alerts[0].level in ("warn", "critical") and alerts[0].mos < 4.0


async def test_runtime_edge_exports_its_sip_as_hep(tmp_path: Path) -> None:
    from callward.quality.hep import HepMessage, HepProto, HepReceiver
    from peers import free_port

    got: list[HepMessage] = []
    hep_port, sip_port = free_port(), free_port()
    transport, _ = await HepReceiver.listen("127.0.0.1", hep_port, got.append)
    cfg = CallwardConfig.model_validate({
        "storage": {"data_dir": str(tmp_path)},
        "edge": {"listen": [f"udp:127.0.0.1:{sip_port}"], "auth": False},
        "quality": {"hep_collector": f"127.0.0.1:{hep_port}", "hep_capture_id": 77},
    })  # fmt: skip
    rt = await open_runtime(cfg)
    ua = _udp()
    try:
        await rt.start_edge()
        ua_port = ua.getsockname()[1]
        options = (
            f"OPTIONS sip:127.0.0.1:{sip_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{ua_port};branch=z9hG4bKhep1\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1:{sip_port}>\r\n"
            "Call-ID: hep-test-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        ua.sendto(options, ("127.0.0.1", sip_port))
        loop = asyncio.get_running_loop()
        reply = (await asyncio.wait_for(loop.sock_recvfrom(ua, 4096), 5))[0]
        for _ in range(50):
            if len(got) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        ua.close()
        await rt.close()
        transport.close()
    assert reply.startswith(b"SIP/2.0 ")
    inbound = [m for m in got if m.payload == options]
    outbound = [m for m in got if m.payload == reply]
    assert inbound and outbound
    (i,), (o,) = inbound, outbound
    assert (i.src, i.sport, i.dst, i.dport) == ("127.0.0.1", ua_port, "127.0.0.1", sip_port)
    assert (o.src, o.sport, o.dst, o.dport) == ("127.0.0.1", sip_port, "127.0.0.1", ua_port)
    assert i.proto_type == HepProto.SIP and i.capture_id == 77 and i.ip_proto == 17
