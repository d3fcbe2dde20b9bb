"""Playout (jitter) buffers as pure simulators: given when packets arrived and their RTP
timestamps, decide when each would be played and which arrive too late.

Model (Ramjee et al., "Adaptive playout mechanisms for packetized audio", 1994): a packet with
sender time ``s_i = ts_i / clock_rate`` and arrival ``a_i`` has transit ``n_i = a_i - s_i`` (the
unknown clock offset cancels in every comparison). Playout is ``p_i = s_i + offset`` where the
``offset`` is fixed for a whole talkspurt, so the spacing of frames inside a talkspurt is kept;
the packet is *late* (concealed by PLC) when ``a_i > p_i``.

``delay_ms`` reports, per packet and in arrival order, the buffer's total delay above the
smallest transit in the trace (``offset - min(n)``): the part of mouth-to-ear delay a buffer
choice controls. That floor uses the whole trace and is for reporting only; no decision uses it.

Talkspurt boundaries are RTP timestamp gaps larger than ``spurt_gap_factor`` times the median
frame step (DTX/VAD silence, RFC 3551 §4.1 marker-bit semantics without needing the bit).
Continuous streams have no gaps, so :class:`AdaptiveBuffer` may also re-plan every
``resync_s`` seconds of media, modelling time-scale modification as NetEQ does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from callward.errors import MediaError

__all__ = [
    "AdaptiveBuffer",
    "FixedBuffer",
    "PlayoutModel",
    "PlayoutResult",
]

_TS_MOD = 1 << 32


@dataclass(frozen=True, slots=True)
class PlayoutResult:
    """Outcome of one simulated stream. ``delay_ms`` and ``late_flags`` are per packet, in the
    order given (arrival order)."""

    late: int
    played: int
    mean_delay_ms: float
    delay_ms: tuple[float, ...]
    late_flags: tuple[bool, ...] = ()

    @property
    def late_ratio(self) -> float:
        total = self.late + self.played
        return self.late / total if total else 0.0


class PlayoutModel(Protocol):
    def run(
        self, arrival_s: Sequence[float], rtp_ts: Sequence[int], clock_rate: int
    ) -> PlayoutResult: ...


LateHook = Callable[[int], None]


def _unwrap(rtp_ts: Sequence[int]) -> list[int]:
    """Extend 32-bit timestamps across wraparound, assuming neighbours differ by < 2**31."""
    out: list[int] = []
    prev: int | None = None
    for ts in rtp_ts:
        if not 0 <= ts < _TS_MOD:
            raise MediaError(f"RTP timestamp {ts} out of 32-bit range")
        if prev is None:
            ext = ts
        else:
            delta = (ts - prev) % _TS_MOD
            if delta >= 1 << 31:
                delta -= _TS_MOD
            ext = prev + delta
        out.append(ext)
        prev = ext
    return out


def _validate(arrival_s: Sequence[float], rtp_ts: Sequence[int], clock_rate: int) -> None:
    if len(arrival_s) != len(rtp_ts):
        raise MediaError("arrival_s and rtp_ts must have the same length")
    if clock_rate <= 0:
        raise MediaError(f"clock rate {clock_rate} must be positive")


def _spurt_ids(ext_ts: list[int], gap_factor: float) -> list[int]:
    """Talkspurt index per packet: a new spurt starts after a timestamp gap much larger than
    the typical (median) frame step."""
    order = sorted(range(len(ext_ts)), key=ext_ts.__getitem__)
    steps = sorted(
        ext_ts[order[k + 1]] - ext_ts[order[k]]
        for k in range(len(order) - 1)
        if ext_ts[order[k + 1]] != ext_ts[order[k]]
    )
    ids = [0] * len(ext_ts)
    if not steps:
        return ids
    frame = steps[len(steps) // 2]
    spurt = 0
    for k in range(1, len(order)):
        if ext_ts[order[k]] - ext_ts[order[k - 1]] > gap_factor * frame:
            spurt += 1
        ids[order[k]] = spurt
    return ids


def _result(offsets: list[float], transits: list[float], hook: LateHook | None) -> PlayoutResult:
    if not transits:
        return PlayoutResult(0, 0, 0.0, (), ())
    floor = min(transits)
    late_flags = tuple(n > off for n, off in zip(transits, offsets, strict=True))
    if hook is not None:
        for i, is_late in enumerate(late_flags):
            if is_late:
                hook(i)
    delays = tuple((off - floor) * 1000.0 for off in offsets)
    late = sum(late_flags)
    return PlayoutResult(
        late=late,
        played=len(transits) - late,
        mean_delay_ms=sum(delays) / len(delays),
        delay_ms=delays,
        late_flags=late_flags,
    )


class FixedBuffer:
    """Static buffer: plays every frame ``delay_ms`` after the first packet's arrival would
    schedule it; never adapts (the classic baseline)."""

    def __init__(self, delay_ms: float, *, on_late: LateHook | None = None) -> None:
        if delay_ms < 0:
            raise MediaError("delay_ms must be >= 0")
        self.delay_ms = delay_ms
        self.on_late = on_late

    def run(
        self, arrival_s: Sequence[float], rtp_ts: Sequence[int], clock_rate: int
    ) -> PlayoutResult:
        _validate(arrival_s, rtp_ts, clock_rate)
        ext = _unwrap(rtp_ts)
        transits = [a - ts / clock_rate for a, ts in zip(arrival_s, ext, strict=True)]
        if not transits:
            return _result([], [], self.on_late)
        offset = transits[0] + self.delay_ms / 1000.0
        return _result([offset] * len(transits), transits, self.on_late)


class AdaptiveBuffer:
    """Percentile-based adaptive buffer. At each talkspurt start it sets the playout offset to
    the ``percentile`` of the last ``window`` transits plus ``margin_ms``, clamped to
    [``min_delay_ms``, ``max_delay_ms``] above the window's smallest transit, so the expected
    late-loss is about ``1 - percentile/100`` of packets while delay follows the jitter.

    With ``target_late`` set, the buffer also adapts to the late loss it measures: over the
    last ``window`` packets, a late ratio above the target raises the safety margin by
    ``margin_step_ms`` at the next plan, one below half the target lowers it again (never
    below ``margin_ms``, never above ``max_margin_ms``), so heavy-tailed jitter that a
    percentile underestimates is corrected from experience."""

    def __init__(
        self,
        *,
        percentile: float = 98.0,
        margin_ms: float = 5.0,
        window: int = 300,
        min_delay_ms: float = 10.0,
        max_delay_ms: float = 400.0,
        initial_delay_ms: float = 60.0,
        warmup: int = 20,
        spurt_gap_factor: float = 1.5,
        resync_s: float | None = 2.0,
        target_late: float | None = None,
        margin_step_ms: float = 5.0,
        max_margin_ms: float = 200.0,
        on_late: LateHook | None = None,
    ) -> None:
        if not 0.0 < percentile <= 100.0:
            raise MediaError("percentile must be in (0, 100]")
        if window < 1 or warmup < 1:
            raise MediaError("window and warmup must be >= 1")
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise MediaError("need 0 <= min_delay_ms <= max_delay_ms")
        if target_late is not None and not 0.0 < target_late < 1.0:
            raise MediaError("target_late must be in (0, 1)")
        if margin_step_ms < 0 or max_margin_ms < margin_ms:
            raise MediaError("need margin_step_ms >= 0 and max_margin_ms >= margin_ms")
        self.percentile = percentile
        self.margin_ms = margin_ms
        self.window = window
        self.min_delay_ms = min_delay_ms
        self.max_delay_ms = max_delay_ms
        self.initial_delay_ms = initial_delay_ms
        self.warmup = warmup
        self.spurt_gap_factor = spurt_gap_factor
        self.resync_s = resync_s
        self.target_late = target_late
        self.margin_step_ms = margin_step_ms
        self.max_margin_ms = max_margin_ms
        self.on_late = on_late

    def _plan(self, history: deque[float], margin_ms: float | None = None) -> float:
        floor = min(history)
        if len(history) < self.warmup:
            return floor + self.initial_delay_ms / 1000.0
        ordered = sorted(history)
        # nearest-rank percentile (no interpolation: the answer is an observed transit)
        rank = max(0, min(len(ordered) - 1, -(-len(ordered) * self.percentile // 100) - 1))
        margin = self.margin_ms if margin_ms is None else margin_ms
        target = ordered[int(rank)] + margin / 1000.0
        lo = floor + self.min_delay_ms / 1000.0
        hi = floor + self.max_delay_ms / 1000.0
        return min(max(target, lo), hi)

    def run(
        self, arrival_s: Sequence[float], rtp_ts: Sequence[int], clock_rate: int
    ) -> PlayoutResult:
        _validate(arrival_s, rtp_ts, clock_rate)
        ext = _unwrap(rtp_ts)
        transits = [a - ts / clock_rate for a, ts in zip(arrival_s, ext, strict=True)]
        if not transits:
            return _result([], [], self.on_late)
        spurts = _spurt_ids(ext, self.spurt_gap_factor)
        if self.resync_s is not None:
            # split long spurts into segments of resync_s seconds of media
            seg_len = max(1, int(self.resync_s * clock_rate))
            base = min(ext)
            keys = [(s, (t - base) // seg_len) for s, t in zip(spurts, ext, strict=True)]
        else:
            keys = [(s, 0) for s in spurts]
        history: deque[float] = deque(maxlen=self.window)
        plan: dict[tuple[int, int], float] = {}
        # Packets are handled in arrival order: a segment's offset is chosen when its first
        # packet arrives, from the transits observed up to then (causal, like a real receiver).
        order = sorted(range(len(transits)), key=lambda i: arrival_s[i])
        chosen = [0.0] * len(transits)
        margin = self.margin_ms
        recent_late: deque[bool] = deque(maxlen=self.window)
        for i in order:
            history.append(transits[i])
            seg = keys[i]
            if seg not in plan:
                if self.target_late is not None and len(recent_late) >= self.warmup:
                    ratio = sum(recent_late) / len(recent_late)
                    if ratio > self.target_late:
                        margin = min(self.max_margin_ms, margin + self.margin_step_ms)
                    elif ratio < self.target_late / 2:
                        margin = max(self.margin_ms, margin - self.margin_step_ms)
                plan[seg] = self._plan(history, margin)
            chosen[i] = plan[seg]
            # lateness is known the moment the packet arrives (its playout time is fixed)
            recent_late.append(transits[i] > chosen[i])
        return _result(chosen, transits, self.on_late)
