"""What the receivers said: RTCP SR/RR report blocks and XR VoIP metrics, per reported SSRC.

Why beside our own numbers: RTCP is the far end's view of the same stream (RFC 3550 §6.4).
A receiver that reports 100 % loss of a stream we see leaving is direct evidence of one-way
audio downstream of the capture point; XR VoIP metrics (RFC 3611 §4.7) carry the endpoint's
own R-factor and MOS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callward.errors import MediaError
from callward.quality.capture import Datagram
from callward.rtp.rtcp import ReceiverReport, SenderReport, VoipMetrics, XrPacket, parse_rtcp

__all__ = ["RtcpView", "summarise_rtcp"]


@dataclass(slots=True)
class RtcpView:
    """Aggregated report blocks about one SSRC."""

    reports: int = 0
    fraction_lost: float = 0.0  # last report, as a fraction (RFC 3550 §6.4.1: /256)
    max_fraction_lost: float = 0.0
    cumulative_lost: int = 0
    max_jitter_ts: int = 0  # RTP timestamp units
    xr: dict[str, float] = field(default_factory=dict)

    def as_dict(self, clock_rate: int) -> dict[str, object]:
        d: dict[str, object] = {
            "reports": self.reports,
            "fraction_lost": round(self.fraction_lost, 4),
            "max_fraction_lost": round(self.max_fraction_lost, 4),
            "cumulative_lost": self.cumulative_lost,
            "max_jitter_ms": round(self.max_jitter_ts * 1000 / clock_rate, 3)
            if clock_rate
            else None,
        }
        if self.xr:
            d["xr"] = self.xr
        return d


def summarise_rtcp(packets: list[Datagram]) -> dict[int, RtcpView]:
    """Report blocks of every parsable RTCP compound packet, keyed by the SSRC reported on."""
    views: dict[int, RtcpView] = {}
    for d in packets:
        try:
            parsed = parse_rtcp(d.payload)
        except MediaError:
            continue
        for pkt in parsed:
            if isinstance(pkt, SenderReport | ReceiverReport):
                for blk in pkt.reports:
                    v = views.setdefault(blk.ssrc, RtcpView())
                    v.reports += 1
                    v.fraction_lost = blk.fraction_lost / 256
                    v.max_fraction_lost = max(v.max_fraction_lost, v.fraction_lost)
                    v.cumulative_lost = blk.cumulative_lost
                    v.max_jitter_ts = max(v.max_jitter_ts, blk.jitter)
            elif isinstance(pkt, XrPacket):
                for b in pkt.blocks:
                    if not isinstance(b, VoipMetrics):
                        continue
                    v = views.setdefault(b.ssrc, RtcpView())
                    # RFC 3611 §4.7.5/§4.7.6: 127 = unavailable; MOS is value/10.
                    if b.mos_lq != 127:
                        v.xr["mos_lq"] = b.mos_lq / 10
                    if b.mos_cq != 127:
                        v.xr["mos_cq"] = b.mos_cq / 10
                    if b.r_factor != 127:
                        v.xr["r_factor"] = float(b.r_factor)
    return views
