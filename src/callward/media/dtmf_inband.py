"""In-band DTMF (ITU-T Q.23 frequencies, Q.24 reception limits): a Goertzel detector and a
tone generator for 16-bit linear PCM.

Detector design. Goertzel filters (one per DTMF frequency) run over blocks of ``block``
samples (205 at 8 kHz: 39 Hz bins, the classic choice) every ``hop`` samples (2.5 ms). A block
is *valid* for a digit when the strongest low-group and high-group tones

- are above ``min_level_dbfs`` each,
- beat every other tone of their group by ``separation_db``,
- together carry ``min_purity`` of the block's energy (rejects speech and broadband noise),
- respect the Q.24 twist limits: low-group up to ``max_normal_twist_db`` stronger than the
  high group, high group up to ``max_reverse_twist_db`` stronger than the low group.

A run of consecutive valid blocks for one digit is a candidate. A block covered by the tone
over a fraction ``c`` of its length sees ``c**2`` of the tone power, so blocks with at least
``COVER**2`` of the run's peak power are those covered at least ``COVER``; for a tone of length
L there are ``(L + block * (1 - 2 * COVER)) / hop`` of them, which inverts to the duration
estimate. Q.24 asks that 40 ms tones are accepted and tones under ~20-25 ms rejected; the
default ``min_duration_ms`` of 32 ms splits that gap (the estimate is within one hop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callward.errors import MediaError

__all__ = [
    "DetectedDigit",
    "DtmfDetector",
    "detect_dtmf",
    "generate_dtmf",
]

LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
FULL_SCALE = 32768.0
#: coverage fraction used to count blocks for the duration estimate (see module docstring)
COVER = 0.6


def _digit_freqs(digit: str) -> tuple[float, float]:
    for r, row in enumerate(KEYPAD):
        c = row.find(digit.upper())
        if c >= 0 and len(digit) == 1:
            return LOW[r], HIGH[c]
    raise MediaError(f"{digit!r} is not a DTMF digit")


def generate_dtmf(
    digits: str,
    *,
    sample_rate: int = 8000,
    tone_ms: float = 100.0,
    gap_ms: float = 100.0,
    level_dbfs: float = -10.0,
    twist_db: float = 0.0,
    lead_ms: float = 0.0,
) -> npt.NDArray[np.int16]:
    """Tone pairs for ``digits``; each tone at ``level_dbfs`` (peak, relative to full scale),
    the high tone ``twist_db`` below the low tone (negative = reverse twist)."""
    if sample_rate <= 0 or tone_ms <= 0 or gap_ms < 0 or lead_ms < 0:
        raise MediaError("bad DTMF generator arguments")
    n_tone = round(sample_rate * tone_ms / 1000)
    n_gap = round(sample_rate * gap_ms / 1000)
    amp_low = FULL_SCALE * 10 ** (level_dbfs / 20)
    amp_high = amp_low * 10 ** (-twist_db / 20)
    if amp_low + amp_high >= FULL_SCALE:
        raise MediaError("DTMF level too high: the tone pair would clip")
    t = np.arange(n_tone) / sample_rate
    parts = [np.zeros(round(sample_rate * lead_ms / 1000))]
    for d in digits:
        lo, hi = _digit_freqs(d)
        parts.append(amp_low * np.sin(2 * np.pi * lo * t) + amp_high * np.sin(2 * np.pi * hi * t))
        parts.append(np.zeros(n_gap))
    return np.round(np.concatenate(parts)).astype(np.int16)


@dataclass(frozen=True, slots=True)
class DetectedDigit:
    digit: str
    start_sample: int
    duration_ms: float


def _goertzel_power(
    frames: npt.NDArray[np.float64], freqs: npt.NDArray[np.float64], sample_rate: int
) -> npt.NDArray[np.float64]:
    """Goertzel recursion, vectorized over frames (rows) and frequencies; returns |X(f)|^2
    normalised so a full-scale sine of that frequency gives ~1.0."""
    n = frames.shape[1]
    coeff = 2.0 * np.cos(2.0 * np.pi * freqs / sample_rate)  # (F,)
    s1 = np.zeros((frames.shape[0], len(freqs)))
    s2 = np.zeros_like(s1)
    for i in range(n):
        s0 = frames[:, i : i + 1] + coeff * s1 - s2
        s2 = s1
        s1 = s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    scaled: npt.NDArray[np.float64] = power * (4.0 / (n * n))  # sine of amplitude A -> ~A^2
    return scaled


class DtmfDetector:
    """Streaming detector: :meth:`feed` PCM chunks, get digits as they finish."""

    def __init__(
        self,
        sample_rate: int = 8000,
        *,
        block: int | None = None,
        hop: int | None = None,
        min_level_dbfs: float = -36.0,
        separation_db: float = 6.0,
        min_purity: float = 0.5,
        max_normal_twist_db: float = 8.0,
        max_reverse_twist_db: float = 4.0,
        min_duration_ms: float = 32.0,
    ) -> None:
        if sample_rate < 4000:
            raise MediaError("DTMF detection needs a sample rate of at least 4000 Hz")
        self.sample_rate = sample_rate
        self.block = block or round(205 * sample_rate / 8000)
        self.hop = hop or sample_rate // 400
        if self.block < 32 or not 0 < self.hop <= self.block:
            raise MediaError("bad DTMF detector block/hop")
        self.min_power = (FULL_SCALE * 10 ** (min_level_dbfs / 20)) ** 2
        self.sep = 10 ** (separation_db / 10)
        self.min_purity = min_purity
        self.normal_twist = 10 ** (max_normal_twist_db / 10)
        self.reverse_twist = 10 ** (max_reverse_twist_db / 10)
        self.min_duration_ms = min_duration_ms
        self._freqs = np.array(LOW + HIGH)
        self._buf = np.zeros(0)
        self._consumed = 0  # absolute sample index of _buf[0]
        self._run: list[tuple[int, float]] = []  # (block start, tone power)
        self._run_digit = ""

    def _classify(self, frames: npt.NDArray[np.float64]) -> tuple[list[str], list[float]]:
        p = _goertzel_power(frames, self._freqs, self.sample_rate)
        low, high = p[:, :4], p[:, 4:]
        li, hi = low.argmax(axis=1), high.argmax(axis=1)
        rows = np.arange(len(frames))
        lp, hp = low[rows, li], high[rows, hi]
        low_other = np.sort(low, axis=1)[:, -2]
        high_other = np.sort(high, axis=1)[:, -2]
        # mean square of the block; a sine of amplitude A has mean square A^2/2
        energy = np.mean(frames * frames, axis=1) + 1e-9
        ok = (
            (lp >= self.min_power)
            & (hp >= self.min_power)
            & (lp >= self.sep * low_other)
            & (hp >= self.sep * high_other)
            & ((lp + hp) / 2 >= self.min_purity * energy)
            & (lp <= self.normal_twist * hp)
            & (hp <= self.reverse_twist * lp)
        )
        digits = [KEYPAD[li[k]][hi[k]] if ok[k] else "" for k in range(len(frames))]
        return digits, list(((lp + hp) / 2).tolist())

    def _close_run(self) -> list[DetectedDigit]:
        run, digit = self._run, self._run_digit
        self._run, self._run_digit = [], ""
        if not run:
            return []
        peak = max(p for _, p in run)
        covered = [start for start, p in run if p >= COVER * COVER * peak]
        length = len(covered) * self.hop + self.block * (2 * COVER - 1)
        duration_ms = length * 1000.0 / self.sample_rate
        if duration_ms < self.min_duration_ms:
            return []
        start = covered[0] + round(self.block * (1 - COVER))  # first block COVER-covered
        return [DetectedDigit(digit, start, duration_ms)]

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[DetectedDigit]:
        if pcm.dtype != np.int16:
            raise MediaError("DTMF detector input must be int16")
        self._buf = np.concatenate([self._buf, pcm.astype(np.float64)])
        count = (len(self._buf) - self.block) // self.hop + 1 if len(self._buf) >= self.block else 0
        out: list[DetectedDigit] = []
        if count <= 0:
            return out
        idx = np.arange(self.block)[None, :] + self.hop * np.arange(count)[:, None]
        digits, powers = self._classify(self._buf[idx])
        for k, (digit, power) in enumerate(zip(digits, powers, strict=True)):
            start = self._consumed + k * self.hop
            if digit and digit == self._run_digit:
                self._run.append((start, power))
                continue
            out.extend(self._close_run())
            if digit:
                self._run_digit = digit
                self._run = [(start, power)]
        drop = count * self.hop
        self._buf = self._buf[drop:]
        self._consumed += drop
        return out

    def flush(self) -> list[DetectedDigit]:
        """End of input: report a digit still in progress."""
        return self._close_run()


def detect_dtmf(pcm: npt.NDArray[np.int16], sample_rate: int = 8000) -> list[DetectedDigit]:
    """Detect all digits in a recording (batch form of :class:`DtmfDetector`)."""
    det = DtmfDetector(sample_rate)
    return det.feed(pcm) + det.flush()
