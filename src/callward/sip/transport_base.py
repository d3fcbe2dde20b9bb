"""Shared vocabulary of the SIP transports (:mod:`callward.sip.transport`): addresses, limits,
wire events, statistics and the :class:`Transport` base class every transport implements."""

from __future__ import annotations

import abc
import asyncio
import functools
import ipaddress
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from callward.errors import SipParseError, TransportError
from callward.sip.connection_guard import ConnectionGuard
from callward.sip.message import Request, Response
from callward.sip.parser import DEFAULT_LIMITS, ParseLimits, parse_message
from callward.sip.peer import Peer
from callward.sip.replies import bad_request_reply

__all__ = [
    "LISTEN_BACKLOG",
    "Address",
    "OnData",
    "OnMessage",
    "OnPeer",
    "OnReject",
    "Tap",
    "Transport",
    "TransportLimits",
    "TransportStats",
    "WireEvent",
]

Address = tuple[str, int]
OnMessage = Callable[[Request | Response, Address, str, str | None], None]
OnData = Callable[[bytes, Peer], None]
"""Raw mode: one complete, unparsed message (a datagram or a framed stream message) and where
it came from; the receiver parses (the edge core does, so every message is parsed once)."""
OnPeer = Callable[[Peer], None]
OnReject = Callable[[str], None]

_CRLF = b"\r\n"
_PING = b"\r\n\r\n"  # RFC 5626 §4.4.1: client sends a double CRLF, server answers one CRLF
_ids = itertools.count(1)
# Accept queue of stream listeners (capped by net.core.somaxconn). asyncio's default of 100
# lets a burst of connection attempts overflow the kernel queue: the peer thinks it is
# connected but is accepted only after SYN-ACK retransmissions, seconds later.
LISTEN_BACKLOG = 4096


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Per-transport defences against abusive peers (values are per listener)."""

    max_connections: int = 1024  # stream/WS connections, inbound + outbound
    # Slowloris (see callward.sip.connection_guard): per-address caps, a bounded pool of
    # connections with no complete message yet, and deadlines for the first/each message.
    max_connections_per_ip: int = 256
    max_pending_per_ip: int = 16
    max_pending: int = 256
    first_message_timeout: float = 10.0  # accept (incl. TLS/WS handshake) → first message
    message_timeout: float = 20.0  # first byte of a message → its last byte
    max_buffer_bytes: int = 131072  # unframed bytes held for one connection
    idle_timeout: float = 300.0  # seconds without a byte (a CRLF ping counts) before closing
    connect_timeout: float = 5.0  # TCP connect + TLS/WS handshake
    udp_receive_buffer: int = 2**21  # SO_RCVBUF for UDP listeners (0: kernel default)
    udp_batch: int = 64  # datagrams read per wake-up of the UDP reader
    parse: ParseLimits = DEFAULT_LIMITS


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One message (or keep-alive) on the wire, as seen by a tap."""

    direction: Literal["in", "out"]
    data: bytes
    local: Address
    remote: Address
    transport: str
    connection_id: str | None


Tap = Callable[[WireEvent], None]


@dataclass(slots=True)
class TransportStats:
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    malformed: int = 0  # parse failures (answered with 400 or dropped)
    rejected_connections: int = 0  # refused at max_connections or a per-address cap
    closed_abusive: int = 0  # closed for framing, buffer, idle, slow-message limits
    handshake_failures: int = 0  # TLS handshakes that failed or never finished in time
    pongs_sent: int = 0


@functools.lru_cache(maxsize=4096)
def _numeric(host: str) -> bool:
    """An IP literal (sendable at once), not a name that would need resolving."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _addr(sockaddr: Any) -> Address:
    """(host, port) from an AF_INET or AF_INET6 socket address."""
    return str(sockaddr[0]), int(sockaddr[1])


class Transport(abc.ABC):
    """Common interface of every SIP transport (see the module docstring)."""

    name: str = ""
    reliable: bool = True  # §17.1.1.2: timers A/E/G retransmit only over unreliable transports

    def __init__(self, on_message: OnMessage, limits: TransportLimits) -> None:
        self.on_message = on_message
        self.limits = limits
        self.local_addr: Address = ("0.0.0.0", 0)
        self.stats = TransportStats()
        self._taps: list[Tap] = []
        # Optional hooks, set right after ``listen`` (before the loop runs again):
        self.on_data: OnData | None = None  # raw mode instead of on_message (see OnData)
        self.on_connection_lost: OnPeer | None = None  # a connection (flow) closed
        # "connection-limit" | "ip-connection-limit" | "ip-pending-limit" | "pending-evicted" |
        # "framing" | "buffer" | "idle" | "first-message" | "slow-message" | "tls-handshake"
        self.on_reject: OnReject | None = None
        lim = limits
        self.guard = ConnectionGuard(
            lim.max_connections_per_ip, lim.max_pending_per_ip, lim.max_pending
        )

    def peer(self, addr: Address, cid: str | None) -> Peer:
        return Peer(self.name, addr[0], addr[1], cid or "")

    def _rejected(self, reason: str) -> None:
        if self.on_reject is not None:
            self.on_reject(reason)

    def _lost(self, addr: Address, cid: str) -> None:
        if self.on_connection_lost is not None:
            self.on_connection_lost(self.peer(addr, cid))

    def add_tap(self, tap: Tap) -> None:
        """Observe every message in and out (called synchronously; keep it cheap)."""
        self._taps.append(tap)

    def _tap(
        self, direction: Literal["in", "out"], data: bytes, remote: Address, cid: str | None
    ) -> None:
        if direction == "in":
            self.stats.bytes_in += len(data)
        else:
            self.stats.bytes_out += len(data)
            self.stats.messages_out += 1
        for tap in self._taps:
            tap(WireEvent(direction, data, self.local_addr, remote, self.name, cid))

    def _receive(self, data: bytes, source: Address, cid: str | None) -> bytes | None:
        """Parse and deliver one complete message; return bytes to answer with (a 400)."""
        self._tap("in", data, source, cid)
        on_data = self.on_data
        if on_data is not None:
            self.stats.messages_in += 1
            try:
                on_data(data, self.peer(source, cid))
            except Exception as exc:  # the consumer's bug: report, keep serving
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "SIP on_data callback failed", "exception": exc}
                )
            return None
        try:
            msg = parse_message(data, limits=self.limits.parse)
        except SipParseError as exc:
            self.stats.malformed += 1
            return bad_request_reply(data, exc, self.limits.parse)
        except Exception as exc:  # a parser bug must not take a listener down
            self.stats.malformed += 1
            asyncio.get_running_loop().call_exception_handler(
                {"message": f"SIP parser raised {type(exc).__name__}", "exception": exc}
            )
            return None
        self.stats.messages_in += 1
        try:
            self.on_message(msg, source, self.name, cid)
        except Exception as exc:  # the consumer's bug: report, keep serving
            asyncio.get_running_loop().call_exception_handler(
                {"message": "SIP on_message callback failed", "exception": exc}
            )
        return None

    @abc.abstractmethod
    async def send(self, data: bytes, addr: Address) -> str | None:
        """Send one message to ``addr``; return the connection id used (None for UDP)."""

    async def send_to_connection(self, data: bytes, connection_id: str) -> None:
        """Send over an existing connection (RFC 5626 flow); TransportError if it is gone."""
        raise TransportError(f"{self.name} has no connections")

    def send_nowait(self, data: bytes, addr: Address, connection_id: str | None = None) -> bool:
        """Send at once when no I/O wait is needed (UDP, or an open connection: by id, else
        to ``addr``); False when the caller must ``await send()`` (connect first)."""
        return False

    def has_connection(self, connection_id: str) -> bool:
        return False

    def send_peer_nowait(self, data: bytes, peer: Peer) -> bool:
        """:meth:`send_nowait` to a :class:`Peer` (its connection when it names one)."""
        return self.send_nowait(data, peer.address, peer.conn or None)

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop listening and close every connection."""
