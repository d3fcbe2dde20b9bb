"""Effective loss: replay a stream's real arrival times through receiver playout models.

Why: the network-only E-model treats every packet that arrived as played. A real receiver
discards packets that arrive after their playout time, and the buffer that avoids those
discards adds delay. For each model we feed network loss + late discards into Ie,eff (and
their burstiness into BurstR) and the buffer's mean delay into Id (G.107 §3.5: Ta = T =
base one-way delay + buffer delay, Tr = 2T).

Models: fixed 50 ms and fixed 200 ms (vectorised here with exactly the semantics of
``callward.rtp.jitter_buffer.FixedBuffer``: the first packet's transit plus the depth is the
playout offset for the whole stream) and the media plane's ``AdaptiveBuffer``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from callward.quality import emodel, emodel_wb
from callward.quality.accel import ACCEL
from callward.quality.streams import burst_metrics
from callward.rtp.jitter_buffer import AdaptiveBuffer

__all__ = [
    "MODELS",
    "PlayoutOutcome",
    "adaptive_playout",
    "adaptive_reference",
    "codec_for",
    "fixed_playout",
    "stream_mos",
]

MODELS = ("network", "fixed50", "fixed200", "adaptive")
_PT_CODEC = {0: "g711", 8: "g711", 18: "g729a", 4: "g723.1", 3: "gsm-fr", 9: "g722"}


@dataclass(frozen=True, slots=True)
class PlayoutOutcome:
    late: np.ndarray  # bool per packet (arrival order)
    mean_delay_ms: float


def codec_for(pt: int, name: str) -> str | None:
    """E-model codec key (narrowband G.107 or wideband G.107.1) for a payload type / rtpmap
    name, None when no impairment values are known for it."""
    if pt in _PT_CODEC:
        return _PT_CODEC[pt]
    return emodel_wb.codec_key(name)


def fixed_playout(
    arrival_s: np.ndarray, ext_ts: np.ndarray, clock_rate: int, depth_ms: float
) -> PlayoutOutcome:
    """Vectorised FixedBuffer: late when transit exceeds the first transit + depth."""
    transit = arrival_s - ext_ts / clock_rate
    offset = transit[0] + depth_ms / 1000.0
    late = transit > offset
    return PlayoutOutcome(late, float((offset - transit.min()) * 1000.0))


def adaptive_playout(arrival_s: np.ndarray, ext_ts: np.ndarray, clock_rate: int) -> PlayoutOutcome:
    """The media plane's AdaptiveBuffer (percentile of recent transits, per talkspurt),
    vectorised: :func:`adaptive_reference` (the buffer's own ``run``) is what it equals.

    The buffer plans a playout offset only when the first packet of a segment (talkspurt, cut
    every ``resync_s`` of media) arrives, from the last ``window`` transits; between plans a
    packet is late iff its transit exceeds its segment's offset. So the per-packet loop
    becomes: arrays for transits, talkspurt ids and segment keys, one ``_plan`` call per
    segment (a few per minute), and a vector comparison.
    """
    buf = AdaptiveBuffer()
    n = len(arrival_s)
    if n == 0:
        return PlayoutOutcome(np.zeros(0, dtype=bool), 0.0)
    if ACCEL is not None:  # the buffer's own per-packet loop, in C (_accel.c ``adaptive``)
        late_b, mean = ACCEL.adaptive(
            np.ascontiguousarray(arrival_s, dtype=np.float64),
            np.ascontiguousarray(ext_ts & 0xFFFFFFFF, dtype=np.int64), clock_rate,
            buf.percentile, buf.margin_ms, buf.window, buf.min_delay_ms, buf.max_delay_ms,
            buf.initial_delay_ms, buf.warmup, buf.spurt_gap_factor,
            -1.0 if buf.resync_s is None else buf.resync_s,
        )  # fmt: skip
        return PlayoutOutcome(np.frombuffer(late_b, dtype=bool), mean)
    return _adaptive_numpy(arrival_s, ext_ts, clock_rate, buf)


def _adaptive_numpy(
    arrival_s: np.ndarray, ext_ts: np.ndarray, clock_rate: int, buf: AdaptiveBuffer
) -> PlayoutOutcome:
    n = len(arrival_s)
    # RTP timestamps unwrapped by neighbour deltas exactly as the buffer does (on the 32-bit
    # values it is given).
    ts32 = (ext_ts & 0xFFFFFFFF).astype(np.int64)
    d = np.diff(ts32) % (1 << 32)
    d = np.where(d >= 1 << 31, d - (1 << 32), d)
    ext = np.empty(n, dtype=np.int64)
    ext[0] = ts32[0]
    np.cumsum(d, out=ext[1:])
    ext[1:] += ts32[0]
    arrival = np.asarray(arrival_s, dtype=np.float64)
    transits = arrival - ext / clock_rate
    # Talkspurts: a timestamp step above gap_factor × the median non-zero step.
    by_ts = np.argsort(ext, kind="stable")
    steps = np.diff(ext[by_ts])
    nz = np.sort(steps[steps != 0])
    spurt = np.zeros(n, dtype=np.int64)
    if len(nz):
        frame = int(nz[len(nz) // 2])
        spurt[by_ts[1:]] = np.cumsum(steps > buf.spurt_gap_factor * frame)
    if buf.resync_s is not None:
        seg_len = max(1, int(buf.resync_s * clock_rate))
        part = (ext - int(ext.min())) // seg_len
    else:
        part = np.zeros(n, dtype=np.int64)
    # One id per (spurt, part) key; its plan is made at its first packet in arrival order.
    order = np.argsort(arrival, kind="stable")
    key = spurt * (int(part.max()) + 1) + part
    uniq, key_id = np.unique(key[order], return_inverse=True)
    first = np.full(len(uniq), n, dtype=np.int64)
    np.minimum.at(first, key_id, np.arange(n))
    tr_ord = transits[order]
    plans = np.empty(len(uniq), dtype=np.float64)
    w = buf.window
    full = first >= w - 1
    for k in np.flatnonzero(~full).tolist():  # windows still filling: the buffer's own plan
        p = int(first[k])
        plans[k] = buf._plan(deque(tr_ord[max(0, p - w + 1) : p + 1].tolist()))
    if full.any():
        # Full windows, all at once: nearest-rank percentile and minimum per row, then the
        # same margin and clamps as AdaptiveBuffer._plan.
        rows = np.lib.stride_tricks.sliding_window_view(tr_ord, w)[first[full] - (w - 1)]
        rank = int(max(0, min(w - 1, -(-w * buf.percentile // 100) - 1)))
        kth = np.partition(rows, rank, axis=1)[:, rank]
        floor = rows.min(axis=1)
        target = kth + buf.margin_ms / 1000.0
        lo = floor + buf.min_delay_ms / 1000.0
        hi = floor + buf.max_delay_ms / 1000.0
        plans[full] = np.minimum(np.maximum(target, lo), hi)
    chosen = np.empty(n, dtype=np.float64)
    chosen[order] = plans[key_id]
    late = transits > chosen
    delays = (chosen - transits.min()) * 1000.0
    return PlayoutOutcome(late, float(delays.sum() / n))


def adaptive_reference(
    arrival_s: np.ndarray, ext_ts: np.ndarray, clock_rate: int
) -> PlayoutOutcome:
    """The per-packet reference: ``AdaptiveBuffer().run`` on plain lists."""
    res = AdaptiveBuffer().run(arrival_s.tolist(), (ext_ts & 0xFFFFFFFF).tolist(), clock_rate)
    return PlayoutOutcome(np.array(res.late_flags, dtype=bool), res.mean_delay_ms)


def stream_mos(
    codec_key: str | None,
    arrival_s: np.ndarray,
    ext_ts: np.ndarray,
    seq_ext: np.ndarray,
    expected: int,
    lost: int,
    clock_rate: int,
    base_delay_ms: float = 40.0,
    adaptive: bool = True,
    bitrate_bps: float | None = None,
) -> dict[str, dict[str, float] | None]:
    """MOS per model: network-only, fixed 50 ms, fixed 200 ms, adaptive (None if unknown).

    Wideband codecs (Opus, AMR-WB, G.722) are rated with G.107.1 (``r`` on the 0–129 scale,
    ``"scale": "wb"``) at ``bitrate_bps`` (the stream's measured payload rate); the MOS of both
    scales is MOS-CQE on the same 1–4.5 range.
    """
    out: dict[str, dict[str, float] | None] = dict.fromkeys(MODELS)
    if codec_key is None or expected <= 0 or clock_rate <= 0 or len(arrival_s) == 0:
        return out
    wide = emodel_wb.is_wideband(codec_key, bitrate_bps)
    if wide:
        wc = emodel_wb.wb_codec(codec_key, bitrate_bps)
        frame = wc.frame_ms
    else:
        c = emodel.codec(codec_key)
        frame = c.frame_ms
    net_lost = max(lost, 0)
    net_burst = burst_metrics(seq_ext).burst_r

    def score(loss: int, burst_r: float, delay: float, late: int) -> dict[str, float]:
        ppl = min(100.0, loss * 100.0 / expected)
        d = min(delay, 10_000.0)
        br = max(1.0, burst_r)
        if wide:
            w = emodel_wb.compute_wb(wc, ppl, br, d, d, 2 * d)
            mos, r_val, ie_eff, id_ = w.mos, w.r, w.ie_eff, w.id
        else:
            r = emodel.compute(
                emodel.EModelInput(t=d, ta=d, tr=2 * d, ie=c.ie, bpl=c.bpl, ppl=ppl, burst_r=br)
            )
            mos, r_val, ie_eff, id_ = r.mos, r.r, r.ie_eff, r.id_
        return {"mos": round(mos, 3), "r": round(r_val, 2), "loss_pct": round(ppl, 3),
                "late": late, "delay_ms": round(d, 1), "burst_r": round(br, 3),
                "ie_eff": round(ie_eff, 2), "id": round(id_, 2)}  # fmt: skip

    out["network"] = score(net_lost, net_burst, base_delay_ms + frame, 0)
    models: list[tuple[str, PlayoutOutcome]] = [
        ("fixed50", fixed_playout(arrival_s, ext_ts, clock_rate, 50.0)),
        ("fixed200", fixed_playout(arrival_s, ext_ts, clock_rate, 200.0)),
    ]
    if adaptive:
        models.append(("adaptive", adaptive_playout(arrival_s, ext_ts, clock_rate)))
    for name, po in models:
        late = int(np.count_nonzero(po.late))
        kept = seq_ext[~po.late]
        br = burst_metrics(kept).burst_r if late else net_burst
        out[name] = score(net_lost + late, br, base_delay_ms + frame + po.mean_delay_ms, late)
    return out
