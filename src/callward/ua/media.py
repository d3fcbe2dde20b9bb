"""A minimal RTP/SRTP endpoint for a phone (RFC 3550, RFC 3711): send paced G.711 packets,
receive, and keep the receiver statistics of RFC 3550 Appendix A per source.

Enough for the demo and for checking that an offer/answer really connected two media ports:
with :meth:`RtpEndpoint.secure` the packets are protected with the SDES keys negotiated in SDP
(``callward.rtp.srtp``); with an :class:`~callward.ua.impairment.ImpairmentShim` the sender
drops and delays packets like a lossy radio link. Jitter buffers and real codecs belong to
``callward.rtp`` / ``callward.media``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from callward.errors import MediaError
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpContext, SrtpKeying
from callward.rtp.stats import ReceiverStats
from callward.ua.impairment import ImpairmentShim

__all__ = ["RtpCounters", "RtpEndpoint"]

_PTIME = 0.020  # 20 ms of 8 kHz audio per packet (RFC 3551 §4.5 default)
_SAMPLES = 160
_CLOCK = 8000  # G.711 RTP clock rate (RFC 3551 §4.5.14)
_MAX_LOG = 10_000  # per-packet timing kept for delay figures (bounded: 200 s of audio)


@dataclass(slots=True)
class RtpCounters:
    packets_sent: int = 0  # handed to the network by the sender (before any impairment)
    packets_received: int = 0
    bytes_sent: int = 0  # UDP payload bytes (the SRTP packet when secured)
    bytes_received: int = 0
    invalid: int = 0  # not RTP, or SRTP that failed authentication / replay check
    dropped: int = 0  # dropped by the sender's impairment shim


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: RtpEndpoint) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # RFC 7983 demultiplexing: DTLS / STUN on the media port go to whoever claimed them.
        demux = self.owner.demux
        if demux is not None and demux(data, (str(addr[0]), int(addr[1]))):
            return
        self.owner._receive(data, asyncio.get_running_loop().time())


class RtpEndpoint:
    """One UDP port for one audio stream."""

    def __init__(self) -> None:
        self.counters = RtpCounters()
        self.local_addr: tuple[str, int] = ("", 0)
        self._sock: asyncio.DatagramTransport | None = None
        self.ssrc = secrets.randbits(32)
        self.stats: dict[int, ReceiverStats] = {}  # per remote SSRC (RFC 3550 A.1-A.8)
        self.sent_at: dict[int, float] = {}  # our seq -> loop time it was due (before shim)
        self.arrivals: list[tuple[int, int, float]] = []  # (ssrc, seq, loop time)
        self.impairment: ImpairmentShim | None = None
        self._tx: SrtpContext | None = None
        self._rx: SrtpContext | None = None
        self._later: set[asyncio.TimerHandle] = set()
        # Claims non-RTP datagrams (DTLS-SRTP handshake, ICE/STUN): True = consumed.
        self.demux: Callable[[bytes, tuple[str, int]], bool] | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> RtpEndpoint:
        self = cls()
        loop = asyncio.get_running_loop()
        sock, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), local_addr=(host, 0))
        self._sock = sock
        name = sock.get_extra_info("sockname")
        self.local_addr = (str(name[0]), int(name[1]))
        return self

    def secure(self, send: SrtpKeying, receive: SrtpKeying) -> None:
        """Protect what we send with ``send`` and accept only SRTP authenticated with
        ``receive`` (RFC 3711 §3.3-3.4); the keys come from the two ``a=crypto`` lines."""
        self._tx = SrtpContext(send, inbound=False)
        self._rx = SrtpContext(receive, inbound=True)

    @property
    def secured(self) -> bool:
        return self._tx is not None

    def _receive(self, data: bytes, now: float) -> None:
        try:
            plain = self._rx.unprotect(data) if self._rx is not None else data
            pkt = parse_rtp(plain)
        except MediaError:
            self.counters.invalid += 1
            return
        self.counters.packets_received += 1
        self.counters.bytes_received += len(data)
        stats = self.stats.get(pkt.ssrc)
        if stats is None:
            stats = self.stats[pkt.ssrc] = ReceiverStats(pkt.ssrc, _CLOCK)
        stats.receive(pkt.sequence_number, pkt.timestamp, now)
        if len(self.arrivals) < _MAX_LOG:
            self.arrivals.append((pkt.ssrc, pkt.sequence_number, now))

    def _sendto(self, data: bytes, dest: tuple[str, int]) -> None:
        if self._sock is not None:
            self._sock.sendto(data, dest)

    async def send_audio(
        self,
        dest: tuple[str, int],
        packets: int,
        payload_type: int = 0,
        payload: bytes | None = None,
    ) -> None:
        """Send ``packets`` paced 20 ms packets: ``payload`` (one encoded 20 ms frame, repeated)
        or G.711 silence (0xFF is μ-law zero, 0xD5 A-law zero). With an impairment shim, some
        packets are dropped and the others leave after an extra delay (``loop.call_later``);
        wait ``jitter`` longer before closing so the last ones still go out."""
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
            if self._tx is not None:
                data = self._tx.protect(data)
            # What the sender pays for: every packet it transmits, lost later or not.
            self.counters.packets_sent += 1
            self.counters.bytes_sent += len(data)
            if len(self.sent_at) < _MAX_LOG:
                self.sent_at[pkt.sequence_number] = loop.time()
            delay = 0.0 if self.impairment is None else self.impairment.decide()
            if delay is None:
                self.counters.dropped += 1
            elif delay <= 0.0:
                self._sock.sendto(data, dest)
            else:
                handle = loop.call_later(delay, self._sendto, data, dest)
                self._later.add(handle)
            await asyncio.sleep(max(0.0, start + (i + 1) * _PTIME - loop.time()))

    def close(self) -> None:
        for handle in self._later:
            handle.cancel()
        self._later.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
