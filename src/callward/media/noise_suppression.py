"""Noise suppression before VAD/DTX: the Speex preprocessor (``libspeexdsp``, Debian
``libspeexdsp1``) through ctypes.

Why before VAD: steady background noise (a car, a fan, a street) keeps a voice-activity
detector, and libopus's own, deciding "speech", so DTX never starts and every frame is paid
for. Suppressing the noise first lets silence look like silence. We call the C library
directly: the maintained Python wrappers on PyPI wrap the same library, and the Debian package
is already installed for baresip, so a ctypes binding of four functions adds no dependency.

The preprocessor works on fixed frames of int16 samples at 8/16/32/48 kHz; ``process`` takes
one frame and returns the denoised copy (the input array is not modified).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

import numpy as np
import numpy.typing as npt

from callward.errors import MediaError

__all__ = ["NoiseSuppressor", "available"]

# speex/speex_preprocess.h request numbers
_SET_DENOISE = 0
_SET_AGC = 2
_SET_DEREVERB = 8
_SET_NOISE_SUPPRESS = 18


@cache
def _lib() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.speex_preprocess_state_init.restype = ctypes.c_void_p
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_state_destroy.argtypes = [ctypes.c_void_p]
    lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_preprocess_ctl.restype = ctypes.c_int
    lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16)]
    lib.speex_preprocess_run.restype = ctypes.c_int
    return lib


def available() -> bool:
    """True when libspeexdsp can be loaded (tests and the CLI skip/refuse otherwise)."""
    return _lib() is not None


class NoiseSuppressor:
    """One Speex preprocessor state: ``frame`` samples at ``sample_rate``, denoising with at
    most ``suppress_db`` of attenuation (Speex's default is -15 dB; -25 dB is stronger)."""

    def __init__(self, sample_rate: int, frame: int, *, suppress_db: int = -25) -> None:
        lib = _lib()
        if lib is None:
            raise MediaError("noise suppression needs libspeexdsp (Debian package libspeexdsp1)")
        if sample_rate not in (8000, 16000, 32000, 48000) or not 0 < frame <= sample_rate // 10:
            raise MediaError(f"noise suppressor: bad rate {sample_rate} or frame {frame}")
        if not -60 <= suppress_db < 0:
            raise MediaError("suppress_db must be in -60..-1")
        self._lib = lib
        self.frame = frame
        state = lib.speex_preprocess_state_init(frame, sample_rate)
        if not state:
            raise MediaError("speex_preprocess_state_init failed")
        self._state: int | None = state
        # (no SET_VAD: libspeexdsp prints a warning for it and its VAD is off by default)
        for request, value in ((_SET_DENOISE, 1), (_SET_AGC, 0), (_SET_DEREVERB, 0),
                               (_SET_NOISE_SUPPRESS, suppress_db)):  # fmt: skip
            v = ctypes.c_int(value)
            lib.speex_preprocess_ctl(state, request, ctypes.byref(v))

    def process(self, pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if self._state is None:
            raise MediaError("noise suppressor is closed")
        if pcm.dtype != np.int16 or len(pcm) != self.frame:
            raise MediaError(f"noise suppressor takes {self.frame} int16 samples")
        buf = np.array(pcm, dtype=np.int16, copy=True)
        self._lib.speex_preprocess_run(
            self._state, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_int16))
        )
        return buf

    def close(self) -> None:
        if self._state is not None:
            self._lib.speex_preprocess_state_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
