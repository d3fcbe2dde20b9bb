"""Per-stream RTP statistics, computed the way Wireshark's RTP stream analysis reports them.

Definitions (RFC 3550 and Wireshark ``ui/tap-rtp-analysis.c``, which ``tshark -z rtp,streams``
prints, and which support engineers compare us with):

- a stream is (src, sport, dst, dport, SSRC); times are capture times in ms;
- ``expected = last_seq + 65536 * cycles - first_seq + 1`` and ``lost = expected - received``
  (RFC 3550 A.3; duplicates make it negative). ``last_seq`` is the last *arriving* packet's
  sequence number and a cycle is counted when an in-time packet falls below the first one;
- a packet is *in time* when its (unwrapped) RTP timestamp is not before the stream's first
  packet (within 2^31); only in-time packets update delta and jitter; arrival is measured
  against the previous in-time packet and the RTP timestamp against the previous in-time packet
  that had a clock rate (tshark 4.0 behaviour, checked against it);
- jitter is RFC 3550 A.8's J += (|D| - J)/16 in ms, with the transit difference in ms using
  the integer ``clock_rate // 1000`` Wireshark uses (44.1 kHz L16 counts as 44 ticks/ms);
- max/mean delta and jitter only count *regular* packets: not the first, no marker, not
  comfort noise (PT 13/19) and not right after one, and in time. The mean is the running
  ``m = (m·(n−1) + J)/n`` with n the number of packets before this one (Wireshark's).
- dynamic payload types have a clock rate only when SDP (rtpmap) names it.

``analyse_stream`` is the vectorised engine (numpy); ``reference_stream`` is the plain
per-packet state machine it is tested against, and ``stream_stats`` runs that state machine in
C (``_accel.c``) when the accelerator is built, else the numpy engine.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from callward.quality.accel import ACCEL

__all__ = [
    "STATIC_CLOCK",
    "StreamStats",
    "analyse_stream",
    "burst_metrics",
    "burst_reference",
    "clock_rate_for",
    "payload_name",
    "reference_stream",
    "stream_stats",
    "unwrap_timestamps",
]

# IANA static payload types → RTP clock (RFC 3551 §6); the same map Wireshark uses.
STATIC_CLOCK = {
    0: 8000, 1: 8000, 2: 8000, 3: 8000, 4: 8000, 5: 8000, 6: 16000, 7: 8000, 8: 8000,
    9: 8000, 10: 44100, 11: 44100, 12: 8000, 13: 8000, 14: 90000, 15: 8000, 16: 11025,
    17: 22050, 18: 8000, 19: 8000, 25: 90000, 26: 90000, 28: 90000, 31: 90000, 32: 90000,
    33: 90000, 34: 90000,
}  # fmt: skip
STATIC_NAME = {
    0: "g711U",
    3: "GSM",
    4: "g723",
    8: "g711A",
    9: "g722",
    13: "CN",
    18: "g729",
    19: "CN_old",
}
# rtpmap encoding names whose clock Wireshark knows when SDP gives no rate (RFC 4867 etc.).
DYN_CLOCK = {"amr": 8000, "amr-wb": 16000, "evs": 16000, "opus": 48000, "g7221": 16000,
             "ilbc": 8000, "speex": 8000, "h264": 90000, "vp8": 90000}  # fmt: skip
CN_TYPES = (13, 19)
GMIN = 16  # RFC 3611 §4.7.2 recommended minimum gap


def payload_name(pt: int, rtpmap: dict[int, tuple[str, int]] | None = None) -> str:
    if pt >= 96 and rtpmap and pt in rtpmap:
        return rtpmap[pt][0]
    return STATIC_NAME.get(pt, f"pt{pt}")


def clock_rate_for(pt: int, rtpmap: dict[int, tuple[str, int]] | None = None) -> int:
    """Clock rate used for jitter: static table below 96, rtpmap (or name) above; 0 = unknown.

    telephone-event (RFC 4733 §2.2.1) keeps its timestamp across an event, so it is 0 too.
    """
    if pt < 96:
        return STATIC_CLOCK.get(pt, 0)
    if not rtpmap or pt not in rtpmap:
        return 0
    name, rate = rtpmap[pt]
    if name.lower().startswith("telephone-event"):
        return 0
    return rate or DYN_CLOCK.get(name.lower(), 0)


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One RTP stream's statistics (times in ms)."""

    packets: int
    expected: int
    lost: int
    first_seq: int
    last_seq: int
    cycles: int
    seq_errors: int
    wrong_timestamps: int
    markers: int
    pt_changes: int
    max_delta: float
    min_delta: float
    mean_delta: float
    max_jitter: float
    min_jitter: float
    mean_jitter: float
    problem: bool

    @property
    def loss_pct(self) -> float:
        return self.lost * 100.0 / self.expected if self.expected else 0.0


def unwrap_timestamps(ts: np.ndarray) -> np.ndarray:
    """32-bit RTP timestamps → monotonic-where-possible int64 (each step taken mod 2^32 as a
    signed 32-bit difference, so a wrap continues upwards and reordering stays negative)."""
    ts = ts.astype(np.int64)
    if len(ts) < 2:
        return ts
    d = np.diff(ts)
    d = ((d + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    out = np.empty_like(ts)
    out[0] = ts[0]
    np.cumsum(d, out=out[1:])
    out[1:] += ts[0]
    return out


def _ewma16(x: np.ndarray, block: int = 256) -> np.ndarray:
    """J_k = (15·J_{k-1} + x_k)/16 with J_0 = 0, vectorised block-wise (a^-256 ≈ 1.5e7 keeps
    the scaled partial sums well inside double precision)."""
    n = len(x)
    if n == 0:
        return x.astype(np.float64)
    a = 15.0 / 16.0
    nb = -(-n // block)
    flat = np.zeros(nb * block)
    flat[:n] = x / 16.0
    xp = flat.reshape(nb, block)
    j = np.arange(block)
    up = a ** (-j.astype(np.float64))
    down = a ** j.astype(np.float64)
    s = np.cumsum(xp * up, axis=1) * down  # zero-initial response inside each block
    carry = 0.0
    ab = a ** (j + 1.0)
    last = s[:, -1]
    carries = np.empty(nb)
    aB = a**block
    for k in range(nb):  # one step per block: n/256 iterations
        carries[k] = carry
        carry = last[k] + aB * carry
    s += carries[:, None] * ab[None, :]
    return s.reshape(-1)[:n]


def _running_mean_final(values: np.ndarray, idx: np.ndarray) -> float:
    """Final m of m = (m·(i−1) + v)/i applied at packet positions ``idx`` (i ≥ 1), m₀ = 0."""
    if len(values) == 0:
        return 0.0
    i = idx.astype(np.float64)
    f = (i - 1.0) / i
    # Contribution of step k survives all later factors: suffix products of f.
    suf = np.ones(len(f))
    if len(f) > 1:
        suf[:-1] = np.cumprod(f[::-1])[::-1][1:]
    return float(np.sum(values / i * suf))


def _seq_state(seq: np.ndarray, in_time: np.ndarray) -> tuple[int, int]:
    """(cycles, sequence errors) with Wireshark's wrap and sequence-error rules.

    ``in_time`` has one entry per packet (the first is True). Only anomalous positions are
    visited in Python: a packet that follows an updating packet with seq+1 in time updates too.
    """
    n = len(seq)
    if n < 2:
        return 0, 0
    start = int(seq[0])
    it = in_time[1:]
    s1 = seq[1:]
    # cycles: an "under" event when an in-time seq drops below the first seq (or 65535→0 when
    # the first seq is 0), reset by an in-time seq above the first; count entries into under.
    prev = seq[:-1]
    a_ev = it & ((s1 < start) | ((s1 == 0) & (prev == 65535)))
    b_ev = it & (s1 > start) & ~a_ev
    ev = np.zeros(n - 1, dtype=np.int8)
    ev[b_ev] = 2
    ev[a_ev] = 1
    evs = ev[ev != 0]
    if len(evs):
        prev_ev = np.concatenate(([2], evs[:-1]))
        cycles = int(np.count_nonzero((evs == 1) & (prev_ev == 2)))
    else:
        cycles = 0
    simple = it & (s1 == ((prev + 1) & 0xFFFF))
    if simple.all():
        return cycles, 0
    seq_l = seq.tolist()
    it_l = in_time.tolist()
    bad = (np.flatnonzero(~simple) + 1).tolist()
    errors = 0
    seq_num = 0
    pos = 0
    bi = 0
    nb = len(bad)
    while bi < nb:
        i = bad[bi]
        if i > pos:
            seq_num = seq_l[i - 1]  # every packet since the last check updated seq_num
        while True:
            s = seq_l[i]
            t = it_l[i]
            updated = True
            if t and (seq_num + 1 == s or (seq_num == 65535 and s == 0)):
                seq_num = s
            elif t and (seq_num + 1 < s or seq_num - s > 0xFF00):
                seq_num = s
                errors += 1
            elif seq_num + 1 > s:
                errors += 1
                updated = False
            else:
                updated = False
            pos = i + 1
            while bi < nb and bad[bi] <= i:
                bi += 1
            if updated or i + 1 >= n:
                break
            i += 1  # after a non-updating packet the next one must be checked too
    return cycles, errors


def analyse_stream(
    t_ms: np.ndarray, ets: np.ndarray, seq: np.ndarray, pt: np.ndarray, marker: np.ndarray,
    clock: np.ndarray,
) -> StreamStats:  # fmt: skip
    """Vectorised statistics for one stream (arrays in capture order, ``ets`` unwrapped)."""
    n = len(t_ms)
    rel = ets - ets[0]
    in_time = (rel >= 0) & (rel < (1 << 31))
    cycles, seq_errors = _seq_state(seq.astype(np.int64), in_time)
    first_seq, last_seq = int(seq[0]), int(seq[-1])
    expected = last_seq + cycles * 65536 - first_seq + 1
    idx = np.arange(n)
    last_it = np.maximum.accumulate(np.where(in_time, idx, 0))
    prev = last_it[:-1]  # the in-time packet each later packet's arrival is measured against
    tp = t_ms[prev]
    delta = t_ms[1:] - tp
    cr = clock[1:].astype(np.int64)
    has = (cr != 0) & in_time[1:]
    # The timestamp reference only moves on in-time packets that have a clock (tshark 4.0):
    # after RFC 4733 events the next audio packet is measured against the last audio one.
    ref_ok = np.concatenate(([True], has))
    prev_ts = np.maximum.accumulate(np.where(ref_ok, idx, 0))[:-1]
    div = np.where(has, cr // 1000, 1).astype(np.float64)
    nom = (ets[1:] - ets[prev_ts]).astype(np.float64) / div
    dd = np.abs(t_ms[1:] - (tp + nom))
    jit = np.zeros(n - 1)
    jit[has] = _ewma16(dd[has])
    is_cn = np.isin(pt, CN_TYPES)
    regular = ~marker[1:] & ~is_cn[1:] & in_time[1:] & ~is_cn[:-1]
    rj = regular & has
    pos = idx[1:]
    dreg = delta[regular]
    jreg = jit[rj]
    problem = seq_errors > 0 or not bool(in_time.all())
    return StreamStats(
        packets=n,
        expected=expected,
        lost=expected - n,
        first_seq=first_seq,
        last_seq=last_seq,
        cycles=cycles,
        seq_errors=seq_errors,
        wrong_timestamps=int(n - np.count_nonzero(in_time)),
        markers=int(np.count_nonzero(marker)),
        pt_changes=int(np.count_nonzero(pt[1:] != pt[:-1])),
        max_delta=max(0.0, float(dreg.max())) if len(dreg) else 0.0,
        min_delta=float(dreg.min()) if len(dreg) else 0.0,
        mean_delta=_running_mean_final(dreg, pos[regular]),
        max_jitter=max(0.0, float(jreg.max())) if len(jreg) else 0.0,
        min_jitter=float(jreg.min()) if len(jreg) else 0.0,
        mean_jitter=_running_mean_final(jreg, pos[rj]),
        problem=problem,
    )


def stream_stats(
    t_ms: np.ndarray, ets: np.ndarray, seq: np.ndarray, pt: np.ndarray, marker: np.ndarray,
    clock: np.ndarray,
) -> StreamStats:  # fmt: skip
    """One stream's statistics: ``reference_stream`` in C when built, else ``analyse_stream``."""
    if ACCEL is None:
        return analyse_stream(t_ms, ets, seq, pt, marker, clock)
    f = ACCEL.stream_stats(
        np.ascontiguousarray(t_ms, dtype=np.float64), np.ascontiguousarray(ets, dtype=np.int64),
        np.ascontiguousarray(seq, dtype=np.int64), np.ascontiguousarray(pt, dtype=np.int64),
        np.ascontiguousarray(marker, dtype=np.uint8), np.ascontiguousarray(clock, dtype=np.int64),
    )  # fmt: skip
    return StreamStats(*f)


def reference_stream(
    t_ms: list[float], ets: list[int], seq: list[int], pt: list[int], marker: list[bool],
    clock: list[int],
) -> StreamStats:  # fmt: skip
    """Plain per-packet state machine (the executable specification of ``analyse_stream``)."""
    n = len(t_ms)
    start = seq[0]
    seq_num = seq[0]
    seq_ts = ets[0]
    time = t_ms[0]
    last_pt = pt[0]
    under = False
    cycles = errors = wrong_ts = 0
    jitter = 0.0
    max_delta = max_jitter = mean_delta = mean_jitter = 0.0
    min_delta = min_jitter = -1.0
    prev_seq = seq[0]
    for i in range(1, n):
        s = seq[i]
        in_time = 0 <= ets[i] - ets[0] < (1 << 31)
        if not in_time:
            wrong_ts += 1
        wraps = s < start or (s == 0 and prev_seq == 65535)
        if wraps and in_time and not under:
            cycles += 1
            under = True
        elif s > start and in_time and under:
            under = False
        if (in_time and seq_num + 1 == s) or (in_time and seq_num == 65535 and s == 0):
            seq_num = s
        elif in_time and (seq_num + 1 < s or seq_num - s > 0xFF00):
            seq_num = s
            errors += 1
        elif seq_num + 1 > s:
            errors += 1
        cn = pt[i] in CN_TYPES
        follow_cn = last_pt in CN_TYPES
        last_pt = pt[i]
        cr = clock[i]
        delta = t_ms[i] - time
        cur_j = 0.0
        if cr and in_time:
            nom = (ets[i] - seq_ts) / (cr // 1000)
            d = abs(t_ms[i] - (time + nom))
            cur_j = jitter = (15 * jitter + d) / 16
        if not (marker[i] or cn or not in_time or follow_cn):
            max_delta = max(max_delta, delta)
            min_delta = delta if min_delta == -1 else min(min_delta, delta)
            mean_delta = (mean_delta * (i - 1) + delta) / i
            if cr:
                max_jitter = max(max_jitter, jitter)
                mean_jitter = (mean_jitter * (i - 1) + cur_j) / i
                min_jitter = jitter if min_jitter == -1 else min(min_jitter, jitter)
        if in_time:
            time = t_ms[i]
            if cr:
                seq_ts = ets[i]
        prev_seq = s
    expected = seq[-1] + cycles * 65536 - start + 1
    return StreamStats(
        packets=n, expected=expected, lost=expected - n, first_seq=start, last_seq=seq[-1],
        cycles=cycles, seq_errors=errors, wrong_timestamps=wrong_ts,
        markers=sum(1 for m in marker if m),
        pt_changes=sum(1 for a, b in itertools.pairwise(pt) if a != b),
        max_delta=max_delta, min_delta=max(min_delta, 0.0), mean_delta=mean_delta,
        max_jitter=max_jitter, min_jitter=max(min_jitter, 0.0), mean_jitter=mean_jitter,
        problem=errors > 0 or wrong_ts > 0,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BurstMetrics:
    """RFC 3611 §4.7.2 burst/gap metrics plus the G.107 BurstR of the loss pattern."""

    burst_density: float  # fraction of packets lost within bursts
    gap_density: float
    burst_duration: int  # packets (sum of burst lengths)
    gap_duration: int
    burst_r: float  # G.107 §3.6: observed mean burst length / random-loss mean burst length


def burst_metrics(seq_ext: np.ndarray, gmin: int = GMIN) -> BurstMetrics:
    """Bursts from the received extended sequence numbers (late/duplicate arrivals ignored).

    A burst is a run bounded by losses in which fewer than ``gmin`` packets were received
    between successive losses (RFC 3611 §4.7.2); everything else is gap. ``burst_reference``
    (numpy) is the definition; the C accelerator computes the same in one pass.
    """
    if ACCEL is not None:
        return BurstMetrics(*ACCEL.burst(np.ascontiguousarray(seq_ext, dtype=np.int64), gmin))
    return burst_reference(seq_ext, gmin)


def burst_reference(seq_ext: np.ndarray, gmin: int = GMIN) -> BurstMetrics:
    """``burst_metrics`` in numpy (the tested reference of the C version)."""
    if len(seq_ext) == 0:
        return BurstMetrics(0.0, 0.0, 0, 0, 1.0)
    rx = seq_ext if bool(np.all(np.diff(seq_ext) > 0)) else np.unique(seq_ext)
    lo, hi = int(rx[0]), int(rx[-1])
    total = hi - lo + 1
    steps = np.diff(rx)
    gaps = np.flatnonzero(steps > 1)
    if len(gaps) == 0:
        return BurstMetrics(0.0, 0.0, 0, total, 1.0)
    loss_start = rx[gaps] + 1  # first lost seq of each run
    loss_len = steps[gaps] - 1
    loss_end = loss_start + loss_len - 1
    received_between = loss_start[1:] - loss_end[:-1] - 1
    # Split into clusters where the received run between losses reaches gmin.
    brk = np.concatenate(([True], received_between >= gmin))
    cid = np.cumsum(brk) - 1
    nclu = int(cid[-1]) + 1
    c_first = np.zeros(nclu, dtype=np.int64)
    c_last = np.zeros(nclu, dtype=np.int64)
    c_lost = np.zeros(nclu, dtype=np.int64)
    np.add.at(c_lost, cid, loss_len)
    c_first[:] = loss_start[brk]
    last_idx = np.concatenate((np.flatnonzero(brk)[1:] - 1, [len(loss_start) - 1]))
    c_last[:] = loss_end[last_idx]
    span = c_last - c_first + 1
    is_burst = c_lost > 1  # one isolated loss is a gap loss
    b_dur = int(span[is_burst].sum())
    b_lost = int(c_lost[is_burst].sum())
    g_dur = total - b_dur
    g_lost = int(c_lost[~is_burst].sum())
    # BurstR (G.107 §3.6, 2-state Markov): p = P(loss | received), q = P(received | loss).
    lost_total = int(loss_len.sum())
    p = len(loss_len) / max(total - lost_total, 1)
    q = len(loss_len) / max(lost_total, 1)
    burst_r = 1.0 / (p + q) if p + q > 0 else 1.0
    return BurstMetrics(
        burst_density=b_lost / b_dur if b_dur else 0.0,
        gap_density=g_lost / g_dur if g_dur else 0.0,
        burst_duration=b_dur,
        gap_duration=g_dur,
        burst_r=max(burst_r, 1.0) if lost_total else 1.0,
    )
