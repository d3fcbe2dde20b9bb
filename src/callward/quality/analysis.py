"""Whole-capture analysis: read → RTP columns + SIP → per-stream stats, MOS, calls.

The pipeline streams the file in chunks (``capture.iter_blocks``), keeps only RTP header
columns and SIP datagrams, then computes each stream's statistics (``streams``), its
effective-loss MOS per playout model (``playout`` + ``emodel``) and the call classification
(``correlate``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from callward.quality.capture import Datagram, iter_blocks
from callward.quality.fastpath import RtpCollector
from callward.quality.streams import (
    BurstMetrics,
    StreamStats,
    burst_metrics,
    clock_rate_for,
    payload_name,
    stream_stats,
    unwrap_timestamps,
)

__all__ = ["StreamReport", "collect", "stream_reports"]

RtpMapLookup = Callable[[tuple[str, int, str, int]], dict[int, tuple[str, int]] | None]


@dataclass(slots=True)
class StreamReport:
    """Everything we know about one RTP stream."""

    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    payload_type: int
    codec: str
    clock_rate: int
    stats: StreamStats
    burst: BurstMetrics
    start_ms: float
    end_ms: float
    first_ts_ns: int
    last_ts_ns: int
    arrival_s: np.ndarray = field(repr=False)
    rtp_ts: np.ndarray = field(repr=False)
    seq_ext: np.ndarray = field(repr=False)
    mos: dict[str, dict[str, float] | None] = field(default_factory=dict)
    alert: dict[str, object] | None = None
    rtcp: dict[str, object] | None = None  # the receivers' view (RTCP report blocks)
    bitrate_bps: float | None = None  # RTP payload bit rate (wideband MOS depends on it)

    @property
    def flow(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)


def collect(path: str | Path, progress: Callable[[int], None] | None = None) -> RtpCollector:
    """Stream a capture file into an RtpCollector (bounded memory: chunks + header columns)."""
    col = RtpCollector()
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        magic = b""  # iter_blocks reports the error with the file name
    if magic == b"HEP3":  # back-to-back HEPv3 packets (heplify/Kamailio file output)
        from callward.quality.hep import iter_hep_file  # its module also holds asyncio adapters

        for i, h in enumerate(iter_hep_file(path)):
            col.add_datagram(Datagram(h.ts_ns, h.src, h.sport, h.dst, h.dport, h.payload), i)
            col.frames += 1
        return col
    for blk in iter_blocks(path):
        col.add_block(blk)
        if progress is not None:
            progress(len(blk.offsets))
    return col


def _unwrap_seq(seq: np.ndarray) -> np.ndarray:
    s = seq.astype(np.int64)
    if len(s) < 2:
        return s
    d = np.diff(s)
    d = ((d + 32768) & 0xFFFF) - 32768
    out = np.empty_like(s)
    out[0] = s[0]
    np.cumsum(d, out=out[1:])
    out[1:] += s[0]
    return out


def stream_reports(col: RtpCollector, rtpmap_for: RtpMapLookup | None = None) -> list[StreamReport]:
    """Per-stream statistics for everything the collector saw, in first-seen order."""
    cols = col.columns()
    if len(cols.ts_ns) == 0:
        return []
    t0 = col.first_ts_ns or int(cols.ts_ns[0])
    rel_ns = cols.ts_ns - t0
    t_ms = (rel_ns // 1_000_000).astype(np.float64) + (rel_ns % 1_000_000) / 1e6
    # Timestamps are unwrapped per UDP flow (the RTP dissector's conversation), not per SSRC.
    keys = col.keys
    flow_ids: dict[tuple[str, int, str, int], int] = {}
    stream_flow = np.array(
        [flow_ids.setdefault(k[:4], len(flow_ids)) for k in keys], dtype=np.int64
    )
    pkt_flow = stream_flow[cols.stream]
    if len(flow_ids) < 65536:
        pkt_flow = pkt_flow.astype(np.uint16)
    ets = np.empty(len(t_ms), dtype=np.int64)
    order_f = np.argsort(pkt_flow, kind="stable")
    fsorted = pkt_flow[order_f]
    fb = np.flatnonzero(np.diff(fsorted)) + 1
    for seg in np.split(order_f, fb):
        ets[seg] = unwrap_timestamps(cols.rtp_ts[seg])
    # Small integer ids sort by radix in O(n) when narrowed to 16 bits.
    sid_keys = cols.stream.astype(np.uint16) if len(keys) < 65536 else cols.stream
    order = np.argsort(sid_keys, kind="stable")
    ssorted = cols.stream[order]
    bounds = np.flatnonzero(np.diff(ssorted)) + 1
    # Report streams in order of their first packet (as a reader of the capture meets them).
    segs = sorted(np.split(order, bounds), key=lambda s: int(s[0]))
    out: list[StreamReport] = []
    for seg in segs:
        sid = int(cols.stream[seg[0]])
        src, sport, dst, dport, ssrc = keys[sid]
        rmap = rtpmap_for((src, sport, dst, dport)) if rtpmap_for else None
        pts = cols.pt[seg].astype(np.int64)
        uniq = pts[:1] if bool((pts == pts[0]).all()) else np.unique(pts)
        rate_of = {int(p): clock_rate_for(int(p), rmap) for p in uniq}
        if len(uniq) == 1:
            clock = np.full(len(seg), rate_of[int(uniq[0])], dtype=np.int64)
        else:
            lut = np.zeros(128, dtype=np.int64)
            for p, r in rate_of.items():
                lut[p] = r
            clock = lut[pts]
        seq = cols.seq[seg].astype(np.int64)
        st = stream_stats(t_ms[seg], ets[seg], seq, pts, cols.marker[seg], clock)
        seq_ext = _unwrap_seq(seq)
        span_s = (float(t_ms[seg[-1]]) - float(t_ms[seg[0]])) / 1000.0
        bitrate = None
        if len(seg) > 1 and span_s > 0:
            # The sender's rate: mean payload (UDP payload minus the 12-byte fixed RTP header)
            # times the packet rate the sequence numbers show (lost packets were sent too).
            mean_payload = float(cols.size[seg].mean()) - 12.0
            sent = float(seq_ext.max() - seq_ext.min())
            bitrate = max(mean_payload, 0.0) * 8 * sent / span_s
        pt0 = int(pts[0])  # reported like tshark: the first packet's payload type
        # Codec and clock for MOS come from the dominant payload type (not CN/DTMF bursts).
        main_pt = pt0 if len(uniq) == 1 else int(np.bincount(pts, minlength=128).argmax())
        out.append(
            StreamReport(
                src=src, sport=sport, dst=dst, dport=dport, ssrc=ssrc, payload_type=pt0,
                codec=payload_name(main_pt, rmap), clock_rate=rate_of[main_pt], stats=st,
                burst=burst_metrics(seq_ext), start_ms=float(t_ms[seg[0]]),
                end_ms=float(t_ms[seg[-1]]), first_ts_ns=int(cols.ts_ns[seg[0]]),
                last_ts_ns=int(cols.ts_ns[seg[-1]]),
                arrival_s=rel_ns[seg] / 1e9, rtp_ts=ets[seg], seq_ext=seq_ext,
                bitrate_bps=bitrate,
            )
        )  # fmt: skip
    return out
