"""Playout buffers against hand-computed schedules (p_i = s_i + offset; late iff a_i > p_i)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.rtp.jitter_buffer import AdaptiveBuffer, FixedBuffer, PlayoutModel, PlayoutResult

CLOCK = 8000
FRAME = 160  # 20 ms


def test_fixed_buffer_hand_computed() -> None:
    # sender times 0,20,40,60 ms; transits 50, 50, 95, 69 ms -> arrivals s+transit
    transit_ms = [50, 50, 95, 69]
    ts = [i * FRAME for i in range(4)]
    arr = [(i * 20 + t) / 1000 for i, t in enumerate(transit_ms)]
    res = FixedBuffer(20).run(arr, ts, CLOCK)
    # offset = first transit 50 + 20 = 70 ms: packet 2 (95 > 70) late, packet 3 (69) in time
    assert res.late == 1 and res.played == 3
    assert res.late_flags == (False, False, True, False)
    # delay above the trace's minimal transit (50 ms) is the 20 ms buffer
    assert res.delay_ms == pytest.approx((20.0,) * 4)
    assert res.mean_delay_ms == pytest.approx(20.0)


def test_timestamp_wraparound_is_continuous() -> None:
    start = (1 << 32) - 2 * FRAME
    ts = [(start + i * FRAME) % (1 << 32) for i in range(5)]
    arr = [0.03 + i * 0.02 for i in range(5)]
    res = FixedBuffer(0).run(arr, ts, CLOCK)
    assert res.late == 0 and res.played == 5


def test_adaptive_follows_percentile_after_talkspurt() -> None:
    # Spurt 1: 30 packets with constant transit 40 ms. Then a 1 s silence gap.
    # Spurt 2 starts: planned from history => percentile of transits (all 40 ms) + margin 5 ms.
    buf = AdaptiveBuffer(percentile=90, margin_ms=5, warmup=10, resync_s=None, min_delay_ms=0)
    ts, arr = [], []
    for i in range(30):
        ts.append(i * FRAME)
        arr.append(i * 0.02 + 0.040)
    gap = 30 * FRAME + CLOCK  # 1 s silence
    # spurt 2: transits 40,100,40,40... the 100 ms one is late (offset = 45 ms)
    t2 = [40, 100, 40, 40]
    for k, t in enumerate(t2):
        ts.append(gap + k * FRAME)
        arr.append((gap + k * FRAME) / CLOCK + t / 1000)
    res = buf.run(arr, ts, CLOCK)
    # spurt 1: fewer than warmup packets when it started -> initial_delay 60 ms: nothing late
    assert res.late_flags[:30] == (False,) * 30
    assert res.delay_ms[0] == pytest.approx(60.0)
    assert res.late_flags[30:] == (False, True, False, False)
    assert res.delay_ms[30] == pytest.approx(5.0)


def test_adaptive_grows_delay_when_jitter_grows() -> None:
    rng = random.Random(7)
    ts, arr = [], []
    t = 0
    for spurt in range(20):
        jitter_ms = 5 if spurt < 10 else 60
        for _ in range(50):
            ts.append(t)
            arr.append(t / CLOCK + 0.03 + rng.uniform(0, jitter_ms) / 1000)
            t += FRAME
        t += CLOCK // 2  # 0.5 s silence
    res = AdaptiveBuffer(window=200).run(arr, ts, CLOCK)
    early = res.delay_ms[300:500]
    late = res.delay_ms[-200:]
    assert max(early) < 20.0  # 98th pct of U(0,5) + 5 ms margin + clamp
    assert min(late) > 50.0
    assert res.late_ratio < 0.05


def test_protocol_conformance_and_hooks() -> None:
    seen: list[int] = []
    models: list[PlayoutModel] = [FixedBuffer(0, on_late=seen.append), AdaptiveBuffer()]
    arr = [0.0, 0.05, 0.04]
    for m in models:
        r = m.run(arr, [0, 160, 320], CLOCK)
        assert isinstance(r, PlayoutResult)
    assert seen == [1]  # transit 30 ms > offset 0 + 0


def test_bad_input() -> None:
    with pytest.raises(MediaError):
        FixedBuffer(10).run([0.0], [], CLOCK)
    with pytest.raises(MediaError):
        FixedBuffer(10).run([0.0], [1 << 32], CLOCK)
    with pytest.raises(MediaError):
        AdaptiveBuffer().run([0.0], [0], 0)
    assert FixedBuffer(10).run([], [], CLOCK).played == 0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100, allow_nan=False), st.integers(0, (1 << 32) - 1)),
        max_size=60,
    ),
    st.integers(1, 48000),
)
def test_counts_always_add_up(pairs: list[tuple[float, int]], clock: int) -> None:
    arr = [a for a, _ in pairs]
    ts = [t for _, t in pairs]
    for model in (FixedBuffer(40), AdaptiveBuffer(warmup=3)):
        res = model.run(arr, ts, clock)
        assert res.late + res.played == len(pairs)
        assert len(res.delay_ms) == len(pairs) == len(res.late_flags)


def test_late_loss_feedback_meets_target_on_heavy_tailed_jitter() -> None:
    # low jitter plus rare Pareto delay spikes that the 98th percentile underestimates
    rng = random.Random(11)
    ts, arr = [], []
    t = 0
    for _ in range(150):  # talkspurts of 1 s with 0.4 s gaps
        for _ in range(50):
            d = 0.04 + rng.expovariate(1 / 0.004)
            if rng.random() < 0.03:
                d += 0.03 * rng.paretovariate(2.0)
            ts.append(t)
            arr.append(t / CLOCK + d)
            t += FRAME
        t += int(0.4 * CLOCK)
    plain = AdaptiveBuffer().run(arr, ts, CLOCK)
    tuned = AdaptiveBuffer(target_late=0.01).run(arr, ts, CLOCK)
    assert plain.late_ratio > 0.015  # the percentile alone misses the target
    assert tuned.late_ratio <= 0.013  # feedback brings it to ~1 %
    assert tuned.mean_delay_ms > plain.mean_delay_ms  # ... by paying delay
    with pytest.raises(MediaError):
        AdaptiveBuffer(target_late=1.5)
