"""asyncio transports for SIP: UDP, TCP, TLS and WebSocket (RFC 3261 §18, RFC 7118).

This is the one module of ``callward.sip`` allowed to do I/O: a thin adapter between sockets and
the sans-IO core (parser, transactions). Every transport has the same small interface:

* ``await T.listen(host, port, on_message, ...)`` binds and returns the transport;
* ``await t.send(data, (host, port))`` sends one serialized message, reusing a connection to that
  address when one exists (inbound or outbound, §18.2.2) and returns the connection id used;
* ``await t.send_to_connection(data, connection_id)`` sends over one exact connection, which is
  what RFC 5626 flow tokens need (``TransportError`` when the flow is gone → 430 Flow Failed);
* ``on_message(message, source, transport_name, connection_id)`` is called for every valid
  message (``connection_id`` is ``None`` for UDP);
* ``t.add_tap(fn)`` sees every datagram/frame in and out as a :class:`WireEvent` (ladders, HEP).

Hostile input never crashes a listener: a malformed request that still has the headers needed to
answer gets ``400`` with the parser's reason phrase (§8.2.6 via :func:`bad_request_reply`), anything
else is dropped; streams whose framing is lost, whose buffer exceeds ``max_buffer_bytes`` or that
stay idle past ``idle_timeout`` are closed, and connections beyond ``max_connections`` are refused.
"""

from __future__ import annotations

import abc
import asyncio
import errno
import functools
import ipaddress
import itertools
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from callward.errors import SipParseError, TransportError
from callward.sip.connection_guard import ConnectionGuard
from callward.sip.message import Request, Response
from callward.sip.parser import DEFAULT_LIMITS, ParseLimits, frame_stream, parse_message
from callward.sip.peer import Peer
from callward.sip.replies import bad_request_reply

__all__ = [
    "Address",
    "OnMessage",
    "StreamTransport",
    "Tap",
    "TcpTransport",
    "TlsTransport",
    "Transport",
    "TransportLimits",
    "TransportStats",
    "UdpTransport",
    "WireEvent",
    "WsTransport",
    "bad_request_reply",
    "open_transport",
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


# --------------------------------------------------------------------------------------------
# UDP
# --------------------------------------------------------------------------------------------


class UdpTransport(Transport):
    """Connectionless SIP over UDP (§18.1.1). Retransmission belongs to the transaction layer.

    A raw non-blocking socket read with ``loop.add_reader``: each wake-up drains up to
    ``limits.udp_batch`` datagrams, where asyncio's datagram transport pays one event-loop
    iteration (an epoll call) per datagram, which dominated the cost of a call under load, and
    under a backlog fired retransmission timers before reading the answers already queued in
    the kernel (spurious retransmissions, then a storm). A timer-driven owner calls
    :meth:`drain` before handling its timers for the same reason."""

    name = "udp"
    reliable = False

    def __init__(self, on_message: OnMessage, limits: TransportLimits) -> None:
        super().__init__(on_message, limits)
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # RFC 5626 §4.4.2: STUN keep-alives arrive on the SIP port. When set, a datagram whose
        # first byte is 0..3 (RFC 7983) is offered here first; bytes returned are sent back.
        self.stun_responder: Callable[[bytes, Address], bytes | None] | None = None
        self.emptied_at = 0.0

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        *,
        limits: TransportLimits | None = None,
    ) -> UdpTransport:
        self = cls(on_message, limits or TransportLimits())
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except (OSError, IndexError) as exc:
            raise TransportError(f"udp: cannot resolve {host}:{port}: {exc}") from None
        try:
            sock.setblocking(False)
            if self.limits.udp_receive_buffer:
                # A burst (a registration storm after a network flap) must queue in the kernel,
                # not be dropped: each drop costs the peer a 500 ms retransmission (Timer A/E).
                # SO_RCVBUFFORCE passes net.core.rmem_max with CAP_NET_ADMIN; else SO_RCVBUF.
                for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                    if opt is None:
                        continue
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, opt, self.limits.udp_receive_buffer)
                        break
                    except OSError:
                        continue
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            raise TransportError(f"udp: cannot bind {host}:{port}: {exc.strerror}") from None
        self._sock, self._loop = sock, loop
        self.local_addr = _addr(sock.getsockname())
        loop.add_reader(sock.fileno(), self._readable)
        return self

    def _readable(self) -> None:
        self.drain()

    def drain(self, budget: int = 0) -> None:
        """Deliver every queued datagram, up to ``budget`` (default ``limits.udp_batch``).
        ``emptied_at`` (loop time) records when the kernel queue was last seen empty: how long
        ago that was is the receive backlog an overload control can act on."""
        sock = self._sock
        for _ in range(budget or self.limits.udp_batch):
            if sock is None or sock.fileno() < 0:
                return
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                if self._loop is not None:
                    self.emptied_at = self._loop.time()
                return
            except OSError:
                continue  # an ICMP error queued on the socket (§17.1.4: the timers decide)
            if data.strip(b"\r\n") == b"":  # RFC 5626 §4.4.1 CRLF keep-alive: ignore
                continue
            source = _addr(addr)
            if self.stun_responder is not None and data[0] < 4:
                self._tap("in", data, source, None)
                reply = self.stun_responder(data, source)
            else:
                reply = self._receive(data, source, None)
            if reply is not None:
                self._tap("out", reply, source, None)
                self._sendto(reply, addr)
            sock = self._sock

    def _sendto(self, data: bytes, addr: Any) -> None:
        if self._sock is None:
            raise TransportError("udp: transport is closed")
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass  # kernel buffer full: UDP may drop; the transaction layer retransmits
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                return  # an earlier ICMP error reported late: not about this datagram
            raise TransportError(f"udp: send failed: {exc.strerror}") from None

    async def send(self, data: bytes, addr: Address) -> str | None:
        if not _numeric(addr[0]):  # a name: resolved off the event loop, never by sendto
            addr = await self._resolve(addr)
        self.send_nowait(data, addr)
        return None

    async def _resolve(self, addr: Address) -> Address:
        assert self._loop is not None and self._sock is not None
        try:
            infos = await asyncio.wait_for(
                self._loop.getaddrinfo(
                    addr[0], addr[1], family=self._sock.family, type=socket.SOCK_DGRAM
                ),
                self.limits.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"udp: cannot resolve the destination: {exc}") from None
        if not infos:
            raise TransportError("udp: the destination name has no address")
        return _addr(infos[0][4])

    def send_nowait(self, data: bytes, addr: Address, connection_id: str | None = None) -> bool:
        if self._sock is None:
            raise TransportError("udp: transport is closed")
        if not _numeric(addr[0]):
            return False  # sendto would resolve the name in the event loop: await send()
        self._tap("out", data, addr, None)
        self._sendto(data, addr)
        return True

    async def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()


# --------------------------------------------------------------------------------------------
# TCP and TLS: byte streams framed by Content-Length (§18.3)
# --------------------------------------------------------------------------------------------


class _StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection: buffering, framing, keep-alives, idle, size and time limits.

    An inbound connection is admitted by the owner's :class:`ConnectionGuard` the moment it is
    accepted, before any TLS handshake (a handshake that never finishes is counted, and closed
    after ``connect_timeout``); it joins the connection table once it can carry SIP (after the
    handshake). Outbound connections join in :meth:`StreamTransport.connect`, after the peer's
    identity is checked (RFC 5922), so nothing is sent to an unverified server."""

    def __init__(self, owner: StreamTransport, outbound: bool) -> None:
        self.owner = owner
        self.outbound = outbound
        self.id = f"{owner.name}-{next(_ids)}"
        self.peer: Address = ("", 0)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.last_activity = 0.0
        self.last_pong: float | None = None
        self.aliases: list[Address] = []  # other addresses this connection is reused for
        self._idle: asyncio.TimerHandle | None = None
        self._first: asyncio.TimerHandle | None = None  # first-message deadline (inbound)
        self._slow: asyncio.TimerHandle | None = None  # deadline of the message in progress
        self._loop = asyncio.get_running_loop()
        self._aborted = ""
        self._upgrading = False  # TLS handshake in progress: hold what arrives until it ends

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _addr(transport.get_extra_info("peername"))
        if self.outbound:
            self._touch()
            return
        owner = self.owner
        admission = owner.guard.admit(self, self.peer[0])
        if admission.refused is not None:
            owner.stats.rejected_connections += 1
            owner._rejected(admission.refused)
            transport.abort()
            return
        for old in admission.evict:
            assert isinstance(old, _StreamConnection)
            old.abort("pending-evicted")
        limits = owner.limits
        self._first = self._loop.call_later(limits.first_message_timeout, self._no_message)
        self._touch()
        if owner._server_ssl is not None:
            # RFC 3261 §26.2.1 TLS, upgraded here rather than by the server, so that the
            # connection is counted from the accept (asyncio hides it until the handshake ends).
            transport.pause_reading()
            self._upgrading = True
            task = self._loop.create_task(self._handshake(transport, owner._server_ssl))
            owner._tasks.add(task)
            task.add_done_callback(owner._tasks.discard)
            return
        self._join()

    def _join(self) -> None:
        """Enter the owner's connection table (refused at ``max_connections``)."""
        if not self.owner._register(self):
            self.owner.stats.rejected_connections += 1
            self.owner._rejected("connection-limit")
            self.owner.guard.release(self)
            if self.transport is not None:
                self.transport.abort()

    async def _handshake(self, raw: asyncio.Transport, ctx: ssl.SSLContext) -> None:
        if raw.is_closing():
            return
        try:
            tls = await self._loop.start_tls(
                raw,
                self,
                ctx,
                server_side=True,
                ssl_handshake_timeout=self.owner.limits.connect_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, RuntimeError) as exc:
            if not self._aborted:  # failed or timed out, not closed by us for another reason
                self.owner.stats.handshake_failures += 1
                self.owner._rejected("tls-handshake")
            self._aborted = self._aborted or type(exc).__name__
            raw.abort()
            self.owner.guard.release(self)
            return
        if tls is None or self._aborted:
            raw.abort()
            return
        self.transport = tls
        self._upgrading = False
        self._join()
        if self.buffer and not self._closing():  # decrypted before this task resumed
            self.data_received(b"")

    def _no_message(self) -> None:
        self._first = None
        if self.owner.guard.is_pending(self):
            self.abort("first-message")

    def _too_slow(self) -> None:
        self._slow = None
        self.abort("slow-message")

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._idle, self._first, self._slow):
            if timer is not None:
                timer.cancel()
        self.owner.guard.release(self)
        self.owner._unregister(self)

    def _touch(self) -> None:
        self.last_activity = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_later(self.owner.limits.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        left = self.last_activity + self.owner.limits.idle_timeout - self._loop.time()
        if left > 0:
            self._idle = self._loop.call_later(left, self._check_idle)
        else:
            self.abort("idle")

    def abort(self, reason: str = "") -> None:
        """Close at once; ``reason`` ("idle", "buffer", "framing", "first-message",
        "slow-message", "pending-evicted") counts it as abusive."""
        if reason and not self._aborted:
            self.owner.stats.closed_abusive += 1
            self.owner._rejected(reason)
        self._aborted = self._aborted or reason or "closed"
        self.owner.guard.release(self)
        if self.transport is not None:
            self.transport.abort()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise TransportError(f"{self.owner.name}: connection {self.id} is closed")
        self.transport.write(data)
        self._touch()

    def data_received(self, data: bytes) -> None:
        self._touch()
        self.buffer += data
        if self._upgrading:
            return
        self._drain()
        if self._closing():
            return
        # The limit applies to what stays unframed: one read may carry many pipelined messages.
        if len(self.buffer) > self.owner.limits.max_buffer_bytes:
            self.abort("buffer")
        elif self.buffer and self.buffer != _CRLF:
            if self._slow is None:  # a message has started: it must end in time
                self._slow = self._loop.call_later(
                    self.owner.limits.message_timeout, self._too_slow
                )
        elif self._slow is not None:
            self._slow.cancel()
            self._slow = None

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _drain(self) -> None:
        buf = self.buffer
        while buf:
            # RFC 5626 §4.4.1 keep-alives: a double CRLF is a ping (answered with one CRLF by the
            # side that accepted the connection); a lone CRLF is a pong, or noise before a message.
            if buf.startswith(_PING) and not self.outbound:
                del buf[:4]
                self.owner.stats.pongs_sent += 1
                if self.transport is None or self.transport.is_closing():
                    return
                self.write(_CRLF)
                continue
            if buf.startswith(_CRLF) and (self.outbound or (len(buf) > 2 and buf[2] != 13)):
                del buf[:2]
                if self.outbound:
                    self.last_pong = self._loop.time()
                    self.owner._pong(self.id)
                continue
            try:
                frame, consumed = frame_stream(buf, limits=self.owner.limits.parse)
            except SipParseError:
                # Framing lost: nothing after this point can be trusted (§18.3).
                self.abort("framing")
                return
            if frame is None:
                return
            del buf[:consumed]
            if self._slow is not None:  # that message ended in time; the next one starts now
                self._slow.cancel()
                self._slow = None
            if self._first is not None:
                self._first.cancel()
                self._first = None
                self.owner.guard.established(self)
            reply = self.owner._receive(frame, self.peer, self.id)
            if self.transport is None or self.transport.is_closing():
                return  # on_message closed us
            if reply is not None:
                self.owner._tap("out", reply, self.peer, self.id)
                self.write(reply)


class StreamTransport(Transport):
    """Shared machinery of TCP and TLS: a listener plus a table of connections, indexed by id and
    by remote address so responses and in-dialog requests reuse them (§18.2.2, RFC 5923)."""

    name = "tcp"

    def __init__(
        self,
        on_message: OnMessage,
        limits: TransportLimits,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(on_message, limits)
        self._server: asyncio.Server | None = None
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._by_id: dict[str, _StreamConnection] = {}
        self._by_addr: dict[Address, _StreamConnection] = {}
        self._connecting: dict[Address, asyncio.Future[_StreamConnection]] = {}
        self._pong_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # RFC 5922 §4: the SIP domain a TLS server at an address must prove (its certificate
        # is checked against the domain, not the address it resolved to); see expect_identity.
        self.server_names: dict[Address, str] = {}

    def expect_identity(self, addr: Address, domain: str) -> None:
        """Outbound TLS to ``addr`` must present a certificate for SIP ``domain`` (RFC 5922);
        the owner calls this when it resolves a domain to addresses (RFC 3263)."""
        self.server_names[addr] = domain

    async def _start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            # TLS is started per connection (_StreamConnection._handshake), not by the server.
            self._server = await loop.create_server(
                lambda: _StreamConnection(self, outbound=False), host, port, backlog=LISTEN_BACKLOG
            )
        except OSError as exc:
            raise TransportError(
                f"{self.name}: cannot bind {host}:{port}: {exc.strerror}"
            ) from None
        self.local_addr = _addr(self._server.sockets[0].getsockname())

    def _register(self, conn: _StreamConnection) -> bool:
        if len(self._by_id) >= self.limits.max_connections:
            return False
        self._by_id[conn.id] = conn
        self._by_addr[conn.peer] = conn
        return True

    def _unregister(self, conn: _StreamConnection) -> None:
        if self._by_id.pop(conn.id, None) is not None:
            self._lost(conn.peer, conn.id)
        for addr in (conn.peer, *conn.aliases):
            if self._by_addr.get(addr) is conn:
                del self._by_addr[addr]
        for fut in self._pong_waiters.pop(conn.id, []):
            if not fut.done():
                fut.set_exception(TransportError(f"{self.name}: connection {conn.id} closed"))

    def _pong(self, cid: str) -> None:
        for fut in self._pong_waiters.pop(cid, []):
            if not fut.done():
                fut.set_result(None)

    @property
    def connections(self) -> dict[str, Address]:
        """Open connections: id → remote address."""
        return {cid: c.peer for cid, c in self._by_id.items()}

    def has_connection(self, connection_id: str) -> bool:
        return connection_id in self._by_id

    def connection_for(self, addr: Address) -> str | None:
        conn = self._by_addr.get(addr)
        return None if conn is None else conn.id

    async def connect(self, addr: Address, *, server_name: str | None = None) -> str:
        """Open (or reuse) a connection to ``addr``. TLS verifies the chain, then the identity
        per RFC 5922 against ``server_name``, else the domain set by :meth:`expect_identity`,
        else the host of ``addr``; a certificate for another name is refused."""
        if self._closed:
            raise TransportError(f"{self.name}: transport is closed")
        conn = self._by_addr.get(addr)
        if conn is not None:
            return conn.id
        pending = self._connecting.get(addr)
        if pending is not None:
            return (await asyncio.shield(pending)).id
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_StreamConnection] = loop.create_future()
        self._connecting[addr] = fut
        name = server_name or self.server_names.get(addr) or addr[0]
        try:
            kwargs: dict[str, Any] = {}
            if self._client_ssl is not None:
                kwargs = {"ssl": self._client_ssl, "server_hostname": name}
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamConnection(self, outbound=True), addr[0], addr[1], **kwargs
                ),
                self.limits.connect_timeout,
            )
            if self._client_ssl is not None:
                from callward.sip.tls import check_sip_domain  # cryptography: TLS users only

                assert proto.transport is not None
                try:
                    check_sip_domain(proto.transport.get_extra_info("ssl_object"), name)
                except TransportError:
                    proto.abort()
                    raise
            if not self._register(proto):
                proto.abort()
                raise TransportError(f"{self.name}: connection limit reached")
        except (OSError, TimeoutError, ssl.SSLError, TransportError) as exc:
            err = (
                exc
                if isinstance(exc, TransportError)
                else TransportError(f"{self.name}: cannot connect: {type(exc).__name__}: {exc}")
            )
            fut.set_exception(err)
            fut.exception()  # retrieved: concurrent waiters get it through shield
            raise err from None
        finally:
            self._connecting.pop(addr, None)
        if addr != proto.peer:  # connected by name: "localhost" → 127.0.0.1
            proto.aliases.append(addr)
            self._by_addr[addr] = proto
        fut.set_result(proto)
        return proto.id

    async def send(self, data: bytes, addr: Address) -> str | None:
        cid = await self.connect(addr)
        await self.send_to_connection(data, cid)
        return cid

    async def send_to_connection(self, data: bytes, connection_id: str) -> None:
        conn = self._by_id.get(connection_id)
        if conn is None:
            raise TransportError(f"{self.name}: no connection {connection_id} (flow failed)")
        self._tap("out", data, conn.peer, conn.id)
        conn.write(data)

    def send_nowait(self, data: bytes, addr: Address, connection_id: str | None = None) -> bool:
        conn = self._by_id.get(connection_id) if connection_id is not None else None
        conn = conn or self._by_addr.get(addr)
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return False
        self._tap("out", data, conn.peer, conn.id)
        conn.write(data)
        return True

    async def ping(self, connection_id: str, timeout: float = 10.0) -> None:
        """RFC 5626 §4.4.1 keep-alive from the connecting side: send CRLFCRLF and wait for the
        CRLF pong; TransportError when none comes within ``timeout`` (the flow has failed)."""
        conn = self._by_id.get(connection_id)
        if conn is None:
            raise TransportError(f"{self.name}: no connection {connection_id}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pong_waiters.setdefault(connection_id, []).append(fut)
        conn.write(_PING)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TransportError(f"{self.name}: no pong on {connection_id}") from None

    async def close_connection(self, connection_id: str) -> None:
        conn = self._by_id.get(connection_id)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._by_id.values()):
            conn.abort()
        self._by_id.clear()
        self._by_addr.clear()
        if self._server is not None:
            await self._server.wait_closed()


class TcpTransport(StreamTransport):
    """SIP over TCP (§18.3): Content-Length framing, partial reads, pipelining, keep-alives."""

    name = "tcp"

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        *,
        limits: TransportLimits | None = None,
    ) -> TcpTransport:
        self = cls(on_message, limits or TransportLimits())
        await self._start(host, port)
        return self


class TlsTransport(StreamTransport):
    """SIP over TLS (§26.2.1). Outbound connections verify the server certificate chain
    (``client_ssl`` defaults to the system trust store) and its identity per RFC 5922 (the SIP
    domain in a ``sip:`` URI or dNSName subjectAltName, no wildcards, the CN only without SANs)."""

    name = "tls"

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        *,
        server_ssl: ssl.SSLContext,
        client_ssl: ssl.SSLContext | None = None,
        limits: TransportLimits | None = None,
    ) -> TlsTransport:
        if client_ssl is None:
            from callward.sip.tls import TlsPolicy, client_context

            client_ssl = client_context(TlsPolicy())  # system trust store, RFC 5922 names
        self = cls(on_message, limits or TransportLimits(), server_ssl, client_ssl)
        await self._start(host, port)
        return self


# --------------------------------------------------------------------------------------------
# WebSocket (RFC 7118): one SIP message per WebSocket message, subprotocol "sip"
# --------------------------------------------------------------------------------------------

_WsConn = ServerConnection | ClientConnection


class WsTransport(Transport):
    """SIP over WebSocket (RFC 7118), ``ws`` or ``wss`` when ``server_ssl`` is given.

    No framing is needed (§5: each SIP message is one WebSocket message) and RFC 5626 CRLF
    keep-alives are not used over WebSocket; the idle timeout applies to WebSocket messages.
    Compression is off: permessage-deflate is a decompression-bomb vector and costs CPU."""

    name = "ws"

    def __init__(
        self,
        on_message: OnMessage,
        limits: TransportLimits,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(on_message, limits)
        self.name = "wss" if server_ssl is not None else "ws"
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._server: Server | None = None
        self._by_id: dict[str, tuple[_WsConn, Address]] = {}
        self._by_addr: dict[Address, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def listen(
        cls,
        host: str,
        port: int,
        on_message: OnMessage,
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        limits: TransportLimits | None = None,
    ) -> WsTransport:
        self = cls(on_message, limits or TransportLimits(), server_ssl, client_ssl)
        guard, stats, rejected = self.guard, self.stats, self._rejected

        class _Guarded(ServerConnection):
            """Counted by the guard from the accept (after TLS for wss, whose handshake is
            bounded by ``connect_timeout``), released when it closes."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                peer = transport.get_extra_info("peername")
                admission = guard.admit(self, str(peer[0]) if peer else "")
                if admission.refused is not None:
                    stats.rejected_connections += 1
                    rejected(admission.refused)
                    transport.abort()  # type: ignore[attr-defined]
                for old in admission.evict:
                    assert isinstance(old, ServerConnection)
                    stats.closed_abusive += 1
                    rejected("pending-evicted")
                    old.transport.abort()

            def connection_lost(self, exc: Exception | None) -> None:
                guard.release(self)
                super().connection_lost(exc)

        try:
            self._server = await ws_serve(
                self._serve_one,
                host,
                port,
                create_connection=_Guarded,
                backlog=LISTEN_BACKLOG,
                subprotocols=["sip"],  # type: ignore[list-item]
                process_request=self._check_subprotocol,
                compression=None,
                max_size=self.limits.parse.max_message_bytes,
                ping_interval=None,
                open_timeout=self.limits.connect_timeout,
                ssl=server_ssl,
            )
        except OSError as exc:
            raise TransportError(
                f"{self.name}: cannot bind {host}:{port}: {exc.strerror}"
            ) from None
        self.local_addr = _addr(next(iter(self._server.sockets)).getsockname())
        return self

    def _check_subprotocol(self, conn: ServerConnection, request: WsRequest) -> WsResponse | None:
        """RFC 7118 §4.1: the client must offer the "sip" subprotocol; refuse otherwise, and
        refuse beyond ``max_connections`` before the handshake completes."""
        offered = ",".join(request.headers.get_all("Sec-WebSocket-Protocol"))
        if "sip" not in [p.strip().lower() for p in offered.split(",")]:
            return conn.respond(400, "WebSocket subprotocol 'sip' required (RFC 7118)\n")
        if len(self._by_id) >= self.limits.max_connections:
            self.stats.rejected_connections += 1
            self._rejected("connection-limit")
            return conn.respond(503, "too many connections\n")
        return None

    async def _serve_one(self, ws: ServerConnection) -> None:
        await self._pump(ws, _addr(ws.remote_address))

    async def _pump(self, ws: _WsConn, peer: Address) -> None:
        cid = f"{self.name}-{next(_ids)}"
        self._by_id[cid] = (ws, peer)
        self._by_addr[peer] = cid
        pending = self.guard.is_pending(ws)
        try:
            while True:
                timeout = self.limits.idle_timeout
                if pending:  # slowloris: the first message is due soon after the accept
                    timeout = min(timeout, self.limits.first_message_timeout)
                try:
                    data = await asyncio.wait_for(ws.recv(), timeout)
                except TimeoutError:
                    self.stats.closed_abusive += 1
                    self._rejected("first-message" if pending else "idle")
                    return
                if pending:
                    self.guard.established(ws)
                    pending = False
                if isinstance(data, str):
                    data = data.encode("utf-8", "surrogateescape")
                reply = self._receive(data, peer, cid)
                if reply is not None:
                    self._tap("out", reply, peer, cid)
                    await ws.send(reply.decode("utf-8", "replace"))
        except ConnectionClosed:
            return
        finally:
            self._by_id.pop(cid, None)
            if self._by_addr.get(peer) == cid:
                del self._by_addr[peer]
            self._lost(peer, cid)
            await ws.close()

    def has_connection(self, connection_id: str) -> bool:
        return connection_id in self._by_id

    def connection_for(self, addr: Address) -> str | None:
        return self._by_addr.get(addr)

    async def connect(self, addr: Address, *, server_name: str | None = None) -> str:
        """Open (or reuse) a WebSocket to ``addr`` (``wss`` verifies the certificate)."""
        cid = self._by_addr.get(addr)
        if cid is not None:
            return cid
        if len(self._by_id) >= self.limits.max_connections:
            raise TransportError(f"{self.name}: connection limit reached")
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        scheme = "wss" if self.name == "wss" else "ws"
        try:
            ws = await ws_connect(
                f"{scheme}://{host}:{addr[1]}",
                subprotocols=["sip"],  # type: ignore[list-item]
                compression=None,
                max_size=self.limits.parse.max_message_bytes,
                ping_interval=None,
                open_timeout=self.limits.connect_timeout,
                ssl=self._client_ssl if scheme == "wss" else None,
                server_hostname=server_name if scheme == "wss" else None,
            )
        except (OSError, TimeoutError, WebSocketException, ssl.SSLError) as exc:
            raise TransportError(f"{self.name}: cannot connect: {type(exc).__name__}") from None
        if ws.subprotocol != "sip":
            await ws.close()
            raise TransportError(f"{self.name}: server did not accept subprotocol 'sip'")
        task = asyncio.get_running_loop().create_task(self._pump(ws, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)  # let _pump register the connection
        cid = self._by_addr.get(addr)
        if cid is None:
            raise TransportError(f"{self.name}: connection closed during setup")
        return cid

    async def send(self, data: bytes, addr: Address) -> str | None:
        cid = await self.connect(addr)
        await self.send_to_connection(data, cid)
        return cid

    async def send_to_connection(self, data: bytes, connection_id: str) -> None:
        entry = self._by_id.get(connection_id)
        if entry is None:
            raise TransportError(f"{self.name}: no connection {connection_id} (flow failed)")
        ws, peer = entry
        self._tap("out", data, peer, connection_id)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            await ws.send(data)  # a binary body: send a binary message (RFC 7118 §5)
        else:
            try:
                await ws.send(text)
            except ConnectionClosed:
                raise TransportError(f"{self.name}: connection {connection_id} closed") from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for ws, _ in list(self._by_id.values()):
            await ws.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()


async def open_transport(
    spec: str,
    on_message: OnMessage,
    *,
    limits: TransportLimits | None = None,
    server_ssl: ssl.SSLContext | None = None,
    client_ssl: ssl.SSLContext | None = None,
) -> Transport:
    """Open a listener from ``udp:HOST:PORT`` / ``tcp:…`` / ``tls:…`` / ``ws:…`` / ``wss:…``
    (the edge's ``--listen`` syntax; an IPv6 host is written in brackets)."""
    kind, _, rest = spec.partition(":")
    host, _, port_text = rest.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise TransportError(f"listen spec {spec!r}: expected KIND:HOST:PORT")
    port = int(port_text)
    kind = kind.lower()
    if kind == "udp":
        return await UdpTransport.listen(host, port, on_message, limits=limits)
    if kind == "tcp":
        return await TcpTransport.listen(host, port, on_message, limits=limits)
    if kind in ("tls", "wss") and server_ssl is None:
        raise TransportError(f"listen spec {spec!r}: {kind} needs a certificate")
    if kind == "tls":
        assert server_ssl is not None
        return await TlsTransport.listen(
            host, port, on_message, server_ssl=server_ssl, client_ssl=client_ssl, limits=limits
        )
    if kind in ("ws", "wss"):
        return await WsTransport.listen(
            host,
            port,
            on_message,
            server_ssl=server_ssl if kind == "wss" else None,
            client_ssl=client_ssl,
            limits=limits,
        )
    raise TransportError(f"listen spec {spec!r}: unknown transport {kind!r}")
