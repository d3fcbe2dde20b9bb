"""G.711 bit-exact against Python 3.11's audioop (an independent C implementation) for every
input, plus code points fixed by the G.711 tables themselves."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from callward.errors import MediaError
from callward.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # pragma: no cover - Python >= 3.13
        audioop = None  # type: ignore[assignment]

needs_audioop = pytest.mark.skipif(audioop is None, reason="why: audioop removed in Python 3.13")
ALL = np.arange(-32768, 32768, dtype=np.int16)


@needs_audioop
def test_ulaw_encode_all_inputs_bit_exact() -> None:
    assert ulaw_encode(ALL) == audioop.lin2ulaw(ALL.tobytes(), 2)


@needs_audioop
def test_alaw_encode_all_inputs_bit_exact() -> None:
    assert alaw_encode(ALL) == audioop.lin2alaw(ALL.tobytes(), 2)


@needs_audioop
def test_decode_all_codes_bit_exact() -> None:
    codes = bytes(range(256))
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_g711_anchor_points() -> None:
    # G.711 Table 2a/2b: μ-law 0xFF / 0x7F are ±0, 0x80 / 0x00 are the extremes (8031*4);
    # A-law 0xD5 / 0x55 are the smallest positive / negative steps (±8 in 16-bit scale).
    assert ulaw_decode(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert alaw_decode(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]
    assert ulaw_encode(np.array([0], dtype=np.int16)) == b"\xff"
    assert alaw_encode(np.array([0], dtype=np.int16)) == b"\xd5"


def test_decode_encode_is_identity_on_codes() -> None:
    codes = bytes(c for c in range(256) if c != 0x7F)  # μ-law -0 re-encodes as +0
    assert ulaw_encode(ulaw_decode(codes)) == codes
    assert alaw_encode(alaw_decode(bytes(range(256)))) == bytes(range(256))


def test_bytes_input_and_errors() -> None:
    pcm = np.array([1000, -1000], dtype=np.int16)
    assert ulaw_encode(pcm.astype("<i2").tobytes()) == ulaw_encode(pcm)
    with pytest.raises(MediaError):
        ulaw_encode(b"\x00")
    with pytest.raises(MediaError):
        alaw_encode(np.array([1.0]))
    with pytest.raises(MediaError):
        ulaw_decode(np.array([1], dtype=np.int32))


def test_sine_snr_is_toll_quality() -> None:
    t = np.arange(8000) / 8000
    x = (10000 * np.sin(2 * np.pi * 1004 * t)).astype(np.int16)
    for enc, dec in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        y = dec(enc(x)).astype(np.float64)
        snr = 10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum((x - y) ** 2))
        assert snr > 33  # G.712 requires >= ~35 dB at this level; 8-bit PCM gives ~38
