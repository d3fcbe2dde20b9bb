"""One side of a relayed call: its configuration, security policy, counters, and the media
socket with DSCP marking.

Security policy (issue 5): a leg carries SRTP unless it is *explicitly* marked ``trusted``
(a legacy PBX on a private network); a plain-RTP leg that is not trusted is refused when the
session is built, so the relay can never silently downgrade a call to cleartext.
"""

from __future__ import annotations

import bisect
import random
import socket
import struct
from dataclasses import dataclass, field

from callward.errors import MediaError, PolicyError
from callward.rtp.srtp import SrtpKeying
from callward.rtp.stats import ReceiverStats

__all__ = [
    "DSCP_EF",
    "LegConfig",
    "LegCounters",
    "open_media_pair",
    "open_media_socket",
    "read_dscp",
]

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
    #: False for peers that did not negotiate rtcp-mux (RFC 5761): RTCP then uses a second
    #: socket on the RTP port + 1, toward ``remote_rtcp`` or the peer's RTP port + 1
    #: (RFC 3550 §11; an SDP a=rtcp attribute, RFC 3605, sets ``remote_rtcp``).
    rtcp_mux: bool = True
    remote_rtcp: tuple[str, int] | None = None
    #: how this leg's peer sends and expects DTMF: "rfc4733" (telephone-event, payload type
    #: ``dtmf_pt``), "inband" (tones in G.711 audio) or "info" (SIP INFO, handled by the edge);
    #: the relay converts when the two legs differ (see ``relay.dtmf_path``)
    dtmf: str = "rfc4733"
    dtmf_pt: int = 101
    #: the leg carries Opus: drive an OpusRateController from the peer's RTCP reports and
    #: publish a MediaAdaptation event on each decision change
    rate_control: bool = False

    def __post_init__(self) -> None:
        if (self.srtp_rx is None) != (self.srtp_tx is None):
            raise PolicyError(f"leg {self.name}: SRTP needs keys for both directions")
        if self.srtp_rx is None and not self.trusted:
            raise PolicyError(
                f"leg {self.name}: plain RTP is only allowed toward an explicitly trusted leg"
            )
        if self.dtmf not in ("rfc4733", "inband", "info"):
            raise MediaError(f"leg {self.name}: DTMF mode must be rfc4733, inband or info")
        if not 96 <= self.dtmf_pt <= 127:
            raise MediaError(f"leg {self.name}: telephone-event payload type must be dynamic")
        if not 0 <= self.bind_port <= 65535:
            raise MediaError(f"leg {self.name}: bad port {self.bind_port}")
        if not self.rtcp_mux and self.bind_port and (self.bind_port % 2 or self.bind_port > 65534):
            raise MediaError(f"leg {self.name}: RTP port must be even with RTCP on port + 1")

    @property
    def rtcp_destination(self) -> tuple[str, int] | None:
        if self.remote_rtcp is not None:
            return self.remote_rtcp
        if self.remote is None:
            return None
        return self.remote[0], self.remote[1] + 1

    @property
    def secure(self) -> bool:
        return self.srtp_rx is not None


@dataclass(slots=True)
class LegCounters:
    """What one leg saw. ``stats`` holds RFC 3550 receiver statistics per SSRC."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0  # RTP and RTCP sent to this leg's peer
    bytes_out: int = 0
    rtcp_in: int = 0
    rtcp_out: int = 0
    auth_failures: int = 0
    replays: int = 0
    malformed: int = 0
    foreign: int = 0  # packets from an address we had not latched and could not verify
    no_destination: int = 0
    last_rx: float = 0.0
    payload_type: int | None = None
    rtt_ms: float | None = None  # relay <-> this leg's peer, from RTCP LSR/DLSR
    stats: dict[int, ReceiverStats] = field(default_factory=dict)
    #: packets per payload type (bounded), so the voice codec is known despite DTMF/CN
    pt_counts: dict[int, int] = field(default_factory=dict)
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
        pt = self.payload_type = data[1] & 0x7F
        if pt in self.pt_counts or len(self.pt_counts) < 16:
            self.pt_counts[pt] = self.pt_counts.get(pt, 0) + 1
        st.receive(seq, ts, arrival)

    def main_payload_type(self) -> int | None:
        """The payload type most packets carried (the voice codec, not telephone-event)."""
        if not self.pt_counts:
            return self.payload_type
        return max(self.pt_counts.items(), key=lambda kv: kv[1])[0]

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


def open_media_pair(
    host: str,
    port_min: int,
    port_max: int,
    dscp: int = DSCP_EF,
    *,
    attempts: int = 64,
    after: int | None = None,
) -> tuple[socket.socket, socket.socket]:
    """An RTP/RTCP socket pair on an even port and port + 1 from [port_min, port_max]
    (RFC 3550 §11), trying random even ports so concurrent relays rarely collide; with
    ``after`` (a relay's port pool), the even ports that follow it in turn, wrapping, so a
    port just freed is the last to be reused (a late packet of an ended call never reaches
    the next call on that port, as rtpengine does)."""
    evens = [p for p in range(port_min + port_min % 2, port_max, 2)]
    if not evens:
        raise MediaError(f"no even port pair in {port_min}-{port_max}")
    if after is None:
        order = random.sample(evens, min(attempts, len(evens)))
    else:
        k = bisect.bisect_right(evens, after)
        order = (evens[k:] + evens[:k])[: max(attempts, len(evens))]
    for port in order:
        try:
            rtp = open_media_socket(host, port, dscp)
        except OSError:
            continue
        try:
            return rtp, open_media_socket(host, port + 1, dscp)
        except OSError:
            rtp.close()
    raise MediaError(f"no free RTP/RTCP port pair in {port_min}-{port_max}")


def read_dscp(sock: socket.socket) -> int:
    """The DSCP currently set on a socket (read back with getsockopt)."""
    if sock.family == socket.AF_INET6:
        return sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS) >> 2
    return sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) >> 2
