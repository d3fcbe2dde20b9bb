"""``callward phone call --ice``: ICE (RFC 8445, aioice) for the CLI phone's media: host,
server-reflexive (``--stun``) and relayed (``--turn``) candidates in its offer, connectivity
checks against the answer's candidates, then paced G.711 RTP over the nominated pair
(``ua/ice_media.py``). Reports the kind of candidate that won, never addresses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from callward.cli.exits import fail as _fail
from callward.cli.exits import hostport

if TYPE_CHECKING:
    from callward.ua import Phone
    from callward.ua.call_handle import Call
    from callward.ua.ice_session import IceAgent

__all__ = ["IceFlags", "ice_flags", "ice_talk", "start_ice"]


@dataclass(frozen=True, slots=True)
class IceFlags:
    stun: tuple[str, int] | None = None
    turn: tuple[str, int, str, str] | None = None  # host, port, user, password
    relay_only: bool = False


def ice_flags(ice: bool, stun: str | None, turn: str | None, relay_only: bool) -> IceFlags | None:
    """Validate ``--ice --stun HOST:PORT --turn USER:PASS@HOST:PORT --relay-only``."""
    if not ice:
        if stun or turn or relay_only:
            raise _fail("--stun, --turn and --relay-only need --ice")
        return None
    turn_server = None
    if turn is not None:
        cred, at, where = turn.rpartition("@")
        user, colon, password = cred.partition(":")
        if not at or not colon or not user:
            raise _fail(f"--turn must be USER:PASS@HOST:PORT, not {turn!r}")
        host, port = hostport(where, "--turn")
        turn_server = (host, port, user, password)
    if relay_only and turn_server is None:
        raise _fail("--relay-only needs --turn")
    return IceFlags(hostport(stun, "--stun") if stun else None, turn_server, relay_only)


async def start_ice(phone: Phone, flags: IceFlags, *, controlling: bool) -> IceAgent:
    """Gather candidates now; the phone's offers and answers then carry them."""
    from callward.nat.network_cache import NetworkCache, NetworkKey
    from callward.nat.turn_choice import TurnServer
    from callward.ua.ice_session import IceAgent

    turns = [TurnServer(*flags.turn)] if flags.turn else []
    agent = IceAgent(
        controlling=controlling, network=NetworkKey("cli", "default"),
        pair_cache=NetworkCache(ttl=3600), stun_server=flags.stun, turn_servers=turns,
        relay_only=flags.relay_only,
    )  # fmt: skip
    await agent.gather(fast=False)
    phone.ice = agent
    return agent


async def ice_talk(call: Call, agent: IceAgent, seconds: float, timeout: float) -> dict[str, Any]:
    """Connectivity checks against the peer's answer, then ``seconds`` of RTP both ways."""
    import asyncio

    from callward.ua.ice_media import IceAudio

    assert call.leg.remote_sdp is not None
    pair = await agent.connect_sdp(call.leg.remote_sdp, timeout=timeout)
    audio = IceAudio(agent)
    audio.start()
    try:
        sent = await audio.send_audio(max(1, int(seconds / 0.02)))
        await asyncio.sleep(0.3)  # the last packets in flight
    finally:
        await audio.close()
    return {
        "ice": {"local_candidate": pair.local_type, "relayed": pair.turn_server is not None},
        "rtp": {"packets_sent": sent, "packets_received": audio.packets_received},
    }
