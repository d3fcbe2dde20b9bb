"""DTMF conversion in the relay over real loopback sockets with SRTP on both legs: RFC 4733 in
on one leg, in-band tones out on the other (decoded with the Goertzel detector of
``media.dtmf_inband``, which knows nothing of the relay), the reverse direction, and the INFO
hook / injection API. Expected digits, durations and timestamps are those we put in."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.media.dtmf_inband import detect_dtmf, generate_dtmf
from callward.media.g711 import ulaw_decode, ulaw_encode
from callward.relay.dtmf_path import DtmfDirection
from callward.relay.leg import LegConfig
from callward.relay.session import MediaRelay, RelaySession
from callward.rtp.dtmf import encode_digit, parse_telephone_event
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpKeying

pytestmark = pytest.mark.timeout(60)

FRAME = 160


def background(n: int, first: int = 0) -> np.ndarray:
    """A 400 Hz hum at -30 dBFS: audio that is clearly not DTMF."""
    t = np.arange(first, first + n) / 8000
    return np.round(1000 * np.sin(2 * np.pi * 400 * t)).astype(np.int16)


async def open_call(make_phone, a_mode: str, b_mode: str):  # type: ignore[no-untyped-def]
    ka, kb, kc, kd = (SrtpKeying.generate() for _ in range(4))
    alice = await make_phone(tx=ka, rx=kb)
    bob = await make_phone(tx=kc, rx=kd)
    relay = MediaRelay()
    s = await relay.create_session(
        "dtmf-call",
        LegConfig("a", remote=alice.address, srtp_rx=ka, srtp_tx=kb, dtmf=a_mode),
        LegConfig("b", remote=bob.address, srtp_rx=kc, srtp_tx=kd, dtmf=b_mode),
    )
    return relay, s, alice, bob


async def send_all(phone, dest, packets: list[RtpPacket]) -> None:  # type: ignore[no-untyped-def]
    assert phone.tx is not None and phone.transport is not None
    for p in packets:
        phone.transport.sendto(phone.tx.protect(bytes(p)), dest)
        await asyncio.sleep(0.001)


async def drain(phone, quiet: float = 0.4) -> list[RtpPacket]:  # type: ignore[no-untyped-def]
    got = []
    while True:
        try:
            wire, _ = await phone.recv(quiet)
        except TimeoutError:
            return got
        got.append(parse_rtp(phone.rx.unprotect(wire)))


def pcm_of(packets: list[RtpPacket], total: int) -> np.ndarray:
    out = np.zeros(total, dtype=np.int16)
    for p in packets:
        if p.payload_type == 0 and p.timestamp < total:
            pcm = ulaw_decode(p.payload)
            out[p.timestamp : p.timestamp + len(pcm)] = pcm[: total - p.timestamp]
    return out


def assert_contiguous(packets: list[RtpPacket]) -> None:
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs


def phone_stream_with_events(digits: list[tuple[str, int, int]], frames: int) -> list[RtpPacket]:
    """What a phone sends: 20 ms audio frames all along, and for each (digit, start ts, ms)
    the RFC 4733 packets at their send times (audio and events interleaved by time)."""
    timed: list[tuple[float, int, RtpPacket]] = []
    for k in range(frames):
        payload = ulaw_encode(background(FRAME, k * FRAME))
        timed.append((k * 20.0, 1, RtpPacket(0, 0, k * FRAME, 0xA11CE, payload)))
    for digit, ts, ms in digits:
        for p in encode_digit(digit, start_timestamp=ts, duration_ms=ms):
            pkt = RtpPacket(101, 0, p.timestamp, 0xA11CE, bytes(p.event), marker=p.marker)
            timed.append((ts / 8 + p.at_ms, 0, pkt))  # the event goes before that frame
    timed.sort(key=lambda x: (x[0], x[1]))
    return [
        RtpPacket(p.payload_type, seq, p.timestamp, p.ssrc, p.payload, p.marker)
        for seq, (_, _, p) in enumerate(timed, start=100)
    ]


async def test_rfc4733_in_becomes_tones_out(make_phone) -> None:  # type: ignore[no-untyped-def]
    relay, s, alice, bob = await open_call(make_phone, "rfc4733", "inband")
    try:
        digits = [("5", 8000, 120), ("#", 16000, 200)]
        await send_all(alice, s.local_address("a"), phone_stream_with_events(digits, 120))
        got = await drain(bob)
    finally:
        await relay.close_all()
    assert got and all(p.payload_type == 0 for p in got)  # no telephone-event reaches bob
    assert_contiguous(got)
    tss = [p.timestamp for p in got]
    assert len(set(tss)) == len(tss)  # tone frames replace audio frames, never doubled
    found = detect_dtmf(pcm_of(got, 120 * FRAME))
    assert [d.digit for d in found] == ["5", "#"]
    for d, (_, ts, ms) in zip(found, digits, strict=True):
        assert d.duration_ms == pytest.approx(ms, abs=6)
        assert abs(d.start_sample - ts) <= 25  # within about one detector hop
    # audio outside the events is bob's untouched hum
    pcm = pcm_of(got, 120 * FRAME)
    assert np.array_equal(pcm[:7000], ulaw_decode(ulaw_encode(background(7000))))


def phone_stream_with_tones(spec: list[tuple[str, int, int]], frames: int) -> list[RtpPacket]:
    pcm = background(frames * FRAME)
    for digit, start, ms in spec:
        tone = generate_dtmf(digit, tone_ms=ms, gap_ms=0)
        pcm[start : start + len(tone)] = tone
    return [
        RtpPacket(
            0, 500 + k, 4000 + k * FRAME, 0xB0B, ulaw_encode(pcm[k * FRAME : (k + 1) * FRAME])
        )
        for k in range(frames)
    ]


async def test_tones_in_become_rfc4733_out(make_phone) -> None:  # type: ignore[no-untyped-def]
    relay, s, alice, bob = await open_call(make_phone, "rfc4733", "inband")
    spec = [("7", 4000, 100), ("0", 9000, 160), ("D", 14000, 60)]
    try:
        await send_all(bob, s.local_address("b"), phone_stream_with_tones(spec, 110))
        got = await drain(alice)
    finally:
        await relay.close_all()
    assert_contiguous(got)
    events = [p for p in got if p.payload_type == 101]
    audio = [p for p in got if p.payload_type == 0]
    by_ts: dict[int, list] = {}
    for p in events:
        by_ts.setdefault(p.timestamp, []).append((p.marker, parse_telephone_event(p.payload)))
    assert len(by_ts) == 3
    for (ts, evs), (digit, start, ms) in zip(sorted(by_ts.items()), spec, strict=True):
        assert {"0123456789*#ABCD"[e.event] for _, e in evs} == {digit}
        assert abs(ts - (4000 + start)) <= 25  # event timestamp = tone start in the stream
        ends = [e for _, e in evs if e.end]
        assert len(ends) == 3 and len({e.duration for e in ends}) == 1  # E bit sent 3 times
        assert ends[0].duration / 8 == pytest.approx(ms, abs=6)
        starts = [e for m, e in evs if m]
        assert len(starts) == 3 and all(not e.end for e in starts)  # start sent 3 times
    # the tones themselves were silenced: no digit is left in the audio alice hears
    pcm = np.concatenate([ulaw_decode(p.payload) for p in audio])
    assert detect_dtmf(pcm) == []


async def test_info_leg_hook_and_injection(make_phone) -> None:  # type: ignore[no-untyped-def]
    relay, s, alice, bob = await open_call(make_phone, "rfc4733", "info")
    heard: list[tuple[str, str, float]] = []
    s.on_dtmf = lambda leg, digit, ms: heard.append((leg, digit, ms))
    try:
        stream = phone_stream_with_events([("9", 2000, 140)], 30)
        await send_all(alice, s.local_address("a"), stream)
        to_bob = await drain(bob)
        assert heard == [("b", "9", 140.0)]  # the edge would now send INFO Signal=9
        assert to_bob and all(p.payload_type == 0 for p in to_bob)
        assert_contiguous(to_bob)
        # bob's INFO digit into alice's rfc4733 leg: paced events, start marker, 3 ends
        bob.send_rtp(s.local_address("b"), 1)
        await alice.recv()
        s.inject_digit("a", "3", 100)
        got = await drain(alice, 0.5)
        evs = [parse_telephone_event(p.payload) for p in got if p.payload_type == 101]
        assert {e.event for e in evs} == {3} and sum(e.end for e in evs) == 3
        assert next(e.duration for e in evs if e.end) == 800
        with pytest.raises(MediaError):
            s.inject_digit("b", "3", 100)  # INFO to INFO is the edge's business
    finally:
        await relay.close_all()


async def test_info_digit_injected_as_tone(make_phone) -> None:  # type: ignore[no-untyped-def]
    relay, s, alice, bob = await open_call(make_phone, "info", "inband")
    try:
        frames = [
            RtpPacket(0, k, k * FRAME, 0xA, ulaw_encode(background(FRAME, k * FRAME)))
            for k in range(30)
        ]
        await send_all(alice, s.local_address("a"), frames[:5])
        await asyncio.sleep(0.1)
        s.inject_digit("b", "*", 120)  # the INFO arrives: the tone rides on the next frames
        await send_all(alice, s.local_address("a"), frames[5:])
        got = await drain(bob)
    finally:
        await relay.close_all()
    found = detect_dtmf(pcm_of(got, 30 * FRAME))
    assert [d.digit for d in found] == ["*"]
    assert found[0].duration_ms == pytest.approx(120, abs=6)
    assert abs(found[0].start_sample - 5 * FRAME) <= 25


def test_bad_modes_are_refused() -> None:
    with pytest.raises(MediaError):
        LegConfig("a", trusted=True, dtmf="sms")
    with pytest.raises(MediaError):
        LegConfig("a", trusted=True, dtmf_pt=8)


async def test_mode_change_mid_call(make_phone) -> None:  # type: ignore[no-untyped-def]
    relay, s, _alice, _bob = await open_call(make_phone, "rfc4733", "rfc4733")
    assert isinstance(s, RelaySession) and s.dtmf_direction("b") is None
    s.set_dtmf_mode("b", "inband")
    assert s.dtmf_direction("b") is not None and s.dtmf_direction("a") is not None
    s.set_dtmf_mode("b", "rfc4733")
    await relay.close_all()


MODES = ("rfc4733", "inband", "info")


@settings(max_examples=150, deadline=None)
@given(
    src=st.sampled_from(MODES),
    dst=st.sampled_from(MODES),
    packets=st.lists(
        st.tuples(
            st.sampled_from([0, 8, 101, 96, 13]),
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.binary(max_size=200),
            st.booleans(),
        ),
        max_size=40,
    ),
)
def test_direction_never_crashes(src: str, dst: str, packets: list) -> None:  # type: ignore[type-arg]
    d = DtmfDirection(src, dst, on_digit=lambda digit, ms: None)
    for pt, seq, ts, payload, marker in packets:
        for out in d.process(RtpPacket(pt, seq, ts, 0x5EED, payload, marker)):
            assert 0 <= out.sequence_number <= 0xFFFF
            bytes(out)


def test_lost_end_packets_give_the_audio_back() -> None:
    """All end packets lost and no next event (RFC 4733 §2.5.2.1): the relay stops
    replacing audio one second past the event's last update instead of muting forever."""
    d = DtmfDirection("rfc4733", "inband")
    out = []
    seq = 0
    for p in encode_digit("1", start_timestamp=1600, duration_ms=200)[:-3]:  # no E packets
        out += d.process(RtpPacket(101, seq, p.timestamp, 1, bytes(p.event), p.marker))
        seq += 1
    audio = ulaw_encode(background(FRAME))
    kept = []
    for k in range(10, 80):
        kept += d.process(RtpPacket(0, seq, k * FRAME, 1, audio))
        seq += 1
    tone_ts = {p.timestamp for p in out}
    assert min(tone_ts) == 1600 and all(p.payload_type == 0 for p in out)
    # last update said 1200 samples: whole 20 ms frames up to 1120 were synthesised
    assert max(tone_ts) == 1600 + 1120 - FRAME
    # audio inside the open event is dropped; from 1 s past the synthesised tone it is back
    back = 1600 + 1120 + 8000
    assert [p.timestamp for p in kept] == [k * FRAME for k in range(10, 80) if k * FRAME >= back]


async def test_injection_continues_an_unconverted_stream(make_phone) -> None:  # type: ignore[no-untyped-def]
    """Both legs RFC 4733 (no converter yet): an injected digit continues the stream's own
    SSRC, sequence numbers and timestamps."""
    relay, s, alice, bob = await open_call(make_phone, "rfc4733", "rfc4733")
    try:
        for seq in range(3):
            bob.send_rtp(s.local_address("b"), 40 + seq, ssrc=0xB0B)
            await alice.recv()
        s.inject_digit("a", "6", 60)
        bob.send_rtp(s.local_address("b"), 43, ssrc=0xB0B)
        got = await drain(alice, 0.4)
    finally:
        await relay.close_all()
    assert {p.ssrc for p in got} == {0xB0B}
    assert_contiguous(got)
    assert got[0].sequence_number == 43  # continues after the frames forwarded before
    events = [p for p in got if p.payload_type == 101]
    assert events and all(42 * 160 <= p.timestamp <= 43 * 160 + 800 for p in events)
