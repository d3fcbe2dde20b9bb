"""Choosing a TURN server (RFC 8656) and pricing the relay, sans-IO.

The phone measures the round trip to each configured server (a STUN Binding, which every TURN
server answers) and :func:`rank_turn_servers` orders them: unreachable servers drop out, a
server in our region wins over a slightly faster one elsewhere (data-residency and a shorter
media path to the peers of that region), and otherwise the lowest RTT wins.

:func:`turn_overhead` reports what relaying costs per media packet: 4 bytes of ChannelData
header (RFC 8656 §12.4) once a channel is bound, else a 36-byte Send/Data indication
(RFC 8656 §10-11), on top of the extra path through the relay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from callward.errors import ConfigError

__all__ = ["TurnChoice", "TurnOverhead", "TurnServer", "rank_turn_servers", "turn_overhead"]

CHANNEL_DATA_HEADER = 4  # RFC 8656 §12.4
SEND_INDICATION = 20 + 12 + 4  # STUN header + XOR-PEER-ADDRESS (IPv4) + DATA attribute header


@dataclass(frozen=True, slots=True)
class TurnServer:
    host: str
    port: int
    username: str
    password: str
    region: str = ""

    def __post_init__(self) -> None:
        if not self.host or not 0 < self.port < 65536:
            raise ConfigError(f"TURN server needs a host and a port 1..65535, not {self.port}")

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:  # no credentials in logs
        return f"TurnServer({self.name}, region={self.region!r})"


@dataclass(frozen=True, slots=True)
class TurnChoice:
    server: TurnServer
    rtt: float  # seconds, measured
    score: float  # rtt plus the out-of-region penalty; lower is better


def rank_turn_servers(
    servers: Sequence[TurnServer],
    rtts: Mapping[str, float | None],
    *,
    region: str = "",
    region_penalty: float = 0.030,
) -> list[TurnChoice]:
    """Reachable servers, best first. ``rtts`` maps :attr:`TurnServer.name` to the measured
    round trip in seconds (None or absent: no answer). A server outside ``region`` pays
    ``region_penalty`` seconds, so it wins only when it is that much faster."""
    if region_penalty < 0:
        raise ConfigError("region_penalty must be >= 0")
    out = []
    for s in servers:
        rtt = rtts.get(s.name)
        if rtt is None or rtt < 0:
            continue
        penalty = 0.0 if not region or s.region == region else region_penalty
        out.append(TurnChoice(s, rtt, rtt + penalty))
    return sorted(out, key=lambda c: (c.score, c.rtt, c.server.name))


@dataclass(frozen=True, slots=True)
class TurnOverhead:
    header_bytes: int  # added to every relayed packet
    fraction: float  # of the packet as sent without TURN (IP/UDP + payload)
    bytes_per_minute: float  # at the packet rate given


def turn_overhead(
    payload_bytes: int, *, packets_per_second: float = 50.0, channel: bool = True
) -> TurnOverhead:
    """Per-packet relay overhead for a media stream (``payload_bytes`` of RTP/SRTP each)."""
    if payload_bytes <= 0 or packets_per_second <= 0:
        raise ConfigError("payload_bytes and packets_per_second must be positive")
    header = CHANNEL_DATA_HEADER if channel else SEND_INDICATION + (-payload_bytes % 4)
    base = payload_bytes + 28  # IPv4 + UDP
    return TurnOverhead(header, header / base, header * packets_per_second * 60)
