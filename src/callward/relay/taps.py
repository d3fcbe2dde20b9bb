"""Tap hooks: how recording and lawful-intercept code sees relayed media.

The relay calls every tap with the *decrypted* packet as received on a leg, before it is
re-protected for the other leg. Whether a tap may be attached at all (consent, warrant,
retention) is decided by the privacy layer, never here; the relay only offers the seam.
A tap must be fast and must not raise: exceptions are caught and counted, media keeps flowing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["CollectingTap", "MediaTap", "TappedPacket"]


class MediaTap(Protocol):
    def on_packet(self, call_id: str, leg: str, packet: bytes, *, rtcp: bool, now: float) -> None:
        """``packet`` is plain RTP/RTCP as received from ``leg`` ("a" or "b")."""

    def on_close(self, call_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class TappedPacket:
    call_id: str
    leg: str
    packet: bytes
    rtcp: bool
    now: float


@dataclass
class CollectingTap:
    """Keeps packets in memory (tests, short diagnostics); ``limit`` bounds memory."""

    limit: int = 100_000
    packets: list[TappedPacket] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    def on_packet(self, call_id: str, leg: str, packet: bytes, *, rtcp: bool, now: float) -> None:
        if len(self.packets) < self.limit:
            self.packets.append(TappedPacket(call_id, leg, packet, rtcp, now))

    def on_close(self, call_id: str) -> None:
        self.closed.append(call_id)
