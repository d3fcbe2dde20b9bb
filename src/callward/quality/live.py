"""Live monitoring: the analyze engine fed datagram by datagram (HEPv3, a tap, the relay).

Why a separate front: live traffic cannot be kept whole. Calls are sampled per Call-ID at the
tenant's rate (``dpi.SamplingPolicy``); RTP of unsampled calls is dropped on arrival and RTP of
sampled calls is cut to its header before it is looked at, so no voice payload is ever held.
When a call ends (BYE or final failure) its streams are analysed exactly like a capture and
``QualityAlert`` events are published for legs under the tenant's MOS thresholds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from callward.config import QualityConfig
from callward.errors import CallwardError
from callward.events import EventBus, QualityAlert
from callward.quality import emodel_wb
from callward.quality.alerts import evaluate, thresholds_for
from callward.quality.analysis import stream_reports
from callward.quality.capture import Datagram
from callward.quality.correlate import parse_sdp
from callward.quality.dpi import SamplingPolicy
from callward.quality.fastpath import RtpCollector, looks_like_rtp, looks_like_sip
from callward.quality.playout import codec_for, stream_mos
from callward.sip import parse_message
from callward.sip.message import Request, Response

__all__ = ["LiveMonitor"]


@dataclass(slots=True)
class _LiveCall:
    call_id: str
    tenant: str
    collector: RtpCollector = field(default_factory=RtpCollector)
    media: set[tuple[str, int]] = field(default_factory=set)
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    order: int = 0


class LiveMonitor:
    """Per-call sampling, header-only RTP columns, and alerts when a call ends."""

    def __init__(
        self,
        cfg: QualityConfig,
        bus: EventBus,
        node: str,
        clock: Callable[[], float],
        tenant_of: Callable[[str], str] = lambda _cid: "default",
        max_calls: int = 10_000,
    ) -> None:
        self.cfg = cfg
        self.policy = SamplingPolicy(cfg)
        self.bus = bus
        self.node = node
        self.clock = clock
        self.tenant_of = tenant_of
        self.max_calls = max_calls
        self.calls: dict[str, _LiveCall] = {}
        self.by_media: dict[tuple[str, int], str] = {}
        self.skipped_calls = 0
        self.dropped_rtp = 0
        self.seq = 0

    def _sip(self, d: Datagram) -> str | None:
        """Track the dialog; returns the Call-ID when it just ended."""
        try:
            msg = parse_message(d.payload, strict=False)
        except CallwardError:
            return None
        cid = msg.headers.get("Call-ID") or ""
        if isinstance(msg, Request) and msg.method == "INVITE" and cid not in self.calls:
            tenant = self.tenant_of(cid)
            if len(self.calls) >= self.max_calls or not self.policy.should_inspect(cid, tenant):
                self.skipped_calls += 1
                return None
            self.calls[cid] = _LiveCall(cid, tenant)
        call = self.calls.get(cid)
        if call is None:
            return None
        if msg.body:
            m = parse_sdp(msg.body)
            if m is not None:
                call.media.add((m.ip, m.port))
                call.rtpmap.update(m.rtpmap)
                self.by_media[(m.ip, m.port)] = cid
        if isinstance(msg, Request) and msg.method == "BYE":
            return cid
        if (
            isinstance(msg, Response)
            and msg.status >= 300
            and "INVITE" in (msg.headers.get("CSeq") or "")
        ):
            return cid
        return None

    async def feed(self, d: Datagram) -> list[QualityAlert]:
        """One datagram; returns (and publishes) the alerts of a call that just ended."""
        p = d.payload
        if looks_like_sip(p):
            ended = self._sip(d)
            return await self.finish(ended) if ended else []
        if not looks_like_rtp(p):
            return []
        cid = self.by_media.get((d.dst, d.dport)) or self.by_media.get((d.src, d.sport))
        call = self.calls.get(cid) if cid else None
        if call is None:
            self.dropped_rtp += 1  # not a sampled call: never inspected further
            return []
        head = self.policy.header_only(p)  # header-only DPI: the payload is gone from here on
        call.order += 1
        call.collector.add_datagram(
            Datagram(d.ts_ns, d.src, d.sport, d.dst, d.dport, head), call.order
        )
        return []

    async def finish(self, call_id: str) -> list[QualityAlert]:
        """Analyse an ended call, publish its alerts, forget it."""
        call = self.calls.pop(call_id, None)
        if call is None:
            return []
        for addr in call.media:
            self.by_media.pop(addr, None)
        alerts: list[QualityAlert] = []
        th = thresholds_for(self.cfg, call.tenant)
        for leg, s in enumerate(stream_reports(call.collector, lambda _f: call.rtpmap)):
            key = codec_for(-1, s.codec)
            if key is None:
                continue
            s.mos = stream_mos(key, s.arrival_s, s.rtp_ts, s.seq_ext, s.stats.expected,
                               s.stats.lost, s.clock_rate, self.cfg.base_delay_ms,
                               bitrate_bps=s.bitrate_bps)  # fmt: skip
            self.seq += 1
            a = evaluate(s.mos, th, call_id=call.call_id, leg="ab"[leg % 2], tenant=call.tenant,
                         ts=self.clock(), node=self.node, seq=self.seq,
                         codec_ie=emodel_wb.codec_ie(key, s.bitrate_bps))  # fmt: skip
            if a is not None:
                alerts.append(a)
                await self.bus.publish(a)
        return alerts
