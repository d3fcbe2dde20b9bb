"""Per-network caches and TURN server choice (sans-IO)."""

from __future__ import annotations

import pytest

from callward.errors import ConfigError
from callward.nat.network_cache import CandidatePair, NetworkCache, NetworkKey
from callward.nat.turn_choice import TurnServer, rank_turn_servers, turn_overhead

HOME = NetworkKey("wlan0", "192.168.1.1")
CELL = NetworkKey("rmnet0", "10.64.0.1")


def test_entries_expire_and_networks_are_kept_apart() -> None:
    cache: NetworkCache[tuple[str, int]] = NetworkCache(ttl=300)
    cache.put(HOME, ("203.0.113.7", 40000), now=0.0)
    assert cache.get(HOME, 299.0) == ("203.0.113.7", 40000)
    assert cache.get(CELL, 10.0) is None
    assert cache.get(HOME, 300.0) is None and len(cache) == 0
    assert (cache.hits, cache.misses) == (1, 2)


def test_lru_bound_and_invalidate() -> None:
    cache: NetworkCache[int] = NetworkCache(ttl=100, max_entries=2)
    nets = [NetworkKey("wlan0", f"gw{i}") for i in range(3)]
    for i, n in enumerate(nets):
        cache.put(n, i, now=0.0)
    assert len(cache) == 2 and cache.get(nets[0], 1.0) is None
    cache.invalidate(nets[2])
    assert cache.get(nets[2], 1.0) is None and cache.get(nets[1], 1.0) == 1


def test_keys_never_show_the_gateway() -> None:
    assert "192.168" not in repr(HOME) and "192.168" not in HOME.digest()
    assert HOME.digest() == NetworkKey("wlan0", "192.168.1.1").digest() != CELL.digest()
    with pytest.raises(ConfigError):
        CandidatePair("bogus", ("1.2.3.4", 1))
    with pytest.raises(ConfigError):
        NetworkCache(ttl=0)


def test_turn_ranking_by_rtt_and_region() -> None:
    eu = TurnServer("turn-eu", 3478, "u", "p", region="eu")
    us = TurnServer("turn-us", 3478, "u", "p", region="us")
    dead = TurnServer("turn-x", 3478, "u", "p", region="eu")
    rtts = {"turn-eu:3478": 0.040, "turn-us:3478": 0.025, "turn-x:3478": None}
    ranked = rank_turn_servers([eu, us, dead], rtts, region="eu")
    assert [c.server for c in ranked] == [eu, us], "in-region wins within the penalty"
    ranked = rank_turn_servers([eu, us], {**rtts, "turn-us:3478": 0.005}, region="eu")
    assert ranked[0].server is us, "much faster out of region wins"
    assert [c.server for c in rank_turn_servers([eu, us], rtts)] == [us, eu]
    assert "p" not in repr(eu).replace("TurnServer", "")


def test_turn_overhead_matches_rfc_8656_framing() -> None:
    # G.711 20 ms SRTP: 12 RTP + 160 payload + 10 tag = 182 B; IPv4+UDP 28 B.
    ch = turn_overhead(182)
    assert ch.header_bytes == 4 and ch.fraction == pytest.approx(4 / 210)
    assert ch.bytes_per_minute == 4 * 50 * 60
    ind = turn_overhead(182, channel=False)
    assert ind.header_bytes == 36 + 2  # STUN 20 + XOR-PEER-ADDRESS 12 + DATA 4, padded to 4
    with pytest.raises(ConfigError):
        turn_overhead(0)
