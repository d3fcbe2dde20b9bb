"""Delivery of X2/X3 PDUs to the mediation function: one TCP connection (TS 103 221-2 runs
X2/X3 over TCP, normally inside TLS; put TLS in front with the operator's LI network setup),
a bounded queue so a slow or absent mediation function never stalls the relay or the bus, and
reconnects with backoff. Dropped PDUs are counted (an LI officer must see delivery gaps).

Keepalives (TS 103 221-2): after ``keepalive_s`` without traffic the client sends a Keepalive
PDU carrying a Sequence Number; the mediation function answers with a Keepalive
Acknowledgement, which is decoded and counted. A PDU from the mediation function that does not
decode, or anything but an acknowledgement, closes the connection (it reconnects)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from dataclasses import dataclass, field

from callward.errors import X2X3Error
from callward.privacy.x2x3 import (
    Direction,
    PayloadFormat,
    Pdu,
    PduType,
    encode_pdu,
    sequence_attr,
    split_pdus,
)

_NIL = uuid.UUID(int=0)

__all__ = ["MediationClient"]


@dataclass
class MediationClient:
    host: str
    port: int
    max_queue: int = 20_000
    keepalive_s: float = 30.0
    delivered: int = 0
    dropped: int = 0
    keepalives: int = 0
    keepalive_acks: int = 0
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
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), 5
                )
            except (OSError, TimeoutError):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.2
            lost = asyncio.Event()
            reading = asyncio.ensure_future(self._read_acks(reader, lost))
            try:
                while not stop.is_set() and not lost.is_set():
                    while self._queue:
                        pdu = self._queue[0]
                        writer.write(pdu)
                        await writer.drain()
                        self._queue.popleft()
                        self.delivered += 1
                    self._wake.clear()
                    waiter = asyncio.ensure_future(self._wake.wait())
                    stopper = asyncio.ensure_future(stop.wait())
                    closed = asyncio.ensure_future(lost.wait())
                    done, _ = await asyncio.wait({waiter, stopper, closed},
                                                 timeout=self.keepalive_s,
                                                 return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                    for f in (waiter, stopper, closed):
                        f.cancel()
                    if not done:  # idle: a keepalive with the next sequence number
                        writer.write(_keepalive(self.keepalives))
                        await writer.drain()
                        self.keepalives += 1
            except OSError:
                continue
            finally:
                reading.cancel()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _read_acks(self, reader: asyncio.StreamReader, lost: asyncio.Event) -> None:
        buf = b""
        try:
            while data := await reader.read(65536):
                pdus, buf = split_pdus(buf + data)
                for pdu in pdus:
                    if pdu.pdu_type is not PduType.KEEPALIVE_ACK:
                        raise X2X3Error(f"mediation sent a {pdu.pdu_type.name} PDU")
                    self.keepalive_acks += 1
                if len(buf) > 1 << 16:
                    raise X2X3Error("mediation: oversized unparsed input")
        except (X2X3Error, OSError):
            pass
        lost.set()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until the queue is empty (tests, shutdown)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._queue and loop.time() < end:
            await asyncio.sleep(0.01)


def _keepalive(seq: int) -> bytes:
    """A Keepalive PDU: no payload, format/direction 0, nil XID, a Sequence Number."""
    pdu = Pdu(PduType.KEEPALIVE, PayloadFormat.KEEPALIVE, Direction.KEEPALIVE, _NIL, 0,
              (sequence_attr(seq),))  # fmt: skip
    return encode_pdu(pdu)
