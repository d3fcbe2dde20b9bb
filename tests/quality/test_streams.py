"""Stream statistics: the vectorised engine against the per-packet reference, and small cases
computed by hand from RFC 3550 (A.3 loss, A.8 jitter) and RFC 3611 §4.7.2 bursts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.quality.streams import (
    analyse_stream,
    burst_metrics,
    clock_rate_for,
    reference_stream,
    unwrap_timestamps,
)


def run_both(t, ts, seq, pt, marker, clock):
    ets = unwrap_timestamps(np.array(ts, dtype=np.int64))
    v = analyse_stream(
        np.array(t, dtype=np.float64), ets, np.array(seq, dtype=np.int64),
        np.array(pt, dtype=np.int64), np.array(marker, dtype=bool),
        np.array(clock, dtype=np.int64),
    )  # fmt: skip
    r = reference_stream(list(t), ets.tolist(), list(seq), list(pt), list(marker), list(clock))
    return v, r


def test_jitter_by_hand() -> None:
    # 8 kHz, 20 ms frames (160 ticks). Arrivals 0, 25, 40 ms.
    # D1 = |25 - (0 + 20)| = 5 → J1 = 5/16 = 0.3125
    # D2 = |40 - (25 + 20)| = 5 → J2 = (15·0.3125 + 5)/16 = 0.60546875
    # mean: m = (0·0 + J1)/1 = 0.3125, then (0.3125·1 + J2)/2 = 0.458984375
    v, r = run_both([0.0, 25.0, 40.0], [0, 160, 320], [1, 2, 3], [0, 0, 0], [False] * 3,
                    [8000] * 3)  # fmt: skip
    for s in (v, r):
        assert s.max_jitter == pytest.approx(0.60546875)
        assert s.mean_jitter == pytest.approx(0.458984375)
        assert s.max_delta == pytest.approx(25.0)
        assert s.lost == 0 and s.expected == 3


def test_loss_duplicates_and_wrap_by_hand() -> None:
    # seq 65534, 65535, 1, 1 (dup), 2: expected = 2 + 65536 − 65534 + 1 = 5, received 5,
    # lost 0 although seq 0 is missing: the duplicate cancels it (RFC 3550 A.3 semantics).
    seq = [65534, 65535, 1, 1, 2]
    ts = [s * 160 % 2**32 for s in range(5)]
    v, r = run_both([i * 20.0 for i in range(5)], ts, seq, [0] * 5, [False] * 5, [8000] * 5)
    assert v.expected == r.expected == 5
    assert v.lost == r.lost == 0
    assert v.cycles == 1 and v.seq_errors == r.seq_errors == 2


def test_clock_rate_rules() -> None:
    assert clock_rate_for(0) == 8000
    assert clock_rate_for(11) == 44100
    assert clock_rate_for(111) == 0  # dynamic without SDP: unknown
    assert clock_rate_for(111, {111: ("opus", 48000)}) == 48000
    assert clock_rate_for(101, {101: ("telephone-event", 8000)}) == 0  # RFC 4733 §2.2.1


@st.composite
def streams(draw):
    n = draw(st.integers(2, 120))
    seq0 = draw(st.integers(0, 65535))
    ts0 = draw(st.integers(0, 2**32 - 1))
    steps = draw(st.lists(st.integers(-3, 4), min_size=n, max_size=n))
    seq, ts, t = [], [], []
    s, now = 0, 0.0
    for k in steps:
        s += k if draw(st.booleans()) else 1
        seq.append((seq0 + s) % 65536)
        ts.append((ts0 + s * 160) % 2**32)
        now += draw(st.floats(0, 60))
        t.append(now)
    pt = draw(st.lists(st.sampled_from([0, 0, 0, 8, 13, 96]), min_size=n, max_size=n))
    marker = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    clock = [clock_rate_for(p) for p in pt]
    return t, ts, seq, pt, marker, clock


@settings(max_examples=300, deadline=None)
@given(streams())
def test_vectorised_equals_reference(case) -> None:
    v, r = run_both(*case)
    assert (v.packets, v.expected, v.lost, v.cycles, v.seq_errors, v.wrong_timestamps) == (
        r.packets, r.expected, r.lost, r.cycles, r.seq_errors, r.wrong_timestamps,
    )  # fmt: skip
    for f in ("max_delta", "min_delta", "mean_delta", "max_jitter", "min_jitter", "mean_jitter"):
        assert getattr(v, f) == pytest.approx(getattr(r, f), rel=1e-9, abs=1e-9), f
    assert v.problem == r.problem


def test_long_stream_ewma_stays_exact() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    t = np.cumsum(rng.uniform(10, 30, n))
    v, r = run_both(t.tolist(), [i * 160 for i in range(n)], [i % 65536 for i in range(n)],
                    [0] * n, [False] * n, [8000] * n)  # fmt: skip
    assert v.max_jitter == pytest.approx(r.max_jitter, rel=1e-9)
    assert v.mean_jitter == pytest.approx(r.mean_jitter, rel=1e-9)


def test_burst_metrics_by_hand() -> None:
    # 100 packets, lost: 10,11,12 (burst), 14 (2 received between → same burst), 60 (isolated).
    rx = np.array([i for i in range(100) if i not in (10, 11, 12, 14, 60)])
    b = burst_metrics(rx)
    assert b.burst_duration == 5  # seq 10..14
    assert b.burst_density == pytest.approx(4 / 5)
    assert b.gap_duration == 95
    assert b.gap_density == pytest.approx(1 / 95)
    # 3 loss runs over 95 received and 5 lost: p = 3/95, q = 3/5, BurstR = 1/(p+q)
    assert b.burst_r == pytest.approx(1 / (3 / 95 + 3 / 5))


def test_burst_metrics_no_loss() -> None:
    b = burst_metrics(np.arange(50))
    assert b.burst_r == 1.0 and b.burst_duration == 0 and b.gap_duration == 50
