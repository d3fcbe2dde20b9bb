"""The sender-side impairment shim against probability arithmetic done by hand, and together
with the RFC 3550 receiver statistics (sans-IO: simulated arrival times, no sockets)."""

from __future__ import annotations

import math
import random

import pytest

from callward.errors import ConfigError
from callward.rtp.stats import ReceiverStats
from callward.ua.impairment import Impairment, ImpairmentShim


def test_loss_rate_is_binomial_and_delays_uniform() -> None:
    shim = ImpairmentShim(Impairment(loss_pct=10, jitter_ms=40), random.Random(5))
    n = 20_000
    delays = [d for d in (shim.decide() for _ in range(n)) if d is not None]
    sigma = math.sqrt(n * 0.1 * 0.9)  # Binomial(n, 0.1)
    assert abs(shim.dropped - n * 0.1) < 4.5 * sigma
    assert shim.dropped + shim.passed == n == shim.dropped + len(delays)
    assert all(0.0 <= d <= 0.040 for d in delays)
    # U(0, 40 ms): mean 20 ms, sd 40/sqrt(12) ms; the sample mean is within 4.5 standard errors.
    se = 0.040 / math.sqrt(12) / math.sqrt(len(delays))
    assert abs(sum(delays) / len(delays) - 0.020) < 4.5 * se


def test_extremes_and_reproducibility() -> None:
    none = ImpairmentShim(Impairment(0, 0), random.Random(1))
    assert [none.decide() for _ in range(100)] == [0.0] * 100
    every = ImpairmentShim(Impairment(100, 10), random.Random(1))
    assert [every.decide() for _ in range(100)] == [None] * 100
    a = ImpairmentShim.seeded(Impairment(30, 20), 7, "alice")
    b = ImpairmentShim.seeded(Impairment(30, 20), 7, "alice")
    c = ImpairmentShim.seeded(Impairment(30, 20), 7, "bob")
    seq_a = [a.decide() for _ in range(200)]
    assert seq_a == [b.decide() for _ in range(200)]
    assert seq_a != [c.decide() for _ in range(200)]


@pytest.mark.parametrize(
    ("loss", "jitter"), [(-1, 0), (100.5, 0), (math.nan, 0), (0, -1), (0, 5000), (0, math.nan)]
)
def test_out_of_range_is_a_config_error(loss: float, jitter: float) -> None:
    with pytest.raises(ConfigError):
        Impairment(loss, jitter)


def test_rfc3550_statistics_see_the_impairment() -> None:
    """5 % loss and U(0, 30 ms) extra delay on a 20 ms G.711 stream: the receiver's cumulative
    loss (A.3) equals the drops it could see, and the A.8 jitter estimate averages
    E|U1 - U2| = J/3 = 10 ms (the mean absolute difference of two uniform variables)."""
    shim = ImpairmentShim(Impairment(loss_pct=5, jitter_ms=30), random.Random(11))
    arrivals = []
    for i in range(4000):
        delay = shim.decide()
        if delay is not None:
            arrivals.append((i * 0.020 + 0.005 + delay, i))
    arrivals.sort()  # the network delivers in arrival order, so large delays reorder
    stats = ReceiverStats(0x1234, 8000)
    samples = []
    for t, i in arrivals:
        stats.receive((1000 + i) & 0xFFFF, (i * 160) & 0xFFFFFFFF, t)
        if i > 500:
            samples.append(stats.snapshot().jitter_ms)
    snap = stats.snapshot()
    last_sent = max(i for _, i in arrivals)
    dropped_in_range = shim.dropped - (3999 - last_sent)  # drops after the last arrival are unseen
    # The first packet is on probation (A.1), so the counts start at the second one.
    assert snap.cumulative_lost == dropped_in_range
    assert snap.expected == last_sent  # packets 1..last_sent
    assert abs(sum(samples) / len(samples) - 10.0) < 1.0
