"""Keep-alive sizing against a simulated NAT whose bindings live ``lifetime`` seconds."""

from __future__ import annotations

import random

import pytest

from callward.errors import ConfigError
from callward.nat.keepalive import DEFAULT_INTERVAL, KeepAlivePolicy, KeepAliveSizer


def _run(
    lifetime: float,
    policy: KeepAlivePolicy,
    rounds: int,
    seed: int = 1,
    sizer: KeepAliveSizer | None = None,
) -> KeepAliveSizer:
    """A NAT that gives a new mapped port when a binding sat idle longer than ``lifetime``."""
    rng = random.Random(seed)
    sizer = sizer or KeepAliveSizer(policy)
    port = 40000 + sizer.lost
    for _ in range(rounds):
        idle = sizer.next_delay(rng)
        if idle > lifetime:
            port += 1  # the NAT forgot us; the keep-alive opened a new binding
        sizer.on_result(True, ("203.0.113.1", port))
    return sizer


@pytest.mark.parametrize("lifetime", [45.0, 120.0, 300.0])
def test_interval_learns_the_binding_lifetime_then_stops_losing_it(lifetime: float) -> None:
    policy = KeepAlivePolicy("stun", 108)
    sizer = _run(lifetime, policy, 60)
    assert sizer.bad is not None and sizer.bad > lifetime * 0.99, "it found the lifetime"
    assert lifetime * 0.4 <= sizer.interval <= lifetime, sizer.interval
    lost = sizer.lost
    _run(lifetime, policy, 100, seed=9, sizer=sizer)
    assert sizer.lost == lost, "once learned, no more lost bindings"
    # Longer than the RFC 5626 default of 29 s when the NAT allows it: fewer bytes per hour.
    if lifetime > 60:
        assert sizer.interval > DEFAULT_INTERVAL["stun"]


def test_bytes_per_hour_cap_floors_the_interval_and_says_so() -> None:
    policy = KeepAlivePolicy("stun", 108, bytes_per_hour_cap=108 * 60)  # 60 keep-alives/h
    assert policy.floor == 60.0
    sizer = _run(30.0, policy, 40)
    assert sizer.interval >= 60.0 and sizer.bytes_per_hour <= 108 * 60 + 1e-9
    assert sizer.budget_limited, "the cap is above what this NAT survives: reported"
    assert not _run(300.0, policy, 40).budget_limited


def test_flow_timer_wins_and_no_pong_shrinks() -> None:
    sizer = KeepAliveSizer(KeepAlivePolicy("crlf", 60))
    assert sizer.interval == DEFAULT_INTERVAL["crlf"]
    sizer.set_flow_timer(50)
    rng = random.Random(1)
    d = sizer.next_delay(rng)
    assert 40.0 <= d <= 50.0  # RFC 5626 §4.4.1: 80-100 % of Flow-Timer
    sizer.on_result(True)
    assert sizer.interval == 50.0, "no growth past the registrar's Flow-Timer"
    sizer.next_delay(rng)
    sizer.on_result(False)
    assert sizer.interval < 50.0 and sizer.lost == 1


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "udp"},
        {"min_interval": 0.5},
        {"min_interval": 100, "max_interval": 50},
        {"bytes_per_keepalive": 0},
        {"bytes_per_hour_cap": -1},
        {"growth": 1.0},
    ],
)
def test_bad_policy_is_a_config_error(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"method": "stun", "bytes_per_keepalive": 100}
    args.update(kw)
    with pytest.raises(ConfigError):
        KeepAlivePolicy(**args)  # type: ignore[arg-type]
