"""DTMF interworking between the three ways a digit travels: RFC 4733 telephone-events,
SIP INFO ``application/dtmf-relay`` bodies, and in-band tones in G.711 audio.

Each direction is a small pure function or a stateful converter over the protocol cores
(``rtp.dtmf``, ``media.dtmf_inband``); the relay/edge decide which leg needs which form
(e.g. a legacy PBX leg that negotiated no telephone-event gets tones, a SIP-INFO-only trunk
gets INFO bodies).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from callward.media.dtmf_inband import DetectedDigit, DtmfDetector, generate_dtmf
from callward.rtp.dtmf import (
    DigitEvent,
    DtmfRelayBody,
    ScheduledPacket,
    TelephoneEventReceiver,
    encode_digit,
)

__all__ = [
    "InbandToRfc4733",
    "Rfc4733ToInfo",
    "digit_to_tones",
    "info_to_rfc4733",
]


def info_to_rfc4733(
    body: DtmfRelayBody, *, start_timestamp: int, clock_rate: int = 8000
) -> list[ScheduledPacket]:
    """A SIP INFO digit becomes an RFC 4733 event of the same duration."""
    return encode_digit(
        body.digit,
        start_timestamp=start_timestamp,
        duration_ms=body.duration_ms,
        clock_rate=clock_rate,
    )


def digit_to_tones(
    digit: str, duration_ms: float, *, sample_rate: int = 8000, level_dbfs: float = -10.0
) -> npt.NDArray[np.int16]:
    """The in-band tone for a digit (for a leg without telephone-event), with a 50 ms gap
    after it so back-to-back digits meet the Q.24 inter-digit pause."""
    return generate_dtmf(
        digit, sample_rate=sample_rate, tone_ms=duration_ms, gap_ms=50, level_dbfs=level_dbfs
    )


class Rfc4733ToInfo:
    """Telephone-event packets in, one INFO body per *finished* digit out (INFO carries the
    duration, so it can only be sent once the end is known)."""

    def __init__(self, clock_rate: int = 8000) -> None:
        self._rx = TelephoneEventReceiver(clock_rate)

    def _bodies(self, events: list[DigitEvent]) -> list[DtmfRelayBody]:
        return [DtmfRelayBody(e.digit, max(1, round(e.duration_ms))) for e in events if e.ended]

    def receive(self, timestamp: int, payload: bytes) -> list[DtmfRelayBody]:
        return self._bodies(self._rx.receive(timestamp, payload))

    def expire(self) -> list[DtmfRelayBody]:
        return self._bodies(self._rx.expire())


class InbandToRfc4733:
    """PCM in (a leg sending tones), telephone-event packets out. The RTP timestamp of an
    event is the stream timestamp of the tone's first sample (``base_timestamp`` is the
    timestamp of the first sample fed)."""

    def __init__(self, base_timestamp: int, sample_rate: int = 8000) -> None:
        self.base = base_timestamp
        self.sample_rate = sample_rate
        self._det = DtmfDetector(sample_rate)

    def _packets(self, found: list[DetectedDigit]) -> list[ScheduledPacket]:
        out: list[ScheduledPacket] = []
        for d in found:
            out += encode_digit(
                d.digit,
                start_timestamp=(self.base + d.start_sample) & 0xFFFFFFFF,
                duration_ms=d.duration_ms,
                clock_rate=self.sample_rate,
            )
        return out

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[ScheduledPacket]:
        return self._packets(self._det.feed(pcm))

    def flush(self) -> list[ScheduledPacket]:
        return self._packets(self._det.flush())
