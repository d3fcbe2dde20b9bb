"""The asyncio adapter between a sans-IO transaction layer and one SIP transport.

:class:`~callward.sip.transaction_layer.TransactionLayer` keeps the retransmissions and RFC 3261
timers; this class only moves bytes between it and a :mod:`callward.sip.transport`, re-arms its
one timer, turns client transactions into awaitables (:meth:`SipAdapter.request`) and keeps every
datagram within the path MTU (§18.1.1: large requests move to TCP). What a request or an ACK
*means* is up to the subclass (:class:`~callward.ua.phone.Phone`), through
:meth:`SipAdapter._on_request`, :meth:`SipAdapter._on_ack` and :meth:`SipAdapter._resend_ack`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callward.errors import SipParseError, TransportError
from callward.sip.message import Headers, Request, Response
from callward.sip.timers import TimerConfig
from callward.sip.transaction import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionEvent,
    TransactionKey,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailed,
)
from callward.sip.transaction_layer import TransactionLayer
from callward.sip.transport import Address, Transport, open_transport
from callward.ua.call import LocalEndpoint, new_branch
from callward.ua.call_handle import Peer

__all__ = ["SipAdapter", "synthetic"]

# IPv4 (20) or IPv6 (40) header plus UDP (8): what a datagram adds on the wire, worst case.
_IP_UDP_OVERHEAD = 48


def synthetic(status: int, reason: str) -> Response:
    """A locally generated final response (§8.1.3.1: timeout → 408, transport error → 503)."""
    return Response(Headers(), status=status, reason=reason)


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Response]
    on_provisional: Callable[[Response], None] | None


class SipAdapter:
    """Transaction layer + transport + send queue + timer. Subclasses set ``self.transport`` and
    ``self.local`` once their socket is bound, and handle requests and ACKs."""

    transport: Transport
    local: LocalEndpoint

    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.layer = TransactionLayer(timers=timers)
        self.mtu: int | None = None  # path MTU, configured or probed (None: unknown)
        self.mtu_refused = 0  # datagrams not sent because they exceeded the MTU
        self._pending: dict[TransactionKey, _Pending] = {}
        self._outq: asyncio.Queue[tuple[bytes, Peer, TransactionKey | None]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._sender: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._send_busy = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._side_tcp: Transport | None = None
        self._tcp_keys: set[TransactionKey] = set()

    @property
    def local_addr(self) -> Address:
        return self.transport.local_addr

    def now(self) -> float:
        return self._loop.time()

    # ------------------------------------------------------------------ hooks for the UA
    def _on_request(self, req: Request, key: TransactionKey, peer: Peer) -> None:
        raise NotImplementedError

    def _on_ack(self, ack: Request) -> None:
        """An ACK for a 2xx we sent (§13.3.1.4); nothing to do for a bare adapter."""

    def _resend_ack(self, resp: Response) -> None:
        """A 2xx retransmission to an INVITE of ours whose transaction is gone (§13.2.2.4)."""

    # ------------------------------------------------------------------ client transactions
    async def request(
        self,
        req: Request,
        dest: Address,
        *,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> Response:
        """Run one client transaction and return its final response (408/503 synthesized on
        timeout or transport failure, §8.1.3.1)."""
        fut: asyncio.Future[Response] = self._loop.create_future()
        reliable = self.transport.reliable
        side = False
        if not reliable and len(bytes(req)) > self.udp_request_limit:
            # §18.1.1: a request within 200 bytes of the path MTU (or above 1300 bytes when
            # the MTU is unknown) goes over TCP, so no IP fragment or oversize datagram leaves.
            tcp = await self._tcp_side()
            via = f"SIP/2.0/TCP {self.local.host}:{tcp.local_addr[1]};branch={new_branch()};rport"
            req = req.replace(headers=req.headers.set("Via", via))
            reliable = side = True
        tx = self.layer.send_request(req, self.now(), reliable=reliable, peer=(dest, None))
        if side:
            self._tcp_keys.add(tx.key)
        self._pending[tx.key] = _Pending(fut, on_provisional)
        self._pump()
        try:
            return await fut
        finally:
            self._tcp_keys.discard(tx.key)

    @property
    def udp_request_limit(self) -> int:
        """Largest request sent over UDP (RFC 3261 §18.1.1): MTU - 200, or 1300 if unknown."""
        return self.mtu - 200 if self.mtu else 1300

    async def _tcp_side(self) -> Transport:
        """A TCP transport beside our UDP one, for requests too large for a datagram (on our
        UDP port number when free, so the Via names where we listen)."""
        if self._side_tcp is None:
            host, port = self.transport.local_addr
            try:
                tcp = await open_transport(f"tcp:{host}:{port}", self._on_side_message)
            except TransportError:
                tcp = await open_transport(f"tcp:{host}:0", self._on_side_message)
            for tap in self.transport._taps:
                tcp.add_tap(tap)
            self._side_tcp = tcp
        return self._side_tcp

    def _on_side_message(
        self, msg: Request | Response, source: Address, _name: str, cid: str | None
    ) -> None:
        try:
            self.layer.receive(msg, self.now(), reliable=True, peer=(source, cid))
        except SipParseError:
            return
        self._pump()

    async def _send_side(self, data: bytes, addr: Address, key: TransactionKey) -> None:
        try:
            assert self._side_tcp is not None
            await self._side_tcp.send(data, addr)
        except TransportError:
            self.layer.transport_error(key, self.now())
            self._pump()

    def _oversize(self, data: bytes) -> bool:
        """Never emit a UDP datagram above the path MTU (IP + UDP headers included)."""
        if self.transport.reliable or self.mtu is None:
            return False
        if len(data) + _IP_UDP_OVERHEAD <= self.mtu:
            return False
        self.mtu_refused += 1
        return True

    async def _close_adapter(self) -> None:
        """Stop the timer and the tasks, close the side TCP and the transport."""
        if self._timer is not None:
            self._timer.cancel()
        for task in [*self._tasks, *([self._sender] if self._sender else [])]:
            task.cancel()
        if self._side_tcp is not None:
            await self._side_tcp.close()
        await self.transport.close()

    # ------------------------------------------------------------------ plumbing
    def _on_message(
        self, msg: Request | Response, source: Address, _name: str, cid: str | None
    ) -> None:
        try:
            self.layer.receive(
                msg, self.now(), reliable=self.transport.reliable, peer=(source, cid)
            )
        except SipParseError:
            return  # no usable Via/CSeq: nothing to match or answer
        self._pump()

    def _pump(self) -> None:
        """Flush what the transaction layer wants sent, dispatch its events, re-arm its timer."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while True:
                out = self.layer.datagrams_to_send()
                for t in out:
                    if t.key is not None and t.key in self._tcp_keys:
                        self._spawn(self._send_side(t.data, t.peer[0], t.key))
                    elif self._oversize(t.data):
                        continue  # dropped: a request fails by its timer, never fragments
                    elif not self._send_now(t.data, t.peer):
                        self._outq.put_nowait((t.data, t.peer, t.key))
                ev = self.layer.next_event()
                if ev is None and not out:
                    break
                if ev is not None:
                    self._dispatch(ev)
        finally:
            self._pumping = False
        deadline = self.layer.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None if deadline is None else self._loop.call_at(deadline, self._tick)
            self._timer_at = deadline

    def _tick(self) -> None:
        self._timer, self._timer_at = None, None
        self.layer.handle_timer(self.now())
        self._pump()

    def _send_now(self, data: bytes, peer: Peer) -> bool:
        """Fast path: UDP or an open connection, and nothing queued ahead (order matters on a
        stream). Anything needing a connect or failing goes through :meth:`_send_loop`."""
        if self._send_busy or not self._outq.empty():
            return False
        try:
            return self.transport.send_nowait(data, peer[0], peer[1])
        except TransportError:
            return False

    async def _send_loop(self) -> None:
        """One writer so messages leave in the order the core produced them."""
        while True:
            data, peer, key = await self._outq.get()
            self._send_busy = True
            addr, cid = peer
            try:
                if cid is not None and self.transport.has_connection(cid):
                    await self.transport.send_to_connection(data, cid)
                else:
                    await self.transport.send(data, addr)
            except TransportError:
                if key is not None:
                    self.layer.transport_error(key, self.now())
                    self._pump()
            finally:
                self._send_busy = self._outq.qsize() > 0

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch(self, ev: TransactionEvent) -> None:
        match ev:
            case ResponseReceived(response=resp, key=key):
                pending = self._pending.get(key)
                if resp.status < 200:
                    if pending is not None and pending.on_provisional is not None:
                        pending.on_provisional(resp)
                elif pending is not None and not pending.future.done():
                    pending.future.set_result(resp)
                else:
                    self._resend_ack(resp)
            case StrayResponse(response=resp):
                self._resend_ack(resp)
            case TransactionTimeout(key=key):
                self._fail(key, synthetic(408, "Request Timeout"))
            case TransportFailed(key=key):
                self._fail(key, synthetic(503, "Service Unavailable"))
            case TransactionTerminated(key=key):
                self._fail(key, synthetic(408, "Request Timeout"))
                self._pending.pop(key, None)
            case AckReceived(request=ack):
                self._on_ack(ack)
            case RequestReceived(request=req, key=key, peer=peer):
                self._on_request(req, key, peer)

    def _fail(self, key: TransactionKey, resp: Response) -> None:
        pending = self._pending.get(key)
        if pending is not None and not pending.future.done():
            pending.future.set_result(resp)
