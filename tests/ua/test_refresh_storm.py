"""The refresh-storm figure of docs/benchmarks.md (benchmarks/refresh_storm.py), small: the
phones' backoff with jitter sends far fewer requests into an outage and spreads the recovery."""

from __future__ import annotations

from refresh_storm import simulate


def test_backoff_beats_fixed_retry() -> None:
    ours = simulate(300, 120.0, 0.1, naive=False, seed=1)
    peer = simulate(300, 120.0, 0.1, naive=True, seed=1)
    assert ours["requests_during_outage"] * 5 < peer["requests_during_outage"]
    assert ours["peak_per_second_after"] * 5 < peer["peak_per_second_after"] == 300
    assert ours["all_fresh_after_s"] <= 31.0  # the cap (30 s) bounds the wait after recovery
