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
from callward.errors import ConfigError, SipParseError, TransportError
from callward.events import Event, EventBus
from callward.sip.message import Request, Response
from callward.sip.parser import frame_stream
from callward.sip.transport import TransportLimits, WsTransport

__all__ = ["EdgeServer"]

log = structlog.get_logger("callward.edge")

UDP_BUFFER_BYTES = 8 * 1024 * 1024


class _Udp:
    """A non-blocking UDP socket read with ``loop.add_reader``, draining everything queued per
    wake-up (asyncio's datagram transport reads one datagram per loop iteration, so under a
    backlog the retransmission timers fired before the responses already waiting in the
    kernel were read: spurious retransmissions, then a storm)."""

    def __init__(self, server: EdgeServer, local: Peer) -> None:
        self.server = server
        self.local = local
        family = socket.AF_INET6 if ":" in local.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        # A burst that arrives while the loop is busy must wait in the kernel, not be dropped:
        # a drop costs a 500 ms retransmission and more load (the default ~200 KiB overflowed
        # at 300 calls/s). SO_RCVBUFFORCE needs CAP_NET_ADMIN; else the sysctl cap applies.
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if opt is None:
                continue
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER_BYTES)
                break
            except OSError:
                continue
        try:
            self.sock.bind((local.host, local.port))
        except OSError:
            self.sock.close()
            raise
        self.closed = False
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        self.drain()
        self.server.flush()

    def drain(self, budget: int = 512) -> None:
        """Hand every queued datagram (up to ``budget``) to the core; the caller flushes."""
        server = self.server
        for _ in range(budget):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable reported on a later read: ignore
                continue
            server.receive(data, Peer("udp", addr[0], addr[1]))

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return  # a full send buffer drops like the network would; timers retransmit
        except OSError:
            return

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


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
        self.ws: WsTransport | None = None
        self._ws_ids: dict[str, int] = {}
        self._ws_cids: dict[int, str] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for p in self.core.settings.listen:
            if p.transport == "udp":
                self.udp[p.host] = _Udp(self, p)
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
            elif p.transport == "ws":
                # RFC 7118 via the shared adapter; it parses, we route.
                self.ws = await WsTransport.listen(
                    p.host,
                    p.port,
                    self._on_ws_message,
                    limits=TransportLimits(
                        max_connections=self.max_connections,
                        idle_timeout=self.idle_timeout,
                        parse=self.core.settings.limits,
                    ),
                )
                self.bound.append(p)
            else:
                raise ConfigError(f"listen {p.transport}: transport not supported by this edge")
        self._idle_task = loop.create_task(self._reap_idle())
        log.info("edge.started", node=self.core.settings.node, listeners=len(self.bound))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._idle_task is not None:
            self._idle_task.cancel()
        if self.ws is not None:
            await self.ws.close()
        for proto in self.udp.values():
            proto.close()
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
        self.receive(data, peer)
        self.flush()

    def receive(self, data: bytes, peer: Peer) -> None:
        try:
            self.core.receive(data, peer, time.time())
        except Exception:  # the edge must never die on one message; count it and go on
            self.core.metrics.reject("internal-error")
            log.exception("edge.internal_error", transport=peer.transport)

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
        for proto in self.udp.values():
            proto.drain()  # answers already received must stop retransmissions first
        try:
            self.core.handle_timer(time.time())
        except Exception:
            self.core.metrics.reject("internal-error")
            log.exception("edge.timer_error")
        self.flush()

    def _send(self, peer: Peer, data: bytes) -> None:
        if peer.transport == "udp":
            proto = next(iter(self.udp.values()), None)
            if proto is None or proto.closed:
                self.core.flow_failed(peer, time.time())
                return
            proto.sendto(data, (peer.host, peer.port))
            return
        if peer.transport == "ws":
            self._send_ws(peer, data)
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

    def _on_ws_message(
        self, msg: Request | Response, addr: tuple[str, int], name: str, cid: str | None
    ) -> None:
        conn = self._ws_ids.get(cid or "")
        if conn is None:
            conn = next(self.conn_ids)
            self._ws_ids[cid or ""] = conn
            self._ws_cids[conn] = cid or ""
        try:
            self.core.receive_message(msg, Peer("ws", addr[0], addr[1], conn), time.time())
        except Exception:
            self.core.metrics.reject("internal-error")
            log.exception("edge.internal_error", transport="ws")
        self.flush()

    def _send_ws(self, peer: Peer, data: bytes) -> None:
        ws = self.ws
        if ws is None:
            self.core.flow_failed(peer, time.time())
            return
        cid = self._ws_cids.get(peer.conn) if peer.conn else None
        if cid is not None and not ws.has_connection(cid):
            cid = None
            if peer.conn:  # that flow is gone (RFC 5626 §5.3)
                asyncio.get_running_loop().call_soon(self._fail, peer)
                return

        async def go() -> None:
            try:
                if cid is not None:
                    await ws.send_to_connection(data, cid)
                else:
                    await ws.send(data, (peer.host, peer.port))
            except TransportError:
                self._fail(peer)

        task = asyncio.get_running_loop().create_task(go())
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
