"""The recording announcement the relay plays into the media: a G.711 packet's audio becomes
the tone (checked with the standard library's independent G.711 decoder and a Goertzel
filter), header kept; nothing changes outside the beep, after the recording stops, or for a
codec it cannot write."""

from __future__ import annotations

import math
import warnings

import pytest

from callward.privacy.announcement import RecordingAnnouncement

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")  # stdlib G.711 (until Python 3.13)


def tone_ratio(samples: list[int], freq: float = 1400.0, rate: int = 8000) -> float:
    """Share of the signal's power at ``freq`` (Goertzel)."""
    w = 2 * math.pi * freq / rate
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + 2 * math.cos(w) * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - 2 * math.cos(w) * s1 * s2
    total = sum(x * x for x in samples) or 1.0
    return power / (total * len(samples) / 2)


def pcm(payload: bytes, pt: int) -> list[int]:
    lin = audioop.ulaw2lin(payload, 2) if pt == 0 else audioop.alaw2lin(payload, 2)
    return [int.from_bytes(lin[i : i + 2], "little", signed=True) for i in range(0, len(lin), 2)]


def rtp(pt: int, seq: int, payload: bytes) -> bytes:
    return (
        bytes([0x80, pt, seq >> 8, seq & 255])
        + (seq * 160).to_bytes(4, "big")
        + b"\x12\x34\x56\x78"
        + payload
    )


@pytest.mark.parametrize("pt", [0, 8])
def test_g711_audio_becomes_the_tone_for_the_beep_only(pt: int) -> None:
    silence = bytes([0xFF if pt == 0 else 0xD5]) * 160
    ann = RecordingAnnouncement()
    out = [ann.overlay(1, rtp(pt, n, silence), 100.0 + n * 0.02) for n in range(40)]
    for n, pkt in enumerate(out):
        assert pkt[:12] == rtp(pt, n, silence)[:12]  # SSRC, sequence, timestamp kept
        if n < 25:  # 0.5 s at 20 ms
            assert tone_ratio(pcm(pkt[12:], pt)) > 0.9
        else:
            assert pkt[12:] == silence
    assert ann.played == [0, 25]


def test_no_tone_once_recording_stops_and_other_codecs_pass() -> None:
    running = [True]
    ann = RecordingAnnouncement(active=lambda: running[0])
    speech = bytes(range(160))
    assert ann.overlay(0, rtp(0, 1, speech), 1.0) != rtp(0, 1, speech)
    running[0] = False
    assert ann.overlay(0, rtp(0, 2, speech), 1.02) == rtp(0, 2, speech)
    running[0] = True
    opus = rtp(111, 3, b"\x01" * 40)
    assert ann.overlay(0, opus, 1.04) == opus and ann.unsupported == 1
    assert ann.overlay(0, rtp(0, 4, speech), 16.1) != rtp(0, 4, speech)  # again 15 s on
