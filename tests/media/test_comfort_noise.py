"""RFC 3389 comfort noise: payload layout, level arithmetic worked by hand, and spectral shape
recovered from an AR(1) process whose reflection coefficient is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.media.comfort_noise import ComfortNoise, analyze_noise, generate_noise, parse_cn


def test_payload_layout() -> None:
    cn = ComfortNoise(40, (127, 200))
    assert bytes(cn) == b"\x28\x7f\xc8"
    assert parse_cn(b"\x28\x7f\xc8") == cn
    assert parse_cn(b"\xa8") == ComfortNoise(40)  # §3.1: MSB unused, ignored
    assert cn.reflection == (0.0, 73 / 128)


@pytest.mark.parametrize(
    "pcm, level",
    [
        # full-scale square wave is the overload reference: 0 dBov
        (np.array([32767, -32768] * 400, dtype=np.int16), 0),
        # full-scale sine: mean square A^2/2 -> 3 dBov
        ((32767 * np.sin(np.arange(8000) * 0.3)).astype(np.int16), 3),
        # sine at 1/10 of full scale -> 20 + 3 = 23 dBov
        ((3277 * np.sin(np.arange(8000) * 0.3)).astype(np.int16), 23),
        (np.zeros(160, dtype=np.int16), 127),
    ],
)
def test_level_by_hand(pcm: np.ndarray, level: int) -> None:
    assert analyze_noise(pcm, order=0).level_dbov == level


def test_ar1_reflection_coefficient() -> None:
    # x[n] = 0.8 x[n-1] + e[n]: r(1)/r(0) = 0.8 and all higher partial correlations are 0
    rng = np.random.default_rng(5)
    e = rng.normal(0, 1000, 40000)
    x = np.zeros_like(e)
    for n in range(1, len(e)):
        x[n] = 0.8 * x[n - 1] + e[n]
    cn = analyze_noise(x.astype(np.int16), order=3)
    k = cn.reflection
    assert k[0] == pytest.approx(0.8, abs=0.02)
    assert abs(k[1]) < 0.03 and abs(k[2]) < 0.03
    # regenerate: same level (within 1 dB) and same lag-1 correlation
    y = generate_noise(cn, 16000, np.random.default_rng(1)).astype(float)
    assert analyze_noise(y.astype(np.int16), order=0).level_dbov == pytest.approx(
        cn.level_dbov, abs=1
    )
    assert np.dot(y[:-1], y[1:]) / np.dot(y, y) == pytest.approx(0.8, abs=0.03)


def test_white_noise_is_flat() -> None:
    cn = analyze_noise(np.random.default_rng(2).normal(0, 300, 8000).astype(np.int16), order=2)
    assert all(abs(k) < 0.05 for k in cn.reflection)
    # 300 rms: -20*log10(300/32768) = 40.8 dBov
    assert cn.level_dbov == 41


def test_errors() -> None:
    with pytest.raises(MediaError):
        parse_cn(b"")
    with pytest.raises(MediaError):
        ComfortNoise(128)
    with pytest.raises(MediaError):
        analyze_noise(np.zeros(2, dtype=np.int16), order=4)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_parse_never_crashes(data: bytes) -> None:
    try:
        cn = parse_cn(data)
    except MediaError:
        return
    assert bytes(cn)[1:] == data[1:]
    generate_noise(cn, 40, np.random.default_rng(0))
