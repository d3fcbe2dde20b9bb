"""ICE for a phone's media (RFC 8445) with aioice, plus what a mobile phone adds on top: the
TURN server chosen by measured RTT and region (:mod:`callward.nat.turn_choice`), the STUN
mapped address and the last good candidate pair cached per network
(:mod:`callward.nat.network_cache`), and a *fast path* that, on a network seen before, gathers
only the kind of candidate that worked there (host, srflx via STUN, or relay via that TURN
server) instead of all of them::

    agent = IceAgent(controlling=True, network=key, stun_server=stun, turn_servers=servers,
                     pair_cache=pairs, stun_cache=mapped)
    candidates = await agent.gather()          # fast path when the cache knows this network
    pair = await agent.connect(remote_candidates, ufrag, pwd)
    await agent.send(data); data = await agent.recv()

When the fast path cannot connect, :meth:`IceAgent.gather` with ``fast=False`` gathers every
candidate type (an ICE restart for the peer: new credentials, new candidates).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import aioice

from callward.errors import RemoteProtocolError, TransportError
from callward.nat.network_cache import CandidatePair, NetworkCache, NetworkKey
from callward.nat.stun import binding_request, parse_binding_response
from callward.nat.turn_choice import TurnChoice, TurnServer, rank_turn_servers
from callward.ua.ice_sdp import default_candidate, ice_lines, remote_ice

__all__ = ["IceAgent", "measure_rtt"]

Address = tuple[str, int]


class _Probe(asyncio.DatagramProtocol):
    def __init__(self, tid: bytes, fut: asyncio.Future[Address]) -> None:
        self.tid, self.fut = tid, fut

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.fut.done():
            return
        with contextlib.suppress(RemoteProtocolError):
            self.fut.set_result(parse_binding_response(data, self.tid))


async def measure_rtt(server: Address, *, timeout: float = 0.5, tries: int = 2) -> float | None:
    """Round trip of a STUN Binding to ``server`` in seconds (best of ``tries``), None when it
    never answered. TURN servers answer Binding requests too (RFC 8656 §3)."""
    loop = asyncio.get_running_loop()
    best: float | None = None
    for _ in range(tries):
        req = binding_request()
        fut: asyncio.Future[Address] = loop.create_future()
        probe = _Probe(req.transaction_id, fut)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda probe=probe: probe,  # type: ignore[misc]
                remote_addr=server,
            )
        except OSError:
            return None
        try:
            start = loop.time()
            transport.sendto(req.data)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout)
                rtt = loop.time() - start
                best = rtt if best is None else min(best, rtt)
        finally:
            transport.close()
    return best


class IceAgent:
    """One ICE session (one component) for one call's audio; see the module docstring."""

    def __init__(
        self,
        *,
        controlling: bool,
        network: NetworkKey,
        pair_cache: NetworkCache[CandidatePair],
        stun_cache: NetworkCache[Address] | None = None,
        stun_server: Address | None = None,
        turn_servers: Sequence[TurnServer] = (),
        region: str = "",
        use_ipv6: bool = False,
        relay_only: bool = False,
    ) -> None:
        self.controlling = controlling
        self.network = network
        self.pair_cache = pair_cache
        self.stun_cache = stun_cache
        self.stun_server = stun_server
        self.turn_servers = tuple(turn_servers)
        self.region = region
        self.use_ipv6 = use_ipv6
        self.relay_only = relay_only  # hide our addresses: offer relay candidates only
        self.ranking: list[TurnChoice] = []
        self.turn: TurnServer | None = None
        self.path = ""  # "cached" (fast path) or "full"
        self.selected: CandidatePair | None = None
        self.remote_ufrag: str | None = None  # the peer's ufrag we last ran checks with
        self._conn: aioice.Connection | None = None
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ gathering
    async def rank_turn(self, timeout: float = 0.5) -> list[TurnChoice]:
        """Measure every TURN server (concurrently) and rank them (RTT, region)."""
        rtts = await asyncio.gather(
            *(measure_rtt((s.host, s.port), timeout=timeout) for s in self.turn_servers)
        )
        measured = {s.name: r for s, r in zip(self.turn_servers, rtts, strict=True)}
        self.ranking = rank_turn_servers(self.turn_servers, measured, region=self.region)
        return self.ranking

    async def gather(self, *, fast: bool = True) -> list[aioice.Candidate]:
        """Gather local candidates: on a known network only the kind that worked there (the
        cached pair's type and TURN server), else host + srflx + relay via the best TURN."""
        await self.close()
        cached = self.pair_cache.get(self.network, self._loop.time()) if fast else None
        stun: Address | None = self.stun_server
        turn: TurnServer | None = None
        policy = aioice.TransportPolicy.RELAY if self.relay_only else aioice.TransportPolicy.ALL
        if cached is not None:
            self.path = "cached"
            if cached.local_type == "relay":
                turn = next((s for s in self.turn_servers if s.name == cached.turn_server), None)
                policy = aioice.TransportPolicy.RELAY
            if cached.local_type in ("host", "relay"):
                stun = None  # no STUN round trip needed for what worked here
        else:
            self.path = "full"
            if self.turn_servers:
                ranked = await self.rank_turn()
                turn = ranked[0].server if ranked else None
        if cached is not None and cached.local_type == "relay" and turn is None:
            self.path = "full"  # that TURN server is no longer configured
            return await self.gather(fast=False)
        self.turn = turn
        self._conn = aioice.Connection(
            ice_controlling=self.controlling,
            stun_server=stun,
            turn_server=(turn.host, turn.port) if turn else None,
            turn_username=turn.username if turn else None,
            turn_password=turn.password if turn else None,
            use_ipv6=self.use_ipv6,
            transport_policy=policy,
        )
        await self._conn.gather_candidates()
        for c in self._conn.local_candidates:
            if c.type == "srflx" and self.stun_cache is not None:
                self.stun_cache.put(self.network, (c.host, c.port), self._loop.time())
        return list(self._conn.local_candidates)

    @property
    def credentials(self) -> tuple[str, str]:
        """Our ice-ufrag and ice-pwd (RFC 8839 §5.4) for the peer."""
        conn = self._require()
        return conn.local_username, conn.local_password

    def sdp_lines(self) -> list[str]:
        """Our ``a=ice-ufrag``/``a=ice-pwd``/``a=candidate`` lines (RFC 8839 §5)."""
        ufrag, pwd = self.credentials
        return ice_lines(ufrag, pwd, self._require().local_candidates)

    def default_address(self) -> Address:
        """Where ``c=``/``m=`` point: the default candidate (relay, else srflx, else host)."""
        cand = default_candidate(self._require().local_candidates)
        if cand is None:
            raise TransportError("ICE gathered no candidate")
        return cand.host, cand.port

    def needs_restart(self, sdp: bytes) -> bool:
        """A re-offer with new ICE credentials (RFC 8445 §9): we must gather afresh."""
        ice = remote_ice(sdp)
        return ice is not None and self.remote_ufrag is not None and ice.ufrag != self.remote_ufrag

    # ------------------------------------------------------------------ checks
    async def connect_sdp(self, sdp: bytes, *, timeout: float = 10.0) -> CandidatePair:
        """Run the checks against the ICE parameters of the peer's offer or answer."""
        ice = remote_ice(sdp)
        if ice is None:
            raise TransportError("the peer's SDP has no ICE parameters")
        return await self.connect(ice.candidates, ice.ufrag, ice.pwd, timeout=timeout)

    async def connect(
        self,
        remote: Sequence[aioice.Candidate],
        username: str,
        password: str,
        *,
        timeout: float = 10.0,
    ) -> CandidatePair:
        """Run connectivity checks against the peer's candidates; the nominated pair is
        cached for this network, to be tried first next time."""
        conn = self._require()
        conn.remote_username, conn.remote_password = username, password
        self.remote_ufrag = username
        for c in remote:
            await conn.add_remote_candidate(c)
        await conn.add_remote_candidate(None)
        try:
            await asyncio.wait_for(conn.connect(), timeout)
        except (TimeoutError, ConnectionError) as exc:
            if self.path == "cached":
                self.pair_cache.invalidate(self.network)  # stale: next time gather fully
            raise TransportError(f"ICE failed ({self.path} path): {exc or 'timeout'}") from None
        nominated = getattr(conn, "_nominated", {}).get(1)
        if nominated is None:
            raise TransportError("ICE connected without a nominated pair")
        local = nominated.local_candidate
        pair = CandidatePair(
            local.type,
            nominated.remote_addr,
            self.turn.name if local.type == "relay" and self.turn else None,
        )
        self.selected = pair
        self.pair_cache.put(self.network, pair, self._loop.time())
        return pair

    async def send(self, data: bytes) -> None:
        await self._require().send(data)

    async def recv(self) -> bytes:
        return await self._require().recv()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _require(self) -> aioice.Connection:
        if self._conn is None:
            raise TransportError("ICE agent has not gathered candidates")
        return self._conn
