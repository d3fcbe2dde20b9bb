"""The vectorised adaptive playout model equals the media plane's AdaptiveBuffer (the pure
per-packet reference) on arbitrary arrival patterns: jitter, reordering, loss, talkspurt gaps,
duplicates and 32-bit timestamp wrap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.quality.playout import adaptive_playout, adaptive_reference


@st.composite
def streams(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    n = draw(st.integers(1, 900))
    clock = draw(st.sampled_from([8000, 16000, 48000]))
    step = clock // 50
    ts0 = draw(st.integers(0, (1 << 32) - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ts = ts0 + np.arange(n, dtype=np.int64) * step
    # talkspurt gaps (DTX) at random places
    for _ in range(draw(st.integers(0, 5))):
        at = int(rng.integers(0, n))
        ts[at:] += step * int(rng.integers(3, 200))
    jitter = draw(st.floats(0.0, 0.2))
    arrival = 1000.0 + (ts - ts0) / clock + rng.exponential(jitter + 1e-9, n)
    if draw(st.booleans()):  # duplicates
        k = int(rng.integers(0, n))
        arrival = np.append(arrival, arrival[k] + 0.001)
        ts = np.append(ts, ts[k])
    keep = rng.random(len(ts)) > draw(st.floats(0, 0.3))  # loss
    keep[0] = True
    order = np.argsort(arrival[keep], kind="stable")  # a capture lists packets as they arrive
    return arrival[keep][order], ts[keep][order], clock


@settings(max_examples=150, deadline=None)
@given(streams())
def test_vectorised_adaptive_equals_the_buffer(s: tuple[np.ndarray, np.ndarray, int]) -> None:
    arrival, ts, clock = s
    got = adaptive_playout(arrival, ts, clock)
    ref = adaptive_reference(arrival, ts, clock)
    assert np.array_equal(got.late, ref.late)
    assert got.mean_delay_ms == pytest.approx(ref.mean_delay_ms, rel=1e-9, abs=1e-9)


def test_long_stream_with_wrap_by_hand() -> None:
    # 60 s of 20 ms packets starting just before the 32-bit wrap, one 150 ms spike at 30 s
    n = 3000
    ts = ((1 << 32) - 16000 + np.arange(n, dtype=np.int64) * 160) % (1 << 32)
    arrival = 5.0 + np.arange(n) * 0.02
    arrival[1500] += 0.15
    got = adaptive_playout(arrival, ts, 8000)
    ref = adaptive_reference(arrival, ts, 8000)
    assert np.array_equal(got.late, ref.late) and got.late[1500]
