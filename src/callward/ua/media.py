"""A minimal RTP endpoint for a phone (RFC 3550): send paced G.711 packets, count what comes
back. Enough for the demo and for checking that an offer/answer really connected two media
ports; jitter buffers, SRTP and codecs belong to ``callward.rtp`` / ``callward.media``."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from callward.errors import MediaError
from callward.rtp.packet import RtpPacket, parse_rtp

__all__ = ["RtpCounters", "RtpEndpoint"]

_PTIME = 0.020  # 20 ms of 8 kHz audio per packet (RFC 3551 §4.5 default)
_SAMPLES = 160


@dataclass(slots=True)
class RtpCounters:
    packets_sent: int = 0
    packets_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    invalid: int = 0


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: RtpEndpoint) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            parse_rtp(data)
        except MediaError:
            self.owner.counters.invalid += 1
            return
        self.owner.counters.packets_received += 1
        self.owner.counters.bytes_received += len(data)


class RtpEndpoint:
    """One UDP port for one audio stream."""

    def __init__(self) -> None:
        self.counters = RtpCounters()
        self.local_addr: tuple[str, int] = ("", 0)
        self._sock: asyncio.DatagramTransport | None = None
        self.ssrc = secrets.randbits(32)

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> RtpEndpoint:
        self = cls()
        loop = asyncio.get_running_loop()
        sock, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), local_addr=(host, 0))
        self._sock = sock
        name = sock.get_extra_info("sockname")
        self.local_addr = (str(name[0]), int(name[1]))
        return self

    async def send_audio(
        self,
        dest: tuple[str, int],
        packets: int,
        payload_type: int = 0,
        payload: bytes | None = None,
    ) -> None:
        """Send ``packets`` paced 20 ms packets: ``payload`` (one encoded 20 ms frame, repeated)
        or G.711 silence (0xFF is μ-law zero, 0xD5 A-law zero)."""
        if self._sock is None:
            raise MediaError("RTP endpoint is closed")
        silence = payload or (b"\xff" if payload_type == 0 else b"\xd5") * _SAMPLES
        seq = secrets.randbits(16)
        ts = secrets.randbits(32)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(packets):
            pkt = RtpPacket(
                payload_type,
                (seq + i) & 0xFFFF,
                (ts + i * _SAMPLES) & 0xFFFFFFFF,
                self.ssrc,
                silence,
                marker=i == 0,
            )
            data = bytes(pkt)
            self._sock.sendto(data, dest)
            self.counters.packets_sent += 1
            self.counters.bytes_sent += len(data)
            await asyncio.sleep(max(0.0, start + (i + 1) * _PTIME - loop.time()))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
