"""The asyncio adapter of :class:`~callward.ng.client.NgClient`: one UDP socket per relay,
``await request(...)`` for callers. It only moves bytes and time; retransmission, cookies
and timeouts are the core's. The timer is re-armed with ``loop.call_at`` (no polling)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from callward.errors import NgError, TransportError
from callward.ng.client import NgClient, NgReply, NgTimeout
from callward.ng.protocol import NgRequest

__all__ = ["NgConnection"]

Address = tuple[str, int]


class NgConnection(asyncio.DatagramProtocol):
    """``conn = await NgConnection.open(("127.0.0.1", 2223))``; ``reply = await conn.request(r)``
    raises :class:`NgError` on a timeout (the relay is then considered down by callers)."""

    def __init__(self, server: Address, *, timeout_s: float, attempts: int) -> None:
        self.core = NgClient(
            server, cookie_prefix=secrets.token_hex(6), timeout_s=timeout_s, attempts=attempts
        )
        self.transport: asyncio.DatagramTransport | None = None
        self._waiters: dict[str, asyncio.Future[NgReply]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(
        cls, server: Address, *, timeout_s: float = 1.0, attempts: int = 3
    ) -> NgConnection:
        loop = asyncio.get_running_loop()
        try:  # a connected socket: the kernel drops datagrams from anyone but the relay
            _, proto = await loop.create_datagram_endpoint(
                lambda: cls(server, timeout_s=timeout_s, attempts=attempts), remote_addr=server
            )
        except OSError as exc:
            raise TransportError(f"ng: cannot open a socket toward the relay: {exc}") from None
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.core.receive_datagram(data, (str(addr[0]), int(str(addr[1]))), self._loop.time())
        self._service()

    def error_received(self, exc: Exception) -> None:  # ICMP: the timers decide
        pass

    def _service(self) -> None:
        if self.transport is not None:
            for data, addr in self.core.datagrams_to_send():
                self.transport.sendto(data, addr)
        while (ev := self.core.next_event()) is not None:
            fut = self._waiters.pop(ev.cookie, None)
            if fut is None or fut.done():
                continue
            if isinstance(ev, NgTimeout):
                fut.set_exception(NgError(f"ng: no reply to {ev.request.command.value}"))
            else:
                fut.set_result(ev)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.core.get_timer()
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self._loop.time())
        self._service()

    async def request(self, request: NgRequest) -> NgReply:
        if self.transport is None:
            raise TransportError("ng: connection is closed")
        cookie = self.core.send(request, self._loop.time())
        fut: asyncio.Future[NgReply] = self._loop.create_future()
        self._waiters[cookie] = fut
        self._service()
        try:
            return await fut
        finally:
            self._waiters.pop(cookie, None)
            self.core.cancel(cookie)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(TransportError("ng: connection closed"))
        self._waiters.clear()
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()
            self.transport = None
