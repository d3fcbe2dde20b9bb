"""G.711 μ-law and A-law (ITU-T G.711 §1-2) for 16-bit linear PCM, vectorized with numpy.

The companding laws are evaluated once, for every 16-bit input and every 8-bit code, into
lookup tables; encoding and decoding a frame is then one numpy ``take``. The tables follow the
segment/quantization formulas of G.711 (the same arithmetic as the widely used Sun reference
``g711.c``): μ-law adds a bias of 33 to the 14-bit magnitude, A-law works on 13 bits; both
invert bits as G.711 prescribes (μ-law all bits, A-law the even bits, 0x55).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from callward.errors import MediaError

__all__ = [
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

Pcm = npt.NDArray[np.int16]


def _segment(mag: npt.NDArray[np.int64], ends: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Index of the first segment end >= mag (8 when beyond the last)."""
    return np.searchsorted(np.asarray(ends, dtype=np.int64), mag, side="left").astype(np.int64)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int64) >> 2  # 14-bit two's complement
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), 8159) + (0x84 >> 2)  # clip, then bias 33
    seg = _segment(mag, (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF))
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    table = (code ^ mask).astype(np.uint8)
    return np.roll(table, -32768)  # index by the uint16 view of the sample


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    x = np.arange(-32768, 32768, dtype=np.int64) >> 3  # 13-bit two's complement
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = _segment(mag, (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF))
    shift = np.where(seg < 2, 1, seg)
    code = np.where(seg >= 8, 0x7F, (seg << 4) | ((mag >> np.minimum(shift, 15)) & 0x0F))
    table = (code ^ mask).astype(np.uint8)
    return np.roll(table, -32768)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = (~np.arange(256, dtype=np.int64)) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int64) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENC = _build_ulaw_encode()
_ALAW_ENC = _build_alaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_DEC = _build_alaw_decode()


def _as_pcm(samples: bytes | npt.ArrayLike) -> Pcm:
    if isinstance(samples, bytes | bytearray | memoryview):
        if len(samples) % 2:
            raise MediaError("16-bit PCM must have an even number of bytes")
        return np.frombuffer(samples, dtype="<i2").astype(np.int16, copy=False)
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        raise MediaError(f"PCM samples must be int16, got {arr.dtype}")
    return arr


def _as_codes(data: bytes | npt.ArrayLike) -> npt.NDArray[np.uint8]:
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, dtype=np.uint8)
    arr = np.asarray(data)
    if arr.dtype != np.uint8:
        raise MediaError(f"G.711 codes must be uint8, got {arr.dtype}")
    return arr


def ulaw_encode(samples: bytes | npt.ArrayLike) -> bytes:
    """int16 samples (array, or little-endian bytes) -> μ-law payload."""
    pcm = _as_pcm(samples)
    return bytes(_ULAW_ENC.take(pcm.view(np.uint16)).tobytes())


def alaw_encode(samples: bytes | npt.ArrayLike) -> bytes:
    """int16 samples (array, or little-endian bytes) -> A-law payload."""
    pcm = _as_pcm(samples)
    return bytes(_ALAW_ENC.take(pcm.view(np.uint16)).tobytes())


def ulaw_decode(payload: bytes | npt.ArrayLike) -> Pcm:
    """μ-law payload -> int16 samples."""
    return _ULAW_DEC.take(_as_codes(payload))


def alaw_decode(payload: bytes | npt.ArrayLike) -> Pcm:
    """A-law payload -> int16 samples."""
    return _ALAW_DEC.take(_as_codes(payload))
