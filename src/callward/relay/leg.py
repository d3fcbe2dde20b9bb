"""One side of a relayed call: its configuration, security policy, counters, and the media
socket with DSCP marking.

Security policy (issue 5): a leg carries SRTP unless it is *explicitly* marked ``trusted``
(a legacy PBX on a private network); a plain-RTP leg that is not trusted is refused when the
session is built, so the relay can never silently downgrade a call to cleartext.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from callward.errors import MediaError, PolicyError
from callward.rtp.srtp import SrtpKeying
from callward.rtp.stats import ReceiverStats

__all__ = ["DSCP_EF", "LegConfig", "LegCounters", "open_media_socket", "read_dscp"]

#: RFC 3246 / RFC 4594 §4.2: Expedited Forwarding for telephony bearer traffic.
DSCP_EF = 46


@dataclass(frozen=True, slots=True)
class LegConfig:
    """``srtp_rx``: the keying the peer sends with (its ``a=crypto``); ``srtp_tx``: the keying
    we send with (ours). ``remote`` is the SDP address; with ``latch`` the relay follows the
    address packets really come from (symmetric RTP, RFC 4961), which is what gets media
    through a NAT."""

    name: str
    bind_host: str = "127.0.0.1"
    bind_port: int = 0
    remote: tuple[str, int] | None = None
    srtp_rx: SrtpKeying | None = None
    srtp_tx: SrtpKeying | None = None
    trusted: bool = False
    latch: bool = True
    clock_rate: int = 8000

    def __post_init__(self) -> None:
        if (self.srtp_rx is None) != (self.srtp_tx is None):
            raise PolicyError(f"leg {self.name}: SRTP needs keys for both directions")
        if self.srtp_rx is None and not self.trusted:
            raise PolicyError(
                f"leg {self.name}: plain RTP is only allowed toward an explicitly trusted leg"
            )
        if not 0 <= self.bind_port <= 65535:
            raise MediaError(f"leg {self.name}: bad port {self.bind_port}")

    @property
    def secure(self) -> bool:
        return self.srtp_rx is not None


@dataclass(slots=True)
class LegCounters:
    """What one leg saw. ``stats`` holds RFC 3550 receiver statistics per SSRC."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    rtcp_in: int = 0
    auth_failures: int = 0
    replays: int = 0
    malformed: int = 0
    foreign: int = 0  # packets from an address we had not latched and could not verify
    no_destination: int = 0
    last_rx: float = 0.0
    payload_type: int | None = None
    rtt_ms: float | None = None  # relay <-> this leg's peer, from RTCP LSR/DLSR
    stats: dict[int, ReceiverStats] = field(default_factory=dict)
    # SRs received on this leg and forwarded: (sender SSRC, LSR value) -> arrival time
    sr_seen: dict[tuple[int, int], float] = field(default_factory=dict)

    def note_rtp(self, data: bytes, arrival: float, clock_rate: int) -> None:
        """Update receiver statistics from the (decrypted) RTP header."""
        if len(data) < 12:
            return
        seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
        st = self.stats.get(ssrc)
        if st is None:
            if len(self.stats) >= 8:  # bounded: a hostile peer cycling SSRCs gets no memory
                return
            st = self.stats[ssrc] = ReceiverStats(ssrc, clock_rate)
        self.payload_type = data[1] & 0x7F
        st.receive(seq, ts, arrival)

    def main_stats(self) -> ReceiverStats | None:
        if not self.stats:
            return None
        return max(self.stats.values(), key=lambda s: s.received)


def open_media_socket(host: str, port: int, dscp: int = DSCP_EF) -> socket.socket:
    """A non-blocking UDP socket with the DSCP in the IP TOS / IPv6 traffic class (the DSCP
    is the upper six bits of that octet, RFC 2474 §3)."""
    if not 0 <= dscp <= 63:
        raise MediaError(f"DSCP {dscp} out of range 0-63")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, dscp << 2)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, dscp << 2)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def read_dscp(sock: socket.socket) -> int:
    """The DSCP currently set on a socket (read back with getsockopt)."""
    if sock.family == socket.AF_INET6:
        return sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) >> 2
    return sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) >> 2
