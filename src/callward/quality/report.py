"""`analyze` as a library call: capture file → streams (with MOS per playout model) + calls.

Privacy: the returned report holds addresses because it is the operator's own analysis of
their capture; nothing here logs, and ``redacted_summary`` is what may be logged (counts and
MOS only, no IP or URI).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callward.quality import emodel_wb
from callward.quality.alerts import Thresholds, evaluate
from callward.quality.analysis import StreamReport, collect, stream_reports
from callward.quality.correlate import Call, build_calls, classify
from callward.quality.playout import codec_for, stream_mos

__all__ = ["AnalysisReport", "analyze_capture", "redacted_summary"]


@dataclass(slots=True)
class AnalysisReport:
    streams: list[StreamReport]
    calls: list[Call]
    frames: int

    @property
    def problems(self) -> int:
        """Classified call problems plus streams whose MOS is under the alert thresholds."""
        return sum(len(c.problems) for c in self.calls) + sum(1 for s in self.streams if s.alert)

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "streams": [stream_dict(s) for s in self.streams],
            "calls": [c.as_dict() for c in self.calls],
        }


def stream_dict(s: StreamReport) -> dict[str, Any]:
    st = s.stats
    b = s.burst
    return {
        "ssrc": f"{s.ssrc:#010x}",
        "src": f"{s.src}:{s.sport}",
        "dst": f"{s.dst}:{s.dport}",
        "payload_type": s.payload_type,
        "codec": s.codec,
        "clock_rate": s.clock_rate,
        "packets": st.packets,
        "expected": st.expected,
        "lost": st.lost,
        "loss_pct": round(st.loss_pct, 3),
        "max_delta_ms": round(st.max_delta, 3),
        "mean_delta_ms": round(st.mean_delta, 3),
        "max_jitter_ms": round(st.max_jitter, 3),
        "mean_jitter_ms": round(st.mean_jitter, 3),
        "sequence_errors": st.seq_errors,
        "wrong_timestamps": st.wrong_timestamps,
        "markers": st.markers,
        "payload_changes": st.pt_changes,
        "problem": st.problem,
        "burst": {
            "burst_density": round(b.burst_density, 4),
            "gap_density": round(b.gap_density, 4),
            "burst_duration": b.burst_duration,
            "gap_duration": b.gap_duration,
            "burst_r": round(b.burst_r, 3),
        },
        "start_s": round(s.start_ms / 1000, 6),
        "end_s": round(s.end_ms / 1000, 6),
        "mos": s.mos,
        "alert": s.alert,
        "rtcp": s.rtcp,
        "bitrate_bps": None if s.bitrate_bps is None else round(s.bitrate_bps),
    }


def analyze_capture(
    path: str | Path,
    *,
    base_delay_ms: float = 40.0,
    rtp_timeout_s: float = 10.0,
    pdd_warn_s: float = 5.0,
    mos: bool = True,
    progress: Callable[[int], None] | None = None,
    thresholds: Thresholds | None = None,
) -> AnalysisReport:
    """Analyse a pcap/pcapng capture; CaptureError if it cannot be read.

    With ``thresholds`` each stream's MOS (adaptive playout, else network) is judged and the
    alert (level and dominant cause, as a QualityAlert would carry) is attached to it.
    """
    col = collect(path, progress)
    calls = build_calls(col.sip)
    by_addr: dict[tuple[str, int], dict[int, tuple[str, int]]] = {}
    for c in calls:
        for d in (c.offer, c.answer):
            if d:
                by_addr.setdefault((d.ip, d.port), {}).update(d.rtpmap)

    def rtpmap_for(flow: tuple[str, int, str, int]) -> dict[int, tuple[str, int]] | None:
        # The receiving side's SDP describes what it gets; fall back to the sender's.
        return by_addr.get((flow[2], flow[3])) or by_addr.get((flow[0], flow[1]))

    streams = stream_reports(col, rtpmap_for if by_addr else None)
    if col.rtcp:
        from callward.quality.rtcp_view import summarise_rtcp  # with callward.rtp.rtcp

        views = summarise_rtcp(col.rtcp)
    else:
        views = {}
    for s in streams:
        v = views.get(s.ssrc)
        if v is not None:
            s.rtcp = v.as_dict(s.clock_rate)
    if mos:
        for s in streams:
            key = codec_for(-1, s.codec)
            s.mos = stream_mos(
                key, s.arrival_s, s.rtp_ts, s.seq_ext, s.stats.expected, s.stats.lost,
                s.clock_rate, base_delay_ms, bitrate_bps=s.bitrate_bps,
            )  # fmt: skip
            if thresholds is not None and key is not None:
                a = evaluate(s.mos, thresholds, call_id="", leg="", tenant="", ts=0.0, node="",
                             seq=0, codec_ie=emodel_wb.codec_ie(key, s.bitrate_bps))  # fmt: skip
                if a is not None:
                    s.alert = {"level": a.level, "cause": a.cause, "mos": a.mos}
    for c in calls:
        classify(c, streams, rtp_timeout_s, pdd_warn_s)
    return AnalysisReport(streams, calls, col.frames)


def redacted_summary(rep: AnalysisReport) -> dict[str, Any]:
    """What may be logged about an analysis: counts and scores, no addresses or URIs."""
    worst: list[float] = []
    for s in rep.streams:
        net = s.mos.get("network")
        if net is not None:
            worst.append(net["mos"])
    return {
        "frames": rep.frames,
        "streams": len(rep.streams),
        "calls": len(rep.calls),
        "problems": sorted({p.kind for c in rep.calls for p in c.problems}),
        "worst_mos": min(worst) if worst else None,
    }
