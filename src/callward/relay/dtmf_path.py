"""DTMF conversion in the relay's data path: one :class:`DtmfDirection` per direction whose
two legs negotiated different DTMF methods (``rfc4733`` | ``inband`` | ``info``).

Sans-IO: :meth:`DtmfDirection.process` takes one plain RTP packet from the source leg and
returns the plain packets to send toward the destination leg (0, 1 or several), so it can be
tested without sockets; the session does SRTP and sockets.

- ``rfc4733 -> inband``: telephone-events (RFC 4733 §2.5.2, de-duplicated) are dropped and
  the tone is synthesised into the G.711 stream (same SSRC, RTP timestamps from the event's
  timestamp, RFC 4733 §2.3.1) as the event's duration grows; source audio frames inside the
  event's window are dropped, so the tone *replaces* the audio.
- ``inband -> rfc4733``: the Goertzel detector runs on the decoded G.711; once a tone has lasted
  ``START_MS`` a start event goes out (marker, sent three times, §2.5.1.2), updates every 50 ms,
  and the end (E bit) three times (§2.5.1.4) when the tone stops; the tone audio is replaced by
  silence while the detector sees it. The first ~25 ms of a tone (one detector block) cannot
  be known to be a tone yet and leaks; Q.24 receivers reject tones that short.
- ``* -> info``: finished digits are reported through ``on_digit(digit, duration_ms)``; the edge
  sends the SIP INFO, the relay stays media-only. Event packets are dropped, tones silenced.

Dropping or inserting packets renumbers the stream: :class:`_SeqMap` keeps sequence numbers
contiguous toward the destination (RFC 3550 §5.1: receivers would count a gap as loss).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callward.errors import MediaError
from callward.media.dtmf_inband import COVER, HIGH, KEYPAD, LOW, DtmfDetector
from callward.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callward.rtp.dtmf import (
    ScheduledPacket,
    TelephoneEvent,
    TelephoneEventReceiver,
    digit_to_event,
    encode_digit,
    parse_telephone_event,
)
from callward.rtp.packet import RtpPacket

__all__ = ["DTMF_MODES", "DtmfDirection", "tone_samples"]

DTMF_MODES = ("rfc4733", "inband", "info")
PCMU, PCMA = 0, 8
#: a detected tone becomes an RFC 4733 start event once it has lasted this long (Q.24 accepts
#: 40 ms tones; the detector's own minimum is 32 ms)
START_MS = 40.0
UPDATE_MS = 50.0
#: per-tone peak level of synthesised tones (dBFS), inside Q.24's acceptance range
TONE_DBFS = -10.0
#: an event whose end never arrives stops replacing audio this long after its last update
STALE_SAMPLES_S = 1.0

DigitHook = Callable[[str, float], None]


def _freqs(digit: str) -> tuple[float, float]:
    for r, row in enumerate(KEYPAD):
        c = row.find(digit)
        if c >= 0:
            return LOW[r], HIGH[c]
    raise MediaError(f"{digit!r} has no DTMF tone")


def tone_samples(digit: str, first: int, count: int, rate: int = 8000) -> npt.NDArray[np.int16]:
    """Samples ``first .. first + count`` of the digit's tone pair (phase-continuous across
    frames because the phase is computed from the absolute sample index)."""
    lo, hi = _freqs(digit)
    n = np.arange(first, first + count) / rate
    amp = 32768.0 * 10 ** (TONE_DBFS / 20)
    wave = amp * (np.sin(2 * np.pi * lo * n) + np.sin(2 * np.pi * hi * n))
    return np.round(wave).astype(np.int16)


def _decode(pt: int, payload: bytes) -> npt.NDArray[np.int16]:
    return ulaw_decode(payload) if pt == PCMU else alaw_decode(payload)


def _encode(pt: int, pcm: npt.NDArray[np.int16]) -> bytes:
    return ulaw_encode(pcm) if pt == PCMU else alaw_encode(pcm)


def _silence(pt: int, n: int) -> bytes:
    return (b"\xff" if pt == PCMU else b"\xd5") * n


def _ts_diff(a: int, b: int) -> int:
    """a - b in RTP timestamp arithmetic (signed, modulo 2^32)."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


class _SeqMap:
    def __init__(self) -> None:
        self.delta = 0
        self.last: int | None = None

    def map(self, seq: int) -> int:
        self.last = (seq + self.delta) & 0xFFFF
        return self.last

    def drop(self) -> None:
        self.delta -= 1

    def insert(self) -> int:
        self.delta += 1
        self.last = random.randrange(0x8000) if self.last is None else (self.last + 1) & 0xFFFF
        return self.last


@dataclass
class _Tone:
    """A tone being written into the destination's G.711 stream."""

    digit: str
    ts0: int
    covered: int = 0  # samples already sent
    total: int | None = None  # known once the event ended
    key: int = 0  # the RFC 4733 event timestamp it came from
    injected: bool = False  # an INFO digit: replaces the destination's audio frames


@dataclass
class _Detected:
    """A tone being announced as RFC 4733 events."""

    digit: str
    ts0: int
    sent_duration: int


class DtmfDirection:
    """Packets from a leg in ``src_mode`` toward a leg in ``dst_mode``."""

    def __init__(
        self,
        src_mode: str,
        dst_mode: str,
        *,
        src_event_pt: int = 101,
        dst_event_pt: int = 101,
        clock_rate: int = 8000,
        on_digit: DigitHook | None = None,
    ) -> None:
        if src_mode not in DTMF_MODES or dst_mode not in DTMF_MODES:
            raise MediaError(f"DTMF mode must be one of {', '.join(DTMF_MODES)}")
        self.src_mode, self.dst_mode = src_mode, dst_mode
        self.src_pt, self.dst_pt = src_event_pt, dst_event_pt
        self.rate = clock_rate
        self.on_digit = on_digit
        self.seq = _SeqMap()
        self.audio_pt = PCMU
        self.ssrc: int | None = None
        self.last_ts: int | None = None  # RTP timestamp of the last packet sent toward dst
        self.digits_converted = 0
        self._rx = TelephoneEventReceiver(clock_rate)
        self._tone: _Tone | None = None
        self._pending: tuple[str, int] | None = None  # injected digit waiting for audio
        self._det: DtmfDetector | None = None
        self._det_base = 0
        self._next_ts: int | None = None
        self._detected: _Detected | None = None
        self._events: list[RtpPacket] = []
        self._audio_end: int | None = None  # timestamp just after the last audio sent

    # -- helpers ----------------------------------------------------------------------------
    def _out(self, pkt: RtpPacket, payload: bytes | None = None) -> RtpPacket:
        out = RtpPacket(
            pkt.payload_type,
            self.seq.map(pkt.sequence_number),
            pkt.timestamp,
            pkt.ssrc,
            pkt.payload if payload is None else payload,
            marker=pkt.marker,
            csrc=pkt.csrc,
        )
        self.last_ts = out.timestamp
        if out.payload_type in (PCMU, PCMA):
            self._audio_end = (out.timestamp + len(out.payload)) & 0xFFFFFFFF
        return out

    def event_packet(self, ts: int, ev: TelephoneEvent, marker: bool) -> RtpPacket:
        ssrc = self.ssrc if self.ssrc is not None else random.getrandbits(32)
        self.ssrc = ssrc
        return RtpPacket(self.dst_pt, self.seq.insert(), ts & 0xFFFFFFFF, ssrc, bytes(ev), marker)

    def _digit_done(self, digit: str, duration_ms: float) -> None:
        self.digits_converted += 1
        if self.on_digit is not None:
            self.on_digit(digit, duration_ms)

    # -- data path --------------------------------------------------------------------------
    def process(self, pkt: RtpPacket) -> list[RtpPacket]:
        self.ssrc = pkt.ssrc
        is_event = pkt.payload_type == self.src_pt and self.src_mode == "rfc4733"
        if is_event and self.dst_mode != "rfc4733":
            return self._from_events(pkt)
        if pkt.payload_type not in (PCMU, PCMA):
            return [self._out(pkt)]
        self.audio_pt = pkt.payload_type
        if self.src_mode == "inband" and self.dst_mode != "inband":
            pkt = self._detect(pkt)
            events = self._flush_detected()  # numbered before this frame: sent first
            audio = self._out_audio(pkt)
            return events if audio is None else [*events, audio]
        out = self._out_audio(pkt)
        return [] if out is None else [out]

    def _out_audio(self, pkt: RtpPacket) -> RtpPacket | None:
        """Forward one audio frame, unless a tone replaces it."""
        if self._pending is not None and self._tone is None:
            digit, total = self._pending
            self._pending = None
            self._tone = _Tone(digit, pkt.timestamp, total=total, injected=True)
        tone = self._tone
        if tone is None or self.dst_mode != "inband":
            return self._out(pkt)
        off = _ts_diff(pkt.timestamp, tone.ts0)
        if off < 0:
            return self._out(pkt)
        if tone.injected:
            return self._replace_frame(pkt, tone, off)
        # synthesised tone (from RFC 4733): audio inside the event's window is dropped
        stale = tone.covered + int(STALE_SAMPLES_S * self.rate)
        if off < (tone.total if tone.total is not None else stale):
            self.seq.drop()
            return None
        self._tone = None  # past the event (or its end never came): the audio is back
        return self._out(pkt)

    def _replace_frame(self, pkt: RtpPacket, tone: _Tone, off: int) -> RtpPacket:
        """An injected (INFO) digit rides on the destination's own audio frames."""
        assert tone.total is not None
        n = len(pkt.payload)
        if off >= tone.total:
            self._tone = None
            self.digits_converted += 1
            return self._out(pkt)
        k = min(n, tone.total - off)
        pcm = tone_samples(tone.digit, off, k, self.rate)
        payload = _encode(pkt.payload_type, pcm) + _silence(pkt.payload_type, n - k)
        return self._out(pkt, payload=payload)

    def _from_events(self, pkt: RtpPacket) -> list[RtpPacket]:
        """An RFC 4733 packet toward an inband or INFO leg: never forwarded as such."""
        self.seq.drop()
        try:
            ev = parse_telephone_event(pkt.payload)
            changes = self._rx.receive(pkt.timestamp, pkt.payload)
        except MediaError:
            return []
        out: list[RtpPacket] = []
        for change in changes:
            if not change.ended:
                if self.dst_mode == "inband" and change.digit != "!":
                    new = _Tone(change.digit, change.timestamp, key=change.timestamp)
                    if self._audio_end is not None:
                        # audio for the event's first samples already went out: the tone
                        # starts after it (never two packets with one timestamp)
                        late = _ts_diff(self._audio_end, new.ts0)
                        new.covered = late if 0 < late < self.rate else 0
                    self._tone = new
                continue
            self._digit_done(change.digit, change.duration_ms)
            tone = self._tone
            if tone is not None and tone.key == change.timestamp:
                tone.total = round(change.duration_ms * self.rate / 1000)
                out += self._synthesise(tone, tone.total)
        tone = self._tone
        if tone is not None and tone.total is None and tone.key == pkt.timestamp:
            frame = self.rate // 50
            whole = (ev.duration // frame) * frame  # full 20 ms frames so far
            out += self._synthesise(tone, whole)
        return out

    def _synthesise(self, tone: _Tone, upto: int) -> list[RtpPacket]:
        out = []
        while tone.covered < upto:
            k = min(self.rate // 50, upto - tone.covered)
            pcm = tone_samples(tone.digit, tone.covered, k, self.rate)
            ts = (tone.ts0 + tone.covered) & 0xFFFFFFFF
            ssrc = self.ssrc if self.ssrc is not None else 0
            out.append(
                RtpPacket(
                    self.audio_pt,
                    self.seq.insert(),
                    ts,
                    ssrc,
                    _encode(self.audio_pt, pcm),
                    marker=tone.covered == 0,  # a talkspurt begins (RFC 3551 §4.1)
                )
            )
            self.last_ts = ts
            tone.covered += k
        return out

    # -- in-band detection --------------------------------------------------------------------
    def _detect(self, pkt: RtpPacket) -> RtpPacket:
        pcm = _decode(pkt.payload_type, pkt.payload)
        if self._det is None or self._next_ts is None:
            self._det, self._det_base = DtmfDetector(self.rate), pkt.timestamp
            self._next_ts = pkt.timestamp
        gap = _ts_diff(pkt.timestamp, self._next_ts)
        if gap < 0 or gap > self.rate:  # reordered or a long jump: start over
            self._det, self._det_base = DtmfDetector(self.rate), pkt.timestamp
            self._detected = None
        elif gap:
            self._det.feed(np.zeros(gap, dtype=np.int16))
        det = self._det
        found = det.feed(pcm)
        self._next_ts = (pkt.timestamp + len(pcm)) & 0xFFFFFFFF
        for d in found:
            ts0 = (self._det_base + d.start_sample) & 0xFFFFFFFF
            total = min(0xFFFF, round(d.duration_ms * self.rate / 1000))
            self._digit_done(d.digit, d.duration_ms)
            if self.dst_mode != "rfc4733":
                continue
            cur = self._detected
            if cur is not None and cur.digit == d.digit:
                end = TelephoneEvent(digit_to_event(d.digit), True, 10, total)
                self._events += [self.event_packet(cur.ts0, end, False) for _ in range(3)]
            else:  # too short to have been announced live: send the whole event now
                for p in encode_digit(d.digit, start_timestamp=ts0, duration_ms=d.duration_ms):
                    self._events.append(self.event_packet(p.timestamp, p.event, p.marker))
            self._detected = None
        # the detector's open run (same module family: media.dtmf_inband keeps it as state)
        run: list[tuple[int, float]] = det._run
        run_digit: str = det._run_digit
        if self.dst_mode == "rfc4733" and run_digit:
            heard_until = self._det_base + det._consumed + len(det._buf)
            start = self._det_base + run[0][0] + round(det.block * (1 - COVER))
            elapsed = _ts_diff(heard_until & 0xFFFFFFFF, start & 0xFFFFFFFF)
            cur = self._detected
            code = digit_to_event(run_digit)
            if cur is None and elapsed >= START_MS * self.rate / 1000:
                self._detected = _Detected(run_digit, start & 0xFFFFFFFF, elapsed)
                first = TelephoneEvent(code, False, 10, elapsed)
                self._events += [self.event_packet(start, first, True) for _ in range(3)]
            elif cur is not None and elapsed - cur.sent_duration >= UPDATE_MS * self.rate / 1000:
                cur.sent_duration = min(0xFFFF, elapsed)
                upd = TelephoneEvent(code, False, 10, cur.sent_duration)
                self._events.append(self.event_packet(cur.ts0, upd, False))
        if run_digit or found:  # suppress the tone's audio
            return RtpPacket(
                pkt.payload_type, pkt.sequence_number, pkt.timestamp, pkt.ssrc,
                _silence(pkt.payload_type, len(pkt.payload)), pkt.marker, pkt.csrc,
            )  # fmt: skip
        return pkt

    def _flush_detected(self) -> list[RtpPacket]:
        events, self._events = self._events, []
        return events

    # -- INFO digits into this direction -----------------------------------------------------
    def inject(self, digit: str, duration_ms: float, ts: int) -> list[ScheduledPacket]:
        """A digit that arrived by SIP INFO, to be played toward the destination leg.

        rfc4733: returns the events to send (each ``at_ms`` from now; build each with
        :meth:`event_packet` at send time so sequence numbers stay in order), RTP timestamp
        ``ts`` (where the destination's stream is now). inband: the tone replaces the next
        audio frames sent toward the destination (nothing is returned)."""
        if self.dst_mode == "inband":
            digit_to_event(digit)
            _freqs(digit.upper())
            self._pending = (digit.upper(), round(duration_ms * self.rate / 1000))
            return []
        if self.dst_mode == "rfc4733":
            self.digits_converted += 1
            return encode_digit(digit, start_timestamp=ts, duration_ms=duration_ms)
        raise MediaError("an INFO digit toward an INFO leg is the edge's to forward")
