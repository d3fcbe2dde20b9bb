"""The demo's media step: a conversation over SRTP between the two phones, and what it cost.

Each phone sends its side of a talk-spurt conversation (``media/talkspurt.py``) through the
real send path (``ua/media.py``: Opus or G.711, the negotiated ptime, FEC, DTX or VAD + CN,
RTCP) and a seeded loss/jitter shim. Packets the shim "loses" still leave the sender (to a
sink port nobody reads), because on a radio link the sender pays for them too.

The bytes are measured on the wire: dumpcap captures the phones' RTP/RTCP and SIP ports on
lo, ``usage/wire.py`` classifies every packet, and each direction is compared with the
planner given the same settings and the talk model's real silences. Without dumpcap (or
with ``capture=False``) the sender's counters plus 28 B of IPv4/UDP per packet stand in, and
the report says so.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from callward.errors import CallwardError
from callward.media.talkspurt import conversation, speech_signal
from callward.rtp.srtp import SrtpKeying, SrtpProfile
from callward.ua.impairment import Impairment, ImpairmentShim
from callward.ua.loopback_capture import LoopbackCapture, capture_available
from callward.ua.sdp_offer import SRTP_SUITE, voice_settings
from callward.ua.talk import silence_gaps
from callward.usage.mos import MosQuery, estimate
from callward.usage.planner import MediaChoice, plan_call
from callward.usage.wire import WireUsage, measure_capture

if TYPE_CHECKING:
    from callward.cli.demo import Demo

__all__ = ["exchange_media"]

IP_UDP_OVERHEAD = 28  # IPv4 header (20) + UDP header (8) per packet, not seen by a socket
QUIET_ROOM = -65.0  # dBov background noise between words: a quiet room, not digital zero


def _keying(crypto: Any) -> SrtpKeying:
    return SrtpKeying(SrtpProfile(crypto.suite), crypto.master_key, crypto.master_salt)


async def exchange_media(demo: Demo) -> None:
    """Both phones talk for ``demo.seconds`` as SRTP, keyed from the a=crypto lines of the
    offer and answer (RFC 4568 §6.1: each side's line keys what that side sends)."""
    if "bob" not in demo.calls:
        return
    streams = {name: demo.calls[name].negotiated() for name in ("alice", "bob")}
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        await _talk(demo, streams, sink.getsockname())
    finally:
        sink.close()


async def _talk(demo: Demo, streams: dict[str, Any], sink: tuple[str, int]) -> None:
    prefs = demo.prefs()
    for name, s in streams.items():
        if s is None or s.local_crypto is None or s.remote_crypto is None:
            demo.fail(f"{name}: offer/answer agreed on no SDES-SRTP audio stream")
            return
        rtp = demo.rtp[name]
        rtp.secure(_keying(s.local_crypto), _keying(s.remote_crypto))
        impairment = Impairment(demo.loss_pct, demo.jitter_ms)
        rtp.impairment = ImpairmentShim.seeded(impairment, demo.seed, name)
        rtp.loss_sink = sink
        settings = voice_settings(s, prefs)
        if demo.noise_suppression:
            from dataclasses import replace

            settings = replace(settings, noise_suppression=True)
        rtp.start((s.remote_address, s.remote_port), settings, rtcp_mux=s.rtcp_mux,
                  remote_rtcp=(s.remote_address, s.remote_rtcp_port))  # fmt: skip
    a = streams["alice"]
    sent_with = demo.rtp["alice"].settings
    assert a is not None and sent_with is not None
    settings = sent_with
    masks = dict(zip(("alice", "bob"), conversation(demo.seconds, demo.seed), strict=True))
    pcm = {n: speech_signal(m, settings.sample_rate, seed=demo.seed + i, noise_dbov=QUIET_ROOM)
           for i, (n, m) in enumerate(masks.items())}  # fmt: skip
    demo.media = {
        "security": str(a.security),
        "suite": a.local_crypto.suite if a.local_crypto else "",
        "codec": f"{a.codec.name}/{a.codec.clock_rate}",
        "ptime_ms": settings.ptime_ms,
        "bitrate": settings.bitrate if settings.codec == "opus" else 64000,
        "fec": settings.fec if settings.codec == "opus" else False,
        "dtx": settings.dtx,
        "rtcp_mux": a.rtcp_mux,
        "voice_activity": {n: round(float(m.mean()), 3) for n, m in masks.items()},
    }
    label = f"SRTP {a.codec.name} {settings.ptime_ms} ms via relay ⇄ {demo.seconds:g} s"
    demo.note("alice", "bob", label)
    ports = [p.local_addr[1] for p in demo.phones.values()] + [demo.edge_addr[1]]
    for r in demo.rtp.values():
        ports += [r.local_addr[1], r.local_addr[1] + 1]
    ports.append(sink[1])
    wire: WireUsage | None = None
    with tempfile.TemporaryDirectory(prefix="callward-cap-") as tmp:
        path = Path(tmp) / "media.pcapng"
        capture = LoopbackCapture(path, udp=ports, max_seconds=int(demo.seconds) + 20)
        use_capture = demo.capture and capture_available()
        try:
            if use_capture:
                await capture.__aenter__()
        except CallwardError:
            use_capture = False
        try:
            await asyncio.gather(*(demo.rtp[n].send_voice(pcm[n]) for n in ("alice", "bob")))
            await asyncio.sleep(demo.jitter_ms / 1000 + 0.1)  # delayed packets in flight
            for r in demo.rtp.values():
                await r.stop()  # RTCP BYE
        finally:
            if use_capture:
                await capture.__aexit__(None, None, None)
        if use_capture:
            wire = measure_capture(path)
            if demo.keep_capture is not None:
                shutil.copyfile(path, demo.keep_capture)
    for src, dst in (("alice", "bob"), ("bob", "alice")):
        demo.legs.append(_leg_report(demo, src, dst))
    _usage(demo, masks, wire)
    if any(leg["received"] == 0 for leg in demo.legs):
        demo.fail("no SRTP packet was accepted on one leg")


def _leg_report(demo: Demo, src: str, dst: str) -> dict[str, Any]:
    """One direction as its receiver measured it (RFC 3550 A.3 loss, A.8 jitter), the one-way
    transit from the sender's due time to arrival (same clock: same process), the adaptive
    jitter buffer's late loss and delay, and the E-model MOS at the measured loss (plus late
    loss) and a mouth-to-ear delay of packetization plus the buffer's playout delay."""
    tx, rx = demo.rtp[src], demo.rtp[dst]
    settings = tx.settings
    assert settings is not None
    stats = rx.stats.get(tx.ssrc)
    snap = stats.snapshot() if stats is not None else None
    transit = [
        (t - tx.sent_at[seq]) * 1000
        for ssrc, seq, t in rx.arrivals
        if ssrc == tx.ssrc and seq in tx.sent_at
    ]
    expected = snap.expected if snap else 0
    lost = max(0, snap.cumulative_lost) if snap else 0
    loss_pct = 100.0 * lost / expected if expected else 0.0
    mean_transit = sum(transit) / len(transit) if transit else 0.0
    p95 = sorted(transit)[int(0.95 * (len(transit) - 1))] if transit else 0.0
    playout = rx.playout(tx.ssrc)
    late_pct = 100.0 * playout.late_ratio
    delay = settings.ptime_ms + min(transit, default=0.0) + playout.mean_delay_ms
    est = estimate(MosQuery(settings.codec, settings.bitrate, settings.ptime_ms, settings.fec,
                            min(100.0, loss_pct + late_pct), min(delay, 10_000.0)))  # fmt: skip
    rc = rx.receiver.counters if rx.receiver else None
    return {
        "from": src,
        "to": dst,
        "sent": tx.counters.packets_sent,
        "dropped_by_shim": tx.counters.dropped,
        "received": snap.received if snap else 0,
        "expected": expected,
        "lost": lost,
        "loss_pct": round(loss_pct, 2),
        "late_pct": round(late_pct, 2),
        "jitter_ms": round(snap.jitter_ms, 2) if snap else 0.0,
        "transit_mean_ms": round(mean_transit, 2),
        "transit_p95_ms": round(p95, 2),
        "transit_max_ms": round(max(transit, default=0.0), 2),
        "buffer_delay_ms": round(playout.mean_delay_ms, 1),
        "mouth_to_ear_ms": round(delay, 1),
        "mos": round(est.mos, 2) if est else None,
        "mos_model": est.model if est else "none installed for this codec",
        "decoded": rc.decoded if rc else 0,
        "fec_recovered": rc.fec_recovered if rc else 0,
        "rtcp_sent": tx.counters.rtcp_sent,
        "rtcp_received": rx.counters.rtcp_received,
        "srtp_rejected": rx.counters.invalid,
        "_ssrc": tx.ssrc,
    }


def _usage(demo: Demo, masks: dict[str, np.ndarray], wire: WireUsage | None) -> None:
    """Bytes per minute each phone put on the wire (RTP, RTCP, SIP), against the planner
    given the same settings and the talk model's silences."""
    seconds = demo.seconds
    per_phone: list[dict[str, Any]] = []
    for name in ("alice", "bob"):
        rtp = demo.rtp[name]
        s = rtp.settings
        assert s is not None
        mask = masks[name]
        choice = MediaChoice(
            codec=s.codec, ptime_ms=s.ptime_ms, bitrate=s.bitrate if s.codec == "opus" else None,
            srtp=SRTP_SUITE, voice_activity=max(0.001, float(mask.mean())) if s.dtx else 1.0,
            dtx=s.dtx, fec=s.fec, cbr=s.cbr, rtcp_mux=rtp.rtcp_mux,
        )  # fmt: skip
        plan = plan_call(choice, duration_s=seconds, silence_gaps_s=silence_gaps(mask),
                         talk_mask=mask.tolist())  # fmt: skip
        c = rtp.counters
        addr = f"{rtp.local_addr[0]}:{rtp.local_addr[1]}"
        rtcp_addr = f"{rtp.local_addr[0]}:{rtp.local_addr[1] + (0 if rtp.rtcp_mux else 1)}"
        if wire is not None:
            media = [f for f in wire.of("rtp") if f.src == addr]
            rtcp = [f for f in wire.of("rtcp") if f.src == rtcp_addr]
            sip_port = demo.phones[name].local_addr[1]
            sip = [f for f in wire.of("sip") if f.src.endswith(f":{sip_port}")]
            media_bytes, packets = sum(f.ip_bytes for f in media), sum(f.packets for f in media)
            rtcp_bytes, rtcp_packets = sum(f.ip_bytes for f in rtcp), sum(f.packets for f in rtcp)
            sip_bytes = sum(f.ip_bytes for f in sip)
        else:
            media_bytes = c.bytes_sent + IP_UDP_OVERHEAD * c.packets_sent
            packets = c.packets_sent
            rtcp_bytes = c.rtcp_bytes_sent + IP_UDP_OVERHEAD * c.rtcp_sent
            rtcp_packets, sip_bytes = c.rtcp_sent, 0
        per_min = 60.0 / seconds
        per_phone.append({
            "phone": name,
            "packets": packets,
            "planned_packets": round(plan.media_packets, 1),
            "wire_bytes": media_bytes,
            "bytes_per_minute": round(media_bytes * per_min),
            "planned_bytes_per_minute": round(plan.media_bytes_per_minute),
            "ratio": round(media_bytes * per_min / plan.media_bytes_per_minute, 4),
            "rtcp_packets": rtcp_packets,
            "rtcp_bytes_per_minute": round(rtcp_bytes * per_min),
            "planned_rtcp_bytes_per_minute": round(plan.rtcp_bytes_per_minute),
            "sip_bytes": sip_bytes,
            "total_bytes_per_minute": round((media_bytes + rtcp_bytes) * per_min),
            "planned_total_bytes_per_minute": round(plan.bytes_per_minute),
        })  # fmt: skip
    actual = sum(p["bytes_per_minute"] for p in per_phone) / 2
    planned = sum(p["planned_bytes_per_minute"] for p in per_phone) / 2
    both = sum(p["total_bytes_per_minute"] for p in per_phone)
    demo.usage = {
        "bytes_per_minute": {
            "actual": round(actual),
            "planned": round(planned),
            "planned_with_rtcp": round(
                sum(p["planned_total_bytes_per_minute"] for p in per_phone) / 2
            ),
            "ratio": round(actual / planned, 4) if planned else None,
        },
        "both_directions_with_rtcp_bytes_per_minute": both,
        "per_phone": per_phone,
        "method": "dumpcap on lo: IP datagram bytes of each phone's RTP, RTCP and SIP"
        if wire is not None
        else "sender counters: UDP payload bytes + 28 B IPv4/UDP header per packet",
    }
