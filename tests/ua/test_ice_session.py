"""ICE with aioice against real TURN servers (Debian coturn on loopback, started and killed by
PID here): TURN chosen by measured RTT and region among two live servers and a dead one, relay
candidates, media both ways through the relay, and the last good pair cached per network so
the next call on that network takes the fast path (no RTT probing, one TURN server)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aioice
import pytest

from callward.nat.network_cache import CandidatePair, NetworkCache, NetworkKey
from callward.nat.turn_choice import TurnServer
from callward.ua.ice_session import IceAgent, measure_rtt
from peers import free_port, stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

TURNSERVER = shutil.which("turnserver")
HOME = NetworkKey("wlan0", "192.168.1.1")


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[list[TurnServer]]:
    if TURNSERVER is None:
        pytest.skip("why: coturn (turnserver) not installed")
    procs, servers = [], []
    for i, region in enumerate(("us", "eu")):
        port = free_port()
        log = tmp_path / f"turn-{port}.log"
        procs.append(
            subprocess.Popen(
                [TURNSERVER, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
                 "--realm=test", "--lt-cred-mech", "--user=u:p", "--no-tls", "--no-dtls",
                 "--no-cli", f"--min-port={40000 + i * 500}", f"--max-port={40499 + i * 500}",
                 f"--log-file={log}", "--simple-log", f"--pidfile={tmp_path / f'{port}.pid'}",
                 f"--userdb={tmp_path / f'turn-{port}.db'}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        servers.append(TurnServer("127.0.0.1", port, "u", "p", region=region))
    try:
        deadline = time.monotonic() + 10
        for s in servers:
            while asyncio.run(measure_rtt((s.host, s.port), timeout=0.2)) is None:
                assert time.monotonic() < deadline, "coturn did not start"
        yield servers
    finally:
        for p in procs:
            stop(p)


async def _peer() -> aioice.Connection:
    peer = aioice.Connection(ice_controlling=False)
    await peer.gather_candidates()
    return peer


async def _call(agent: IceAgent) -> tuple[CandidatePair, float]:
    """One ICE session between ``agent`` and a plain aioice peer; data both ways."""
    peer = await _peer()
    start = time.monotonic()
    local = await agent.gather()
    gather_s = time.monotonic() - start
    for c in local:
        await peer.add_remote_candidate(c)
    await peer.add_remote_candidate(None)
    peer.remote_username, peer.remote_password = agent.credentials
    pair, _ = await asyncio.gather(
        agent.connect(peer.local_candidates, peer.local_username, peer.local_password),
        peer.connect(),
    )
    await agent.send(b"ping")
    assert await asyncio.wait_for(peer.recv(), 5) == b"ping"
    await peer.send(b"pong")
    assert await asyncio.wait_for(agent.recv(), 5) == b"pong"
    await peer.close()
    return pair, gather_s


async def test_turn_by_rtt_and_region_relay_media_and_cached_fast_path(
    coturn: list[TurnServer],
) -> None:
    dead = TurnServer("127.0.0.1", free_port(), "u", "p", region="eu")  # nobody listens
    pairs: NetworkCache[CandidatePair] = NetworkCache(ttl=3600)
    agent = IceAgent(
        controlling=True, network=HOME, pair_cache=pairs, turn_servers=[dead, *coturn],
        region="eu", relay_only=True,
    )  # fmt: skip
    try:
        pair, full_s = await _call(agent)
        assert agent.path == "full"
        assert [c.server for c in agent.ranking] == [coturn[1], coturn[0]], (
            "the dead server is dropped; in-region eu wins over us on loopback RTTs"
        )
        assert all(c.rtt < 0.2 for c in agent.ranking)
        assert pair.local_type == "relay" and pair.turn_server == coturn[1].name
        assert pairs.get(HOME, asyncio.get_running_loop().time()) == pair
        # Next call on the same network: the cached pair's TURN server only, no probing.
        agent.ranking = []
        again, cached_s = await _call(agent)
        assert agent.path == "cached" and agent.ranking == [], "no RTT measurement"
        assert again.local_type == "relay" and again.turn_server == coturn[1].name
        assert cached_s < full_s, f"fast path {cached_s:.3f}s vs full {full_s:.3f}s"
    finally:
        await agent.close()


async def test_full_gathering_has_host_and_relay_and_caches_what_won(
    coturn: list[TurnServer],
) -> None:
    pairs: NetworkCache[CandidatePair] = NetworkCache(ttl=3600)
    agent = IceAgent(
        controlling=True, network=HOME, pair_cache=pairs, turn_servers=coturn,
        stun_server=(coturn[0].host, coturn[0].port),
    )  # fmt: skip
    try:
        local = await agent.gather()
        types = {c.type for c in local}
        assert {"host", "relay"} <= types, types
        await agent.close()
        pair, _ = await _call(agent)
        assert agent.path == "full"
        # A new call on the same network gathers only the kind of candidate that won.
        cached_types = {c.type for c in await agent.gather()}
        assert agent.path == "cached"
        if pair.local_type in ("host", "relay"):
            assert cached_types == {pair.local_type}, (pair, cached_types)
    finally:
        await agent.close()


async def test_last_good_pair_in_the_coherent_cache_survives_a_restart(
    coturn: list[TurnServer],
) -> None:
    """The phone's ICE cache is its one CoherentCache (ua/device_cache.py): the pair that won
    is kept per network, goes through a snapshot (the keystore's ``device-cache`` record) and
    gives the next run the fast path; on another network nothing is reused."""
    from callward.ua.cache import CoherentCache
    from callward.ua.device_cache import DeviceNetworkCache

    cache = CoherentCache()
    cache.network_changed(HOME.digest(), 0.0)
    pairs: DeviceNetworkCache[CandidatePair] = DeviceNetworkCache(cache, "ice", 3600.0)
    agent = IceAgent(controlling=True, network=HOME, pair_cache=pairs, turn_servers=coturn,
                     region="eu", relay_only=True)  # fmt: skip
    try:
        pair, _ = await _call(agent)
        assert agent.path == "full"
    finally:
        await agent.close()
    restored = CoherentCache()  # the next run of the phone
    restored.restore(cache.snapshot())
    again_pairs: DeviceNetworkCache[CandidatePair] = DeviceNetworkCache(restored, "ice", 3600.0)
    agent = IceAgent(controlling=True, network=HOME, pair_cache=again_pairs,
                     turn_servers=coturn, region="eu", relay_only=True)  # fmt: skip
    try:
        again, _ = await _call(agent)
        assert agent.path == "cached" and again.turn_server == pair.turn_server
    finally:
        await agent.close()
    office = NetworkKey("wlan1", "10.0.0.1")
    restored.network_changed(office.digest(), 0.0)
    assert again_pairs.get(office, asyncio.get_running_loop().time()) is None
