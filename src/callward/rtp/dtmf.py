"""DTMF out of band: RFC 4733 telephone-events in RTP and SIP INFO ``application/dtmf-relay``
bodies.

Sending (RFC 4733 §2.5.1): the first packet of an event carries the marker bit and is sent
``start_repeats`` times so one loss does not delay the digit; updates follow every
``interval_ms`` with the growing duration and the *same* RTP timestamp (the event's start);
the end packet (E bit) is sent ``end_repeats`` times (§2.5.1.4: "a total of three times").

Receiving (RFC 4733 §2.5.2): an event is identified by its RTP timestamp; retransmitted
starts, updates and ends are de-duplicated, and an event whose end packets were all lost is
closed when a new event starts or :meth:`TelephoneEventReceiver.expire` is called.
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.errors import MediaError

__all__ = [
    "DIGITS",
    "DigitEvent",
    "DtmfRelayBody",
    "ScheduledPacket",
    "TelephoneEvent",
    "TelephoneEventReceiver",
    "digit_to_event",
    "encode_digit",
    "event_to_digit",
    "parse_telephone_event",
]

#: RFC 4733 §3.2 Table 3: event codes 0-15 for DTMF, 16 for hook flash.
DIGITS = "0123456789*#ABCD"
FLASH = 16
MAX_DURATION = 0xFFFF


def digit_to_event(digit: str) -> int:
    d = digit.upper()
    if d == "!" or d == "FLASH":
        return FLASH
    idx = DIGITS.find(d)
    if len(d) != 1 or idx < 0:
        raise MediaError(f"{digit!r} is not a DTMF digit (0-9 * # A-D)")
    return idx


def event_to_digit(event: int) -> str:
    if 0 <= event < 16:
        return DIGITS[event]
    if event == FLASH:
        return "!"
    raise MediaError(f"telephone-event {event} is not a DTMF digit or flash")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """RFC 4733 §2.3 payload: event, E bit, volume (-dBm0, 0-63), duration (timestamp units)."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise MediaError(f"telephone-event code {self.event} out of range")
        if not 0 <= self.volume <= 63:
            raise MediaError(f"telephone-event volume {self.volume} out of range 0-63")
        if not 0 <= self.duration <= MAX_DURATION:
            raise MediaError(f"telephone-event duration {self.duration} out of range")

    def __bytes__(self) -> bytes:
        # the R bit (reserved) is sent as zero, §2.3
        return bytes(
            (
                self.event,
                (0x80 if self.end else 0) | self.volume,
                self.duration >> 8,
                self.duration & 0xFF,
            )
        )


def parse_telephone_event(payload: bytes) -> TelephoneEvent:
    """Parse the first 4-octet event block (§2.3; RFC 2198 redundancy is not unpacked here)."""
    if len(payload) < 4:
        raise MediaError(f"telephone-event payload of {len(payload)} bytes is shorter than 4")
    return TelephoneEvent(
        payload[0], bool(payload[1] & 0x80), payload[1] & 0x3F, (payload[2] << 8) | payload[3]
    )


@dataclass(frozen=True, slots=True)
class ScheduledPacket:
    """One packet to send ``at_ms`` after the key press, with the RTP timestamp to use."""

    at_ms: float
    marker: bool
    timestamp: int
    event: TelephoneEvent


def encode_digit(
    digit: str,
    *,
    start_timestamp: int,
    duration_ms: float,
    clock_rate: int = 8000,
    interval_ms: float = 50.0,
    volume: int = 10,
    start_repeats: int = 3,
    end_repeats: int = 3,
) -> list[ScheduledPacket]:
    """The packets announcing one digit, in send order (RFC 4733 §2.5.1)."""
    event = digit_to_event(digit)
    if duration_ms <= 0 or interval_ms <= 0:
        raise MediaError("DTMF duration and interval must be positive")
    if start_repeats < 1 or end_repeats < 1:
        raise MediaError("DTMF start/end repeats must be >= 1")
    total = round(duration_ms * clock_rate / 1000)
    if total > MAX_DURATION:
        # §2.5.1.3 segments longer events; a keypad press never needs that
        raise MediaError(f"DTMF duration {duration_ms} ms exceeds one RFC 4733 event")
    step = round(interval_ms * clock_rate / 1000)
    ts = start_timestamp & 0xFFFFFFFF
    out: list[ScheduledPacket] = []
    first = TelephoneEvent(event, False, volume, min(step, total))
    for _ in range(start_repeats):
        out.append(ScheduledPacket(0.0, True, ts, first))
    elapsed = step
    while elapsed + step < total:
        elapsed += step
        at = elapsed * 1000 / clock_rate - interval_ms
        out.append(ScheduledPacket(at, False, ts, TelephoneEvent(event, False, volume, elapsed)))
    end = TelephoneEvent(event, True, volume, total)
    end_at = max(duration_ms, out[-1].at_ms)
    for _ in range(end_repeats):
        out.append(ScheduledPacket(end_at, False, ts, end))
    return out


@dataclass(frozen=True, slots=True)
class DigitEvent:
    """What a receiver reports: a digit started, or ended with its final duration (ms)."""

    digit: str
    timestamp: int
    ended: bool
    duration_ms: float = 0.0


class TelephoneEventReceiver:
    """De-duplicating RFC 4733 receiver for one RTP stream's telephone-event payload type."""

    def __init__(self, clock_rate: int = 8000) -> None:
        if clock_rate <= 0:
            raise MediaError("clock rate must be positive")
        self.clock_rate = clock_rate
        self._current: tuple[int, int] | None = None  # (timestamp, event)
        self._current_duration = 0
        self._ended: set[tuple[int, int]] = set()
        self._ended_order: list[tuple[int, int]] = []

    def _remember_end(self, key: tuple[int, int]) -> None:
        self._ended.add(key)
        self._ended_order.append(key)
        if len(self._ended_order) > 64:  # bounded memory for long calls
            self._ended.discard(self._ended_order.pop(0))

    def _ms(self, duration: int) -> float:
        return duration * 1000.0 / self.clock_rate

    def receive(self, timestamp: int, payload: bytes) -> list[DigitEvent]:
        """Feed one telephone-event packet; return the digit events it newly causes."""
        ev = parse_telephone_event(payload)
        digit = event_to_digit(ev.event)
        key = (timestamp, ev.event)
        out: list[DigitEvent] = []
        if key in self._ended:
            return out  # a retransmitted end (or late update) of a finished event
        if self._current != key:
            if self._current is not None:
                # the previous event's end packets were all lost: close it now (§2.5.2.1)
                prev_ts, prev_ev = self._current
                out.append(
                    DigitEvent(
                        event_to_digit(prev_ev), prev_ts, True, self._ms(self._current_duration)
                    )
                )
                self._remember_end(self._current)
            self._current = key
            self._current_duration = ev.duration
            out.append(DigitEvent(digit, timestamp, False))
        else:
            self._current_duration = max(self._current_duration, ev.duration)
        if ev.end:
            out.append(DigitEvent(digit, timestamp, True, self._ms(ev.duration)))
            self._remember_end(key)
            self._current = None
        return out

    def expire(self) -> list[DigitEvent]:
        """Close an event whose end never arrived (call when the stream goes quiet)."""
        if self._current is None:
            return []
        ts, ev = self._current
        self._remember_end(self._current)
        self._current = None
        return [DigitEvent(event_to_digit(ev), ts, True, self._ms(self._current_duration))]


@dataclass(frozen=True, slots=True)
class DtmfRelayBody:
    """A SIP INFO ``application/dtmf-relay`` body: ``Signal=5`` and ``Duration=160`` (ms).

    There is no RFC for this format; this follows the common Cisco/Asterisk form. Signal 10
    and 11 are accepted for * and #, and ``!`` / 16 for flash, as some PBXs send."""

    digit: str
    duration_ms: int = 160

    MAX_BODY = 1024

    def __post_init__(self) -> None:
        digit_to_event(self.digit)
        if not 0 < self.duration_ms <= 60_000:
            raise MediaError(f"dtmf-relay duration {self.duration_ms} ms out of range")

    def __bytes__(self) -> bytes:
        return f"Signal={self.digit}\r\nDuration={self.duration_ms}\r\n".encode("ascii")

    @classmethod
    def parse(cls, body: bytes) -> DtmfRelayBody:
        if len(body) > cls.MAX_BODY:
            raise MediaError("dtmf-relay body too long")
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            raise MediaError("dtmf-relay body is not ASCII") from None
        fields: dict[str, str] = {}
        for line in text.replace("\r", "\n").split("\n"):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise MediaError(f"dtmf-relay line {line.strip()!r} has no '='")
            fields[name.strip().lower()] = value.strip()
        signal = fields.get("signal")
        if not signal:
            raise MediaError("dtmf-relay body has no Signal")
        if signal.isdigit() and len(signal) > 1:
            signal = event_to_digit(int(signal)) if int(signal) <= 16 else signal
        digit = event_to_digit(digit_to_event(signal))
        duration_text = fields.get("duration", "160")
        if not duration_text.isdigit():
            raise MediaError(f"dtmf-relay Duration {duration_text!r} is not a number")
        return cls(digit, int(duration_text))
