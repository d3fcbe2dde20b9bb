"""asyncio adapter for :class:`~callward.edge.proxy.EdgeCore`: UDP and TCP/TLS sockets, the
timer, event publishing. It only moves bytes; every SIP decision is in the core.

Stream transports (§18.3): each connection has an id; messages are framed by Content-Length
with :func:`callward.sip.parser.frame_stream`; a framing error closes the connection (the
stream cannot be resynchronized). Outgoing requests reuse a connection to the same address or
open one; a connect failure is reported to the core as a transport error (failover).
Limits: a maximum number of concurrent connections and an idle timeout bound floods.

This will switch to ``callward.sip.transport`` when that module lands.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import structlog

from callward.edge.flow import Peer
from callward.edge.proxy import EdgeCore
from callward.errors import ConfigError, SipParseError
from callward.events import Event, EventBus
from callward.sip.parser import frame_stream

__all__ = ["EdgeServer"]

log = structlog.get_logger("callward.edge")

UDP_BUFFER_BYTES = 8 * 1024 * 1024


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: EdgeServer, local: Peer) -> None:
        self.server = server
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A burst that arrives while the loop is busy must wait in the kernel, not be
            # dropped: a drop costs a 500 ms retransmission and more load (measured: the
            # default ~200 KiB overflowed at 300 calls/s). FORCE needs CAP_NET_ADMIN.
            for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if opt is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER_BYTES)
                    break
                except OSError:
                    continue

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.server.deliver(data, Peer("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.
        return


class _Stream(asyncio.Protocol):
    def __init__(self, server: EdgeServer, transport_name: str) -> None:
        self.server = server
        self.name = transport_name
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last_rx = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(self.server.conns) >= self.server.max_connections:
            self.server.core.metrics.reject("connection-limit")
            transport.abort()
            return
        host, port = transport.get_extra_info("peername")[:2]
        conn = next(self.server.conn_ids)
        self.peer = Peer(self.name, host, port, conn)
        self.server.conns[conn] = self
        self.server.by_addr[(self.name, host, port)] = self

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self.buffer += data
        limits = self.server.core.settings.limits
        while self.buffer and self.peer is not None:
            try:
                msg, consumed = frame_stream(self.buffer, limits=limits)
            except SipParseError:
                self.server.core.metrics.reject("framing")
                if self.transport is not None:
                    self.transport.close()
                return
            if msg is None:
                if consumed >= 4 and self.buffer[:4] == b"\r\n\r\n":
                    self.server.deliver(b"\r\n\r\n", self.peer)  # RFC 5626 keep-alive ping
                if consumed:
                    del self.buffer[:consumed]
                return
            del self.buffer[:consumed]
            self.server.deliver(msg, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is None:
            return
        self.server.conns.pop(self.peer.conn, None)
        key = (self.name, self.peer.host, self.peer.port)
        if self.server.by_addr.get(key) is self:
            del self.server.by_addr[key]
        self.server.core.flow_failed(self.peer, time.time())
        self.server.flush()

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class EdgeServer:
    def __init__(
        self,
        core: EdgeCore,
        bus: EventBus | None = None,
        *,
        max_connections: int = 4096,
        idle_timeout: float = 600.0,
        tls_context: ssl.SSLContext | None = None,
        client_tls_context: ssl.SSLContext | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.core = core
        self.bus = bus
        self.on_event = on_event
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.tls_context = tls_context
        self.client_tls_context = client_tls_context
        self.conn_ids = itertools.count(1)
        self.conns: dict[int, _Stream] = {}
        self.by_addr: dict[tuple[str, str, int], _Stream] = {}
        self.pending: dict[tuple[str, str, int], list[bytes]] = {}
        self.udp: dict[str, _Udp] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle_task: asyncio.Task[None] | None = None
        self._events: collections.deque[Event] = collections.deque()
        self._publisher: asyncio.Task[None] | None = None
        self.bound: list[Peer] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for p in self.core.settings.listen:
            if p.transport == "udp":
                _, proto = await loop.create_datagram_endpoint(
                    functools.partial(_Udp, self, p), local_addr=(p.host, p.port)
                )
                self.udp[p.host] = proto
                self.bound.append(p)
            elif p.transport in ("tcp", "tls"):
                ctx = None
                if p.transport == "tls":
                    if self.tls_context is None:
                        raise ConfigError("listen tls: needs edge.tls_cert and edge.tls_key")
                    ctx = self.tls_context
                srv = await loop.create_server(
                    functools.partial(_Stream, self, p.transport), p.host, p.port, ssl=ctx
                )
                self.servers.append(srv)
                self.bound.append(p)
            else:
                raise ConfigError(f"listen {p.transport}: transport not supported by this edge yet")
        self._idle_task = loop.create_task(self._reap_idle())
        log.info("edge.started", node=self.core.settings.node, listeners=len(self.bound))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._idle_task is not None:
            self._idle_task.cancel()
        for proto in self.udp.values():
            if proto.transport is not None:
                proto.transport.close()
        for srv in self.servers:
            srv.close()
        for c in list(self.conns.values()):
            if c.transport is not None:
                c.transport.abort()
        for srv in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1.0)
        for t in list(self._tasks):
            t.cancel()

    # ------------------------------------------------------------------ data path
    def deliver(self, data: bytes, peer: Peer) -> None:
        try:
            self.core.receive(data, peer, time.time())
        except Exception:  # the edge must never die on one message; count it and go on
            self.core.metrics.reject("internal-error")
            log.exception("edge.internal_error", transport=peer.transport)
        self.flush()

    def flush(self) -> None:
        out, events = self.core.take()
        for peer, data in out:
            self._send(peer, data)
        if events:
            if self.on_event is not None:
                for ev in events:
                    self.on_event(ev)
            if self.bus is not None:
                # One publishing task drains a queue: a task per event costs more than the
                # event itself at a few hundred calls/s; order is kept.
                self._events.extend(events)
                if self._publisher is None or self._publisher.done():
                    self._publisher = asyncio.get_running_loop().create_task(self._publish())
        self._arm()

    async def _publish(self) -> None:
        assert self.bus is not None
        while self._events:
            ev = self._events.popleft()
            try:
                await self.bus.publish(ev)
            except Exception:  # a failing subscriber must not stop the edge
                log.exception("edge.publish_error", kind=ev.kind)

    def _arm(self) -> None:
        nxt = self.core.next_timer()
        if nxt is None or nxt >= self._timer_at - 0.001:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = nxt
        self._timer = loop.call_later(max(0.0, nxt - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        try:
            self.core.handle_timer(time.time())
        except Exception:
            self.core.metrics.reject("internal-error")
            log.exception("edge.timer_error")
        self.flush()

    def _send(self, peer: Peer, data: bytes) -> None:
        if peer.transport == "udp":
            proto = next(iter(self.udp.values()), None)
            if proto is None or proto.transport is None:
                self.core.flow_failed(peer, time.time())
                return
            proto.transport.sendto(data, (peer.host, peer.port))
            return
        conn = self.conns.get(peer.conn) if peer.conn else None
        if conn is None:
            conn = self.by_addr.get((peer.transport, peer.host, peer.port))
        if conn is not None:
            conn.send(data)
            return
        key = (peer.transport, peer.host, peer.port)
        if peer.conn:
            # RFC 5626 §5.3: that flow is gone; the core answers 430 via failover logic.
            loop = asyncio.get_running_loop()
            loop.call_soon(self._fail, peer)
            return
        queue = self.pending.get(key)
        if queue is not None:
            queue.append(data)
            return
        self.pending[key] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail(self, peer: Peer) -> None:
        self.core.flow_failed(peer, time.time())
        self.flush()

    async def _connect(self, peer: Peer) -> None:
        key = (peer.transport, peer.host, peer.port)
        loop = asyncio.get_running_loop()
        ctx = self.client_tls_context if peer.transport == "tls" else None
        if peer.transport == "tls" and ctx is None:
            ctx = ssl.create_default_context()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Stream(self, peer.transport), peer.host, peer.port, ssl=ctx
                ),
                timeout=5.0,
            )
        except (TimeoutError, OSError):
            self.pending.pop(key, None)
            self._fail(peer)
            return
        for data in self.pending.pop(key, []):
            proto.send(data)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle_timeout))
            cutoff = time.monotonic() - self.idle_timeout
            for c in list(self.conns.values()):
                if c.last_rx < cutoff and c.transport is not None:
                    c.transport.close()
