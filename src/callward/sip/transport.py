"""asyncio transports for SIP: UDP, TCP, TLS and WebSocket (RFC 3261 §18, RFC 7118).

This module (with :mod:`~callward.sip.transport_base`, :mod:`~callward.sip.stream_transport`
and :mod:`~callward.sip.ws_transport`, whose classes it re-exports) is the I/O of
``callward.sip``: a thin adapter between sockets and the sans-IO core (parser, transactions).
Every transport has the same small interface:

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

import asyncio
import errno
import socket
import ssl
from collections.abc import Callable
from typing import Any

from callward.errors import TransportError
from callward.sip.replies import bad_request_reply
from callward.sip.stream_transport import StreamTransport, TcpTransport, TlsTransport
from callward.sip.transport_base import (
    Address,
    OnMessage,
    Tap,
    Transport,
    TransportLimits,
    TransportStats,
    WireEvent,
    _addr,
    _numeric,
)
from callward.sip.ws_transport import WsTransport

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
