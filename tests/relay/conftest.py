"""Shared helpers for relay tests: a minimal 'phone' endpoint on loopback."""

from __future__ import annotations

import asyncio

import pytest

from callward.rtp.packet import RtpPacket
from callward.rtp.srtp import SrtpContext, SrtpKeying


class Phone(asyncio.DatagramProtocol):
    """A UDP endpoint that can SRTP-protect what it sends and unprotect what it gets."""

    def __init__(self, tx: SrtpKeying | None = None, rx: SrtpKeying | None = None) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.tx = None if tx is None else SrtpContext(tx, inbound=False)
        self.rx = None if rx is None else SrtpContext(rx, inbound=True)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send_rtp(self, dest: tuple[str, int], seq: int, ssrc: int = 0x1111, pt: int = 0,
                 payload: bytes = b"\xd5" * 160) -> bytes:  # fmt: skip
        plain = bytes(RtpPacket(pt, seq, seq * 160, ssrc, payload))
        wire = plain if self.tx is None else self.tx.protect(plain)
        assert self.transport is not None
        self.transport.sendto(wire, dest)
        return plain

    async def recv(self, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        data, addr = await asyncio.wait_for(self.queue.get(), timeout)
        return data, addr

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def make_phone():  # type: ignore[no-untyped-def]
    phones: list[Phone] = []

    async def factory(tx: SrtpKeying | None = None, rx: SrtpKeying | None = None) -> Phone:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: Phone(tx, rx), local_addr=("127.0.0.1", 0)
        )
        phones.append(proto)
        return proto

    yield factory
    for p in phones:
        p.close()
