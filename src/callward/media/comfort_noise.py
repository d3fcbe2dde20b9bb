"""Comfort noise (RFC 3389): the CN payload (noise level + optional reflection coefficients),
the analysis that fills it from silence frames, and the generator that plays it out.

Conventions, stated because RFC 3389 leaves the arithmetic to the implementation:

- Level (§3.1): ``-dBov`` in 0-127, where 0 dBov is the mean power of a full-scale 16-bit
  square wave (32768^2), so a frame of mean square ``p`` has level ``-10*log10(p/32768^2)``.
- Spectrum (§3.2): reflection coefficients ``k_i`` of the all-pole model from the
  Levinson-Durbin recursion on the frame's autocorrelation, with ``k_1 = r(1)/r(0)`` (positive
  for low-pass noise); each is quantized as ``round(k * 128) + 127`` clamped to 0-255, the
  same uniform 8-bit quantizer G.711 Appendix II / WebRTC use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callward.errors import MediaError

__all__ = [
    "ComfortNoise",
    "analyze_noise",
    "generate_noise",
    "parse_cn",
]

FULL_SCALE_POWER = 32768.0**2
MAX_ORDER = 32


@dataclass(frozen=True, slots=True)
class ComfortNoise:
    """An RFC 3389 CN payload: ``level_dbov`` (0 = loudest .. 127 = quietest, as -dBov) and
    quantized reflection coefficients (model order = their count, may be 0)."""

    level_dbov: int
    reflection_q: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.level_dbov <= 127:
            raise MediaError(f"CN noise level {self.level_dbov} out of range 0-127 (-dBov)")
        if len(self.reflection_q) > MAX_ORDER:
            raise MediaError(f"CN model order above {MAX_ORDER}")
        if any(not 0 <= q <= 255 for q in self.reflection_q):
            raise MediaError("CN reflection coefficient out of 8-bit range")

    def __bytes__(self) -> bytes:
        # §3.1: MSB of the level byte is unused and always 0
        return bytes((self.level_dbov, *self.reflection_q))

    @property
    def reflection(self) -> tuple[float, ...]:
        return tuple((q - 127) / 128.0 for q in self.reflection_q)


def parse_cn(payload: bytes) -> ComfortNoise:
    if not payload:
        raise MediaError("CN payload is empty (RFC 3389 §3: the level byte is mandatory)")
    if len(payload) > 1 + MAX_ORDER:
        raise MediaError("CN payload longer than we accept")
    return ComfortNoise(payload[0] & 0x7F, tuple(payload[1:]))


def _levinson(r: npt.NDArray[np.float64], order: int) -> list[float]:
    """Reflection coefficients (k_1 = r1/r0 convention) from autocorrelation r[0..order]."""
    ks: list[float] = []
    a = np.zeros(order + 1)  # predictor: x[n] ~ sum a[j] x[n-j]
    err = r[0]
    for i in range(1, order + 1):
        if err <= 1e-12 * r[0]:
            ks.append(0.0)
            continue
        acc = r[i] - sum(a[j] * r[i - j] for j in range(1, i))
        k = acc / err
        k = max(-0.999, min(0.999, k))
        new = a.copy()
        new[i] = k
        for j in range(1, i):
            new[j] = a[j] - k * a[i - j]
        a = new
        err *= 1 - k * k
        ks.append(float(k))
    return ks


def analyze_noise(pcm: npt.NDArray[np.int16], order: int = 4) -> ComfortNoise:
    """Describe a silence frame (or several concatenated) as a CN payload."""
    if not 0 <= order <= MAX_ORDER:
        raise MediaError(f"CN order must be 0-{MAX_ORDER}")
    x = pcm.astype(np.float64)
    if len(x) <= order:
        raise MediaError("CN analysis needs more samples than the model order")
    power = float(np.mean(x * x))
    level = 127 if power <= 0 else int(np.round(-10 * np.log10(power / FULL_SCALE_POWER)))
    level = max(0, min(127, level))
    if order == 0 or power <= 0:
        return ComfortNoise(level)
    r = np.array([np.dot(x[: len(x) - i], x[i:]) for i in range(order + 1)]) / len(x)
    ks = _levinson(r, order)
    q = tuple(max(0, min(255, round(k * 128) + 127)) for k in ks)
    return ComfortNoise(level, q)


def _step_up(ks: tuple[float, ...]) -> npt.NDArray[np.float64]:
    """Predictor coefficients a[1..p] from reflection coefficients (inverse of _levinson)."""
    a = np.zeros(len(ks) + 1)
    for i, k in enumerate(ks, start=1):
        new = a.copy()
        new[i] = k
        for j in range(1, i):
            new[j] = a[j] - k * a[i - j]
        a = new
    return a


def generate_noise(
    cn: ComfortNoise, samples: int, rng: np.random.Generator
) -> npt.NDArray[np.int16]:
    """Synthesize ``samples`` of comfort noise: white noise through the all-pole model,
    scaled to the payload's level. ``rng`` is injected so playout is reproducible."""
    if samples < 0:
        raise MediaError("sample count must be >= 0")
    target = FULL_SCALE_POWER * 10 ** (-cn.level_dbov / 10)
    # q = 255 decodes to k = 1.0 (a marginally stable pole): keep |k| < 1 so noise stays finite
    a = _step_up(tuple(max(-0.995, min(0.995, k)) for k in cn.reflection))
    p = len(a) - 1
    warm = 256 if p else 0
    e = rng.standard_normal(samples + warm)
    y = np.zeros(samples + warm + p)
    for n in range(samples + warm):  # all-pole IIR: y[n] = e[n] + sum a[j] y[n-j]
        acc = e[n]
        for j in range(1, p + 1):
            acc += a[j] * y[p + n - j]
        y[p + n] = acc
    out = y[p + warm :]
    power = float(np.mean(out * out)) if samples else 1.0
    scale = np.sqrt(target / power) if power > 0 else 0.0
    return np.clip(np.round(out * scale), -32768, 32767).astype(np.int16)
