"""Live monitor: sampling per call, header-only RTP, alerts at call end, fed through HEPv3."""

from __future__ import annotations

import asyncio
import socket

from callward.config import QualityConfig, TenantQuality
from callward.events import InProcessBus, QualityAlert
from callward.quality.capture import Datagram, decode_udp
from callward.quality.hep import HepExporter, HepMessage, HepReceiver
from callward.quality.live import LiveMonitor
from callward.quality.synth import RtpSpec, merge, rtp_frames, sip_call

T0 = 1_700_000_000.0
A, B = ("198.51.100.10", 40000), ("203.0.113.20", 50000)


def _datagrams(call_id: str, loss: float) -> list[Datagram]:
    frames = merge(
        sip_call(call_id, T0, A[0], B[0], A, B, bye_after_s=6.2),
        rtp_frames(RtpSpec(src=A[0], sport=A[1], dst=B[0], dport=B[1], start=T0 + 1.05,
                           count=300, loss=loss, seed=2)),
        rtp_frames(RtpSpec(src=B[0], sport=B[1], dst=A[0], dport=A[1], start=T0 + 1.05,
                           count=300, ssrc=2)),
    )  # fmt: skip
    out = []
    for f in frames:
        d = decode_udp(1, f.data)
        assert d is not None
        out.append(Datagram(round(f.ts * 1e9), *d))
    return out


async def _run(cfg: QualityConfig, dgs: list[Datagram]) -> tuple[LiveMonitor, list[object]]:
    bus = InProcessBus()
    seen: list[object] = []
    bus.subscribe(seen.append)
    mon = LiveMonitor(cfg, bus, node="q", clock=lambda: 7.0, tenant_of=lambda cid: "gold")
    for d in dgs:
        await mon.feed(d)
    return mon, seen


async def test_lossy_sampled_call_alerts_once_at_bye() -> None:
    cfg = QualityConfig(tenants={"gold": TenantQuality(sample_rate=1.0)})
    mon, seen = await _run(cfg, _datagrams("lossy@x", 0.2))
    alerts = [e for e in seen if isinstance(e, QualityAlert)]
    assert [(a.call_id, a.tenant, a.cause, a.level) for a in alerts] == [
        ("lossy@x", "gold", "loss", "critical")
    ]
    assert mon.calls == {}  # forgotten after the BYE


async def test_unsampled_call_is_never_inspected() -> None:
    cfg = QualityConfig(tenants={"gold": TenantQuality(sample_rate=0.0)})
    dgs = _datagrams("skip@x", 0.2)
    mon, seen = await _run(cfg, dgs)
    rtp = sum(1 for d in dgs if d.payload[0] >> 6 == 2)
    assert seen == [] and mon.skipped_calls == 1 and mon.dropped_rtp == rtp


async def test_header_only_reaches_the_collector(monkeypatch) -> None:
    cfg = QualityConfig(tenants={"gold": TenantQuality(sample_rate=1.0)})
    kept: list[bytes] = []
    from callward.quality import fastpath

    orig = fastpath.RtpCollector.add_datagram

    def spy(self, d, order):
        kept.append(d.payload)
        return orig(self, d, order)

    monkeypatch.setattr(fastpath.RtpCollector, "add_datagram", spy)
    await _run(cfg, _datagrams("hdr@x", 0.0))
    assert kept and max(len(p) for p in kept) == 12


async def test_fed_from_hep() -> None:
    cfg = QualityConfig(tenants={"gold": TenantQuality(sample_rate=1.0)})
    bus = InProcessBus()
    seen: list[object] = []
    bus.subscribe(seen.append)
    mon = LiveMonitor(cfg, bus, node="q", clock=lambda: 7.0, tenant_of=lambda cid: "gold")
    queue: asyncio.Queue[HepMessage] = asyncio.Queue()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    transport, _ = await HepReceiver.listen("127.0.0.1", port, queue.put_nowait)
    exp = await HepExporter.connect("127.0.0.1", port)
    dgs = _datagrams("hep@x", 0.2)
    try:
        # Lock-step in batches of 20: loopback UDP drops when the receiver's buffer fills on a
        # busy machine, and a lost datagram would leave this test waiting rather than failing.
        for start in range(0, len(dgs), 20):
            batch = dgs[start : start + 20]
            for d in batch:
                exp.export(HepMessage(d.src, d.sport, d.dst, d.dport, d.ts_ns, 1, d.payload))
            for _ in batch:
                h = await asyncio.wait_for(queue.get(), 5)
                await mon.feed(Datagram(h.ts_ns, h.src, h.sport, h.dst, h.dport, h.payload))
    finally:
        exp.close()
        transport.close()
    assert [e.call_id for e in seen if isinstance(e, QualityAlert)] == ["hep@x"]
