"""RFC 4733 telephone-events and SIP INFO dtmf-relay bodies, checked against the RFC's rules
(§2.3 layout, §2.5.1 sender redundancy, §2.5.2 receiver de-duplication)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.rtp.dtmf import (
    DigitEvent,
    DtmfRelayBody,
    ScheduledPacket,
    TelephoneEvent,
    TelephoneEventReceiver,
    digit_to_event,
    encode_digit,
    event_to_digit,
    parse_telephone_event,
)


def test_payload_layout_rfc4733_figure1() -> None:
    # event 11 ('#'), E=1, R=0, volume 10, duration 800 -> 0B 8A 03 20
    ev = TelephoneEvent(11, True, 10, 800)
    assert bytes(ev) == bytes.fromhex("0B8A0320")
    assert parse_telephone_event(bytes.fromhex("0B8A0320")) == ev
    # R bit set by a sloppy sender is ignored, volume masked to 6 bits
    assert parse_telephone_event(bytes.fromhex("05 CA 00A0")) == TelephoneEvent(5, True, 10, 160)


def test_event_codes_table3() -> None:
    assert [digit_to_event(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert digit_to_event("!") == 16 and event_to_digit(16) == "!"
    with pytest.raises(MediaError):
        digit_to_event("E")
    with pytest.raises(MediaError):
        event_to_digit(40)


def test_sender_schedule() -> None:
    pkts = encode_digit("5", start_timestamp=4000, duration_ms=200, interval_ms=50)
    # 3 start packets with M bit at t=0, updates every 50 ms, 3 end packets
    starts = [p for p in pkts if p.marker]
    ends = [p for p in pkts if p.event.end]
    assert len(starts) == 3 and all(p.at_ms == 0 for p in starts)
    assert len(ends) == 3 and all(p.event.duration == 1600 for p in ends)  # 200 ms at 8 kHz
    assert all(p.timestamp == 4000 for p in pkts)  # §2.5.1.2: timestamp is the event start
    durations = [p.event.duration for p in pkts if not p.event.end]
    assert durations == [400, 400, 400, 800, 1200]  # non-decreasing, one interval apart
    assert [p.at_ms for p in pkts if not p.marker and not p.event.end] == [50, 100]
    assert ends[0].at_ms == 200
    assert all(p.event.event == 5 for p in pkts)


def test_sender_rejects_bad_input() -> None:
    with pytest.raises(MediaError):
        encode_digit("5", start_timestamp=0, duration_ms=9000)  # > 65535 units at 8 kHz
    with pytest.raises(MediaError):
        encode_digit("x", start_timestamp=0, duration_ms=100)


def play(rx: TelephoneEventReceiver, pkts: list[ScheduledPacket]) -> list[DigitEvent]:
    out: list[DigitEvent] = []
    for p in pkts:
        out += rx.receive(p.timestamp, bytes(p.event))
    return out


def test_receiver_dedups_redundancy() -> None:
    pkts = encode_digit("7", start_timestamp=100, duration_ms=120)
    pkts += encode_digit("#", start_timestamp=2000, duration_ms=80)
    events = play(TelephoneEventReceiver(), pkts)
    assert events == [
        DigitEvent("7", 100, False),
        DigitEvent("7", 100, True, 120.0),
        DigitEvent("#", 2000, False),
        DigitEvent("#", 2000, True, 80.0),
    ]


def test_receiver_survives_loss_of_all_but_one_packet_each() -> None:
    rng = random.Random(3)
    pkts = encode_digit("1", start_timestamp=0, duration_ms=100)
    pkts2 = encode_digit("1", start_timestamp=8000, duration_ms=100)  # same digit pressed again
    # keep only one of the three end packets, lose all starts of the second digit
    kept = [p for p in pkts if not p.event.end] + [pkts[-1]]
    kept2 = [p for p in pkts2 if not p.marker]
    rng.shuffle(kept2)  # reordering inside the event
    events = play(TelephoneEventReceiver(), kept + kept2)
    assert [(e.digit, e.timestamp, e.ended) for e in events] == [
        ("1", 0, False), ("1", 0, True), ("1", 8000, False), ("1", 8000, True),
    ]  # fmt: skip


def test_receiver_closes_event_without_end() -> None:
    rx = TelephoneEventReceiver()
    pkts = [p for p in encode_digit("9", start_timestamp=0, duration_ms=150) if not p.event.end]
    events = play(rx, pkts)
    assert events == [DigitEvent("9", 0, False)]
    # the last update (sent at 50 ms) reported 800 units = 100 ms; that is all we know
    assert rx.expire() == [DigitEvent("9", 0, True, 100.0)]
    assert rx.expire() == []
    # a new event also closes a dangling one
    play(rx, [p for p in encode_digit("2", start_timestamp=800, duration_ms=60)][:3])
    ev = play(rx, encode_digit("3", start_timestamp=1600, duration_ms=60))
    assert ev[0] == DigitEvent("2", 800, True, 50.0) and ev[1].digit == "3"


@pytest.mark.parametrize(
    "body, digit, duration",
    [
        (b"Signal=5\r\nDuration=160\r\n", "5", 160),
        (b"signal= *\nduration=250", "*", 250),
        (b"Signal=11\r\nDuration=100\r\n", "#", 100),
        (b"Signal=10\r\n", "*", 160),
        (b"Signal=d\r\nDuration=90", "D", 90),
    ],
)
def test_dtmf_relay_parse(body: bytes, digit: str, duration: int) -> None:
    assert DtmfRelayBody.parse(body) == DtmfRelayBody(digit, duration)


def test_dtmf_relay_build() -> None:
    assert bytes(DtmfRelayBody("#", 200)) == b"Signal=#\r\nDuration=200\r\n"


@pytest.mark.parametrize(
    "body", [b"", b"Duration=100", b"Signal=X", b"Signal=5\r\nDuration=abc", b"junk", b"\xff"]
)
def test_dtmf_relay_bad(body: bytes) -> None:
    with pytest.raises(MediaError):
        DtmfRelayBody.parse(body)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=8)), max_size=30))
def test_receiver_never_crashes(packets: list[tuple[int, bytes]]) -> None:
    rx = TelephoneEventReceiver()
    for ts, payload in packets:
        try:
            rx.receive(ts, payload)
        except MediaError:
            pass
    rx.expire()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_relay_body_never_crashes(body: bytes) -> None:
    try:
        DtmfRelayBody.parse(body)
    except MediaError:
        pass
