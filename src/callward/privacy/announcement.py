"""The recording announcement, played into the media by the relay: when a consent rule needs
one (``ConsentRule.announcement``: GDPR, US-CA, UK...), a recorded call hears a tone at the
start of the recording and again every ``period`` seconds while it records.

The relay calls :meth:`RecordingAnnouncement.overlay` for every RTP packet it forwards
(``MediaCore.overlay``): while the tone is due, a G.711 packet's payload (PCMU, payload type 0;
PCMA, 8; RFC 3551 static types) is replaced by the tone's samples in the same codec, keeping the
packet's SSRC, sequence number and timestamp, so both phones hear it as part of the call's own
stream. A packet of another codec is forwarded unchanged and counted in ``unsupported`` (the
recording's header still says it was announced; the audit trail has the decision).

The tone: ``freq`` Hz (1400 by default) for ``beep`` seconds at about -10 dBm0, sine phase
continued across packets per direction so it sounds clean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from callward.media.g711 import alaw_encode, ulaw_encode

__all__ = ["RecordingAnnouncement"]

_ENCODE = {0: ulaw_encode, 8: alaw_encode}  # RFC 3551 static payload types, 8000 Hz
_RATE = 8000
_AMPLITUDE = 8000.0  # ~ -10 dBm0 for G.711 (full scale 32767 ~ +3 dBm0)


@dataclass
class RecordingAnnouncement:
    active: Callable[[], bool] = lambda: True  # the recording still runs
    freq: float = 1400.0
    beep: float = 0.5
    period: float = 15.0
    start: float | None = None
    played: list[int] = field(default_factory=lambda: [0, 0])  # packets toned, per direction
    unsupported: int = 0
    _phase: list[int] = field(default_factory=lambda: [0, 0])

    def due(self, now: float) -> bool:
        if self.start is None:
            self.start = now
        return (now - self.start) % self.period < self.beep and self.active()

    def overlay(self, j: int, plain: bytes, now: float) -> bytes:
        """The packet to send toward leg ``j``: ``plain`` with the tone as its audio while the
        tone is due (G.711 only)."""
        if len(plain) < 12 or plain[0] >> 6 != 2 or not self.due(now):
            return plain
        encode = _ENCODE.get(plain[1] & 0x7F)
        if encode is None:
            self.unsupported += 1
            return plain
        head = 12 + 4 * (plain[0] & 0x0F)
        if plain[0] & 0x10 and len(plain) >= head + 4:  # header extension (RFC 3550 §5.3.1)
            head += 4 + 4 * int.from_bytes(plain[head + 2 : head + 4], "big")
        pad = plain[-1] if plain[0] & 0x20 and plain else 0
        n = len(plain) - head - pad
        if n <= 0:
            return plain
        k = np.arange(self._phase[j], self._phase[j] + n)
        self._phase[j] += n
        tone = (_AMPLITUDE * np.sin(2 * math.pi * self.freq * k / _RATE)).astype(np.int16)
        self.played[j] += 1
        return plain[:head] + encode(tone) + plain[len(plain) - pad :]
