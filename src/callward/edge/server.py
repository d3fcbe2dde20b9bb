"""asyncio adapter for :class:`~callward.edge.proxy.EdgeCore` on the shared transports of
:mod:`callward.sip.transport` (UDP, TCP, TLS, WS/WSS). It only moves bytes, answers the core's
questions and fires its timer; every SIP decision is in the core.

- Incoming: every transport runs in raw mode (``on_data``): complete messages go to
  ``core.receive_datagram`` unparsed, so each is parsed once, by the core. Closed connections
  (``on_connection_lost``) fail the branches waiting on them; refused or abusive connections
  (``on_reject``) are counted in the edge's metrics.
- Outgoing: ``send_nowait`` when possible (UDP, an open connection), else a task that connects;
  a failure is reported to the core (failover, 430 Flow Failed).
- Questions (:class:`~callward.edge.pending.Pending`): one handler per query type
  (:meth:`EdgeServer.answer_with`); inline handlers (in-memory stores) answer at once, the
  others run concurrently as tasks (network stores in a worker thread, DNS with the async
  resolver) and never block the loop.
- Overload: the event-loop lag, measured every 100 ms, is given to the core's overload guard.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import structlog

from callward.edge.pending import Pending, Query
from callward.edge.proxy import EdgeCore
from callward.errors import ConfigError, TransportError
from callward.events import Event, EventBus
from callward.nat.stun import binding_success
from callward.sip.message import Request, Response
from callward.sip.peer import Peer
from callward.sip.transport import (
    Address,
    TcpTransport,
    TlsTransport,
    Transport,
    TransportLimits,
    UdpTransport,
    WsTransport,
)

__all__ = ["UDP_BUFFER_BYTES", "EdgeServer"]

log = structlog.get_logger("callward.edge")

UDP_BUFFER_BYTES = 8 * 1024 * 1024
UDP_BATCH = 512
LAG_PERIOD = 0.1

Handler = Callable[[Any], object]
AsyncHandler = Callable[[Any], Awaitable[object]]


def _ignore(msg: Request | Response, addr: Address, name: str, cid: str | None) -> None:
    """Transports run in raw mode (on_data); the parsed-message callback is never used."""


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
        limits: TransportLimits | None = None,
    ) -> None:
        self.core = core
        self.bus = bus
        self.on_event = on_event
        self.tls_context = tls_context
        self.client_tls_context = client_tls_context
        self.limits = replace(
            limits or TransportLimits(),  # slowloris caps and deadlines (sip.connection_guard)
            max_connections=max_connections,
            idle_timeout=idle_timeout,
            udp_receive_buffer=UDP_BUFFER_BYTES,
            udp_batch=UDP_BATCH,
            parse=core.settings.limits,
        )
        self.transports: dict[str, list[Transport]] = {}
        self.bound: list[Peer] = []
        self._inline: dict[type[Query], Handler] = {}
        self._async: dict[type[Query], AsyncHandler] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._flush_soon = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._events: collections.deque[Event] = collections.deque()
        self._publisher: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ questions
    def answer_with(
        self, kind: type[Query], handler: Handler | AsyncHandler, *, inline: bool = False
    ) -> None:
        """Route questions of type ``kind`` to ``handler``: ``inline`` handlers are called
        synchronously (they must not block), the others must return an awaitable and run as
        concurrent tasks. A handler raising (or returning) an exception fails the question."""
        if inline:
            self._inline[kind] = handler
        else:
            self._async[kind] = handler  # type: ignore[assignment]

    def _ask(self, pending: Pending) -> None:
        kind = type(pending.query)
        inline = self._inline.get(kind)
        if inline is not None:
            try:
                result = inline(pending.query)
            except Exception as exc:  # a store failure is the core's answer, not a crash
                result = exc
            self.core.resolve(pending.id, result, time.time())
            return
        handler = self._async.get(kind)
        if handler is None:
            self.core.resolve(
                pending.id, LookupError(f"no handler for {kind.__name__}"), time.time()
            )
            return
        self._spawn(self._answer(pending, handler))

    async def _answer(self, pending: Pending, handler: AsyncHandler) -> None:
        try:
            result = await handler(pending.query)
        except Exception as exc:
            result = exc
        self.core.resolve(pending.id, result, time.time())
        self.flush()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for p in self.core.settings.listen:
            t = await self._listen(p)
            t.on_data = self.receive
            t.on_connection_lost = self._lost
            if isinstance(t, UdpTransport):
                t.stun_responder = binding_success  # RFC 5626 §4.4.2 keep-alives
            t.on_reject = self.core.metrics.reject
            self.transports.setdefault(p.transport, []).append(t)
            self.bound.append(p)
        self._lag_task = loop.create_task(self._measure_lag())
        log.info("edge.started", node=self.core.settings.node, listeners=len(self.bound))

    async def _listen(self, p: Peer) -> Transport:
        lim = self.limits
        try:
            if p.transport == "udp":
                return await UdpTransport.listen(p.host, p.port, _ignore, limits=lim)
            if p.transport == "tcp":
                return await TcpTransport.listen(p.host, p.port, _ignore, limits=lim)
            if p.transport in ("tls", "wss") and self.tls_context is None:
                raise ConfigError(f"listen {p.transport}: needs edge.tls_cert and edge.tls_key")
            if p.transport == "tls":
                assert self.tls_context is not None
                return await TlsTransport.listen(
                    p.host,
                    p.port,
                    _ignore,
                    server_ssl=self.tls_context,
                    client_ssl=self.client_tls_context,
                    limits=lim,
                )
            if p.transport in ("ws", "wss"):
                return await WsTransport.listen(
                    p.host,
                    p.port,
                    _ignore,
                    server_ssl=self.tls_context if p.transport == "wss" else None,
                    limits=lim,
                )
        except TransportError as exc:
            raise ConfigError(f"listen {p}: {exc}") from None
        raise ConfigError(f"listen {p.transport}: transport not supported by this edge")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._lag_task is not None:
            self._lag_task.cancel()
        for ts in self.transports.values():
            for t in ts:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t.close(), 1.0)
        for task in list(self._tasks):
            task.cancel()

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the questions and sends in flight."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    # ------------------------------------------------------------------ data path
    def receive(self, data: bytes, peer: Peer) -> None:
        try:
            self.core.receive_datagram(data, peer, time.time())
        except Exception:  # the edge must never die on one message; count it and go on
            self.core.metrics.reject("internal-error")
            log.exception("edge.internal_error", transport=peer.transport)
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_soon = False
        core = self.core
        while (pending := core.next_request()) is not None:
            self._ask(pending)
        for peer, data in core.datagrams_to_send():
            self._send(peer, data)
        events = []
        while (ev := core.next_event()) is not None:
            events.append(ev)
        if events:
            if self.on_event is not None:
                for ev in events:
                    self.on_event(ev)
            if self.bus is not None:
                # One publishing task drains a queue (a task per event costs more than the
                # event itself at a few hundred calls/s); order is kept.
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
        nxt = self.core.get_timer()
        if nxt is None or nxt >= self._timer_at - 0.001:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = nxt
        self._timer = asyncio.get_running_loop().call_later(max(0.0, nxt - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        for t in self.transports.get("udp", []):
            if isinstance(t, UdpTransport):
                t.drain()  # answers already received must stop retransmissions first
        try:
            self.core.handle_timer(time.time())
        except Exception:
            self.core.metrics.reject("internal-error")
            log.exception("edge.timer_error")
        self.flush()

    def _transport(self, peer: Peer) -> Transport | None:
        ts = self.transports.get(peer.transport)
        if not ts:
            return None
        if len(ts) > 1:
            v6 = ":" in peer.host
            for t in ts:
                if (":" in t.local_addr[0]) == v6:
                    return t
        return ts[0]

    def _send(self, peer: Peer, data: bytes) -> None:
        t = self._transport(peer)
        if t is None:
            asyncio.get_running_loop().call_soon(self._fail, peer)
            return
        try:
            if t.send_peer_nowait(data, peer):
                return
        except TransportError:
            asyncio.get_running_loop().call_soon(self._fail, peer)
            return
        if peer.conn and not isinstance(t, WsTransport):
            # RFC 5626 §5.3: that flow is gone; the core answers 430 through failover.
            asyncio.get_running_loop().call_soon(self._fail, peer)
            return
        self._spawn(self._send_later(t, peer, data))

    async def _send_later(self, t: Transport, peer: Peer, data: bytes) -> None:
        try:
            if peer.conn:
                await t.send_to_connection(data, peer.conn)
            else:
                await t.send(data, peer.address)
        except TransportError:
            self._fail(peer)

    def _fail(self, peer: Peer) -> None:
        self.core.flow_failed(peer, time.time())
        self.flush()

    def _lost(self, peer: Peer) -> None:
        self._fail(peer)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _measure_lag(self) -> None:
        """How far behind the edge is: the event loop's own lag, or how long a UDP socket has
        not been seen empty (a kernel backlog the loop cannot see)."""
        loop = asyncio.get_running_loop()
        guard = self.core.overload
        udp = [t for t in self.transports.get("udp", []) if isinstance(t, UdpTransport)]
        for t in udp:
            t.emptied_at = loop.time()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_PERIOD)
            now = loop.time()
            lag = max(0.0, now - start - LAG_PERIOD)
            for t in udp:
                t.drain(1)  # an idle socket is not a backlog: look (one datagram at most)
                lag = max(lag, now - t.emptied_at - LAG_PERIOD)
            guard.lag = lag if lag > guard.lag else 0.7 * guard.lag + 0.3 * lag
