"""Delivery of X2/X3 PDUs to the mediation function: one TCP connection (TS 103 221-2 runs
X2/X3 over TCP, normally inside TLS; put TLS in front with the operator's LI network setup),
a bounded queue so a slow or absent mediation function never stalls the relay or the bus, and
reconnects with backoff. Dropped PDUs are counted (an LI officer must see delivery gaps)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field

__all__ = ["MediationClient"]


@dataclass
class MediationClient:
    host: str
    port: int
    max_queue: int = 20_000
    delivered: int = 0
    dropped: int = 0
    _queue: deque[bytes] = field(default_factory=deque)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, pdu: bytes) -> None:
        """Queue one PDU (never blocks; the oldest is dropped and counted when full)."""
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(pdu)
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)
            except (OSError, TimeoutError):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.2
            try:
                while not stop.is_set():
                    while self._queue:
                        pdu = self._queue[0]
                        writer.write(pdu)
                        await writer.drain()
                        self._queue.popleft()
                        self.delivered += 1
                    self._wake.clear()
                    waiter = asyncio.ensure_future(self._wake.wait())
                    stopper = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    stopper.cancel()
            except OSError:
                continue
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the queue is empty (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._queue and loop.time() < end:
            await asyncio.sleep(0.01)
