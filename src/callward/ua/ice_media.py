"""Paced G.711 RTP over an ICE agent's nominated pair (RFC 8445 §12: media follows the selected
pair, through the TURN relay when that is the pair), counting what arrives. The agent may
restart ICE mid-call (a handover); sending and receiving then continue on the new pair."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from callward.errors import CallwardError, TransportError
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.ua.ice_session import IceAgent

__all__ = ["IceAudio"]

_SILENCE = b"\xff" * 160  # 20 ms of PCMU silence


class IceAudio:
    """One audio stream over ``agent``: :meth:`send_audio` paces packets, a reader counts them."""

    def __init__(self, agent: IceAgent, payload_type: int = 0) -> None:
        self.agent = agent
        self.payload_type = payload_type
        self.ssrc = secrets.randbits(32)
        self.packets_sent = 0
        self.packets_received = 0
        self.bytes_received = 0
        self._seq = secrets.randbelow(0x10000)
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def send_audio(self, count: int, ptime: float = 0.02) -> int:
        """Send ``count`` packets ``ptime`` apart; a packet the pair cannot carry (mid-restart)
        is counted as not sent. Returns how many left."""
        loop = asyncio.get_running_loop()
        due, sent = loop.time(), 0
        for i in range(count):
            pkt = RtpPacket(
                self.payload_type,
                (self._seq + self.packets_sent) & 0xFFFF,
                (self.packets_sent * 160) & 0xFFFFFFFF,
                self.ssrc,
                _SILENCE,
                marker=i == 0,
            )
            with contextlib.suppress(ConnectionError, TransportError):
                await self.agent.send(bytes(pkt))
                self.packets_sent += 1
                sent += 1
            due += ptime
            await asyncio.sleep(max(0.0, due - loop.time()))
        return sent

    async def _read(self) -> None:
        while True:
            try:
                data = await self.agent.recv()
            except (ConnectionError, TransportError):
                await asyncio.sleep(0.02)  # between an ICE restart's close and connect
                continue
            try:
                parse_rtp(data)
            except CallwardError:
                continue
            self.packets_received += 1
            self.bytes_received += len(data)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
