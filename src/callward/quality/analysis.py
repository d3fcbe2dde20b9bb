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
    for blk in iter_blocks(path, reuse=True):  # each block is used up before the next
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


def _unwrap_segments(x: np.ndarray, starts: np.ndarray, bits: int) -> np.ndarray:
    """``_unwrap_seq`` (16 bits) / ``unwrap_timestamps`` (32 bits) of every segment
    ``x[starts[k]:starts[k+1]]`` at once: each step taken as a signed ``bits``-bit difference,
    accumulated from the segment's first value."""
    v = x.astype(np.int64)
    if len(v) == 0:
        return v
    half = 1 << (bits - 1)
    d = ((np.diff(v) + half) & ((1 << bits) - 1)) - half
    acc = np.empty_like(v)
    acc[0] = 0
    np.cumsum(d, out=acc[1:])
    counts = np.diff(np.append(starts, len(v)))
    acc += np.repeat(v[starts] - acc[starts], counts)
    return acc


def stream_reports(col: RtpCollector, rtpmap_for: RtpMapLookup | None = None) -> list[StreamReport]:
    """Per-stream statistics for everything the collector saw, in first-seen order.

    Every column is put in stream order once (a stable sort keeps capture order inside a
    stream), so each stream's arrays are slices, not per-stream gathers.
    """
    cols = col.columns()
    n = len(cols.ts_ns)
    if n == 0:
        return []
    t0 = col.first_ts_ns or int(cols.ts_ns[0])
    keys = col.keys
    # Small integer ids sort by radix in O(n) when narrowed to 16 bits.
    sid_keys = cols.stream.astype(np.uint16) if len(keys) < 65536 else cols.stream
    order = np.argsort(sid_keys, kind="stable")
    ssorted = cols.stream[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(ssorted)) + 1))
    ends = np.append(starts[1:], n)
    rel_ns = cols.ts_ns[order]
    rel_ns -= t0
    t_ms = (rel_ns // 1_000_000).astype(np.float64)
    t_ms += (rel_ns % 1_000_000) / 1e6
    first_ns = (rel_ns[starts] + t0).tolist()
    last_ns = (rel_ns[ends - 1] + t0).tolist()
    arrival_s = rel_ns / 1e9
    del rel_ns  # peak memory: only what the reports keep stays (≈ 40 B per packet)
    # Timestamps are unwrapped per UDP flow (the RTP dissector's conversation), not per SSRC.
    flow_ids: dict[tuple[str, int, str, int], int] = {}
    stream_flow = np.array(
        [flow_ids.setdefault(k[:4], len(flow_ids)) for k in keys], dtype=np.int64
    )
    if len(flow_ids) == len(keys):  # one SSRC per flow: a flow's packets are its stream's
        ets = _unwrap_segments(cols.rtp_ts[order], starts, 32)
    else:
        pkt_flow = stream_flow[cols.stream]
        if len(flow_ids) < 65536:
            pkt_flow = pkt_flow.astype(np.uint16)
        ets_c = np.empty(n, dtype=np.int64)
        order_f = np.argsort(pkt_flow, kind="stable")
        fb = np.flatnonzero(np.diff(pkt_flow[order_f])) + 1
        for seg in np.split(order_f, fb):
            ets_c[seg] = unwrap_timestamps(cols.rtp_ts[seg])
        ets = ets_c[order]
    seq_all = cols.seq[order]
    seq_ext_all = _unwrap_segments(seq_all, starts, 16)
    pt_all = cols.pt[order]
    marker_all = cols.marker[order]
    size_all = cols.size[order]
    out: list[StreamReport] = []
    # Report streams in order of their first packet (as a reader of the capture meets them).
    for k in np.argsort(order[starts], kind="stable").tolist():
        a, b = int(starts[k]), int(ends[k])
        sid = int(ssorted[a])
        src, sport, dst, dport, ssrc = keys[sid]
        rmap = rtpmap_for((src, sport, dst, dport)) if rtpmap_for else None
        pts = pt_all[a:b].astype(np.int64)
        uniq = pts[:1] if bool((pts == pts[0]).all()) else np.unique(pts)
        rate_of = {int(p): clock_rate_for(int(p), rmap) for p in uniq}
        if len(uniq) == 1:
            clock = np.full(b - a, rate_of[int(uniq[0])], dtype=np.int64)
        else:
            lut = np.zeros(128, dtype=np.int64)
            for p, r in rate_of.items():
                lut[p] = r
            clock = lut[pts]
        seq = seq_all[a:b].astype(np.int64)
        st = stream_stats(t_ms[a:b], ets[a:b], seq, pts, marker_all[a:b], clock)
        seq_ext = seq_ext_all[a:b]
        span_s = (float(t_ms[b - 1]) - float(t_ms[a])) / 1000.0
        bitrate = None
        if b - a > 1 and span_s > 0:
            # The sender's rate: mean payload (UDP payload minus the 12-byte fixed RTP header)
            # times the packet rate the sequence numbers show (lost packets were sent too).
            mean_payload = float(size_all[a:b].mean()) - 12.0
            sent = float(seq_ext.max() - seq_ext.min())
            bitrate = max(mean_payload, 0.0) * 8 * sent / span_s
        pt0 = int(pts[0])  # reported like tshark: the first packet's payload type
        # Codec and clock for MOS come from the dominant payload type (not CN/DTMF bursts).
        main_pt = pt0 if len(uniq) == 1 else int(np.bincount(pts, minlength=128).argmax())
        out.append(
            StreamReport(
                src=src, sport=sport, dst=dst, dport=dport, ssrc=ssrc, payload_type=pt0,
                codec=payload_name(main_pt, rmap), clock_rate=rate_of[main_pt], stats=st,
                burst=burst_metrics(seq_ext), start_ms=float(t_ms[a]),
                end_ms=float(t_ms[b - 1]), first_ts_ns=first_ns[k],
                last_ts_ns=last_ns[k], arrival_s=arrival_s[a:b], rtp_ts=ets[a:b],
                seq_ext=seq_ext, bitrate_bps=bitrate,
            )
        )  # fmt: skip
    return out
