"""A conversation to send: who talks when (a two-party on/off talk-spurt model) and a
speech-like signal for the talking parts, deterministic from a seed.

Why synthetic: DTX, VAD and comfort noise only save bytes when there is silence to save, and a
constant frame (what the phones sent before) has none. The schedule follows the classic
conversational model (Brady 1969; ITU-T P.59): turns alternate between the parties, a turn is
a run of talk spurts (mean 1.5 s) separated by short pauses (mean 0.25 s), and turns are
separated by a switching pause; each party talks a little under half of the time. The
signal for a talk spurt is a voiced source (a glottal pulse train with slow pitch drift)
through two formant resonators, with a syllabic envelope of about 4 Hz, so WebRTC's VAD and
libopus's own speech detector both treat it as speech; silence is optional low-level noise.

Sans-IO and pure: seeds in, numpy arrays out.
"""

from __future__ import annotations

import math
import random

import numpy as np
import numpy.typing as npt

from callward.errors import MediaError

__all__ = ["conversation", "speech_signal"]

#: the schedule's time step: 10 ms divides every ptime we send (20/40/60)
STEP_MS = 10
MAX_SECONDS = 3600.0


Mask = npt.NDArray[np.bool_]


def conversation(seconds: float, seed: int = 1) -> tuple[Mask, Mask]:
    """Talk masks (one flag per 10 ms) for party A and party B of a ``seconds`` long call.

    Turns alternate A, B, A, ...; a turn lasts 2-6 s of talk spurts (exponential, mean 1.5 s,
    at least 0.2 s) and in-turn pauses (exponential, mean 0.25 s); a switching pause of
    0.1-0.4 s separates turns, so each party talks a little under half of the time. With 2 %
    probability per spurt the listener says a short back-channel word ("mm") so both sides
    sometimes talk at once, as people do."""
    if not 0 < seconds <= MAX_SECONDS or math.isnan(seconds):
        raise MediaError(f"conversation length {seconds} s outside 0..{MAX_SECONDS:.0f}")
    rng = random.Random(f"talk:{seed}")
    n = round(seconds * 1000 / STEP_MS)
    masks = (np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
    t = round(rng.uniform(0.2, 0.6) * 100)
    who = 0
    while t < n:
        turn_end = t + round(rng.uniform(2.0, 6.0) * 100)
        while t < min(turn_end, n):
            spurt = max(20, round(rng.expovariate(1 / 1.5) * 100))
            masks[who][t : min(t + spurt, n)] = True
            if rng.random() < 0.02:
                mid = t + spurt // 2
                masks[1 - who][mid : min(mid + 25, n)] = True
            t += spurt + max(5, round(rng.expovariate(1 / 0.25) * 100))
        t += round(rng.uniform(0.1, 0.4) * 100)
        who = 1 - who
    return masks


Signal = npt.NDArray[np.float64]


def _resonator(x: Signal, freq: float, bw: float, rate: int) -> Signal:
    """Second-order all-pole resonance (a formant) at ``freq`` Hz with bandwidth ``bw``,
    applied as its impulse response (truncated at -80 dB) by FFT convolution: numpy has no
    IIR filter and a Python loop over a minute of audio is too slow."""
    r = math.exp(-math.pi * bw / rate)
    taps = int(math.log(1e-4) / math.log(r)) + 1
    k = np.arange(taps)
    theta = 2 * math.pi * freq / rate
    h = r**k * np.sin((k + 1) * theta) / math.sin(theta)
    size = 1 << (len(x) + taps - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)
    return y[: len(x)]


def speech_signal(
    mask: npt.NDArray[np.bool_],
    rate: int = 16000,
    *,
    seed: int = 1,
    level_dbov: float = -20.0,
    noise_dbov: float | None = None,
    t0: float = 0.0,
) -> npt.NDArray[np.int16]:
    """int16 PCM at ``rate`` following ``mask`` (10 ms steps): speech-like sound where the mask
    is set, silence (or white noise at ``noise_dbov``) elsewhere. ``t0`` is where ``mask``
    starts in the call, in seconds, so that a call synthesised block by block keeps its pitch
    and syllable rhythm continuous across blocks."""
    if rate not in (8000, 16000, 48000):
        raise MediaError(f"speech sample rate {rate} not 8000/16000/48000")
    step = rate * STEP_MS // 1000
    n = len(mask) * step
    rng = np.random.default_rng(seed if not t0 else [seed, round(t0 * 1000)])
    out = np.zeros(n)
    active = np.repeat(mask, step)
    # Voiced source: pulses at a pitch that drifts between 100 and 160 Hz.
    t = t0 + np.arange(n) / rate
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.7 * t + seed) + 5 * np.sin(2 * np.pi * 3.1 * t)
    phase = np.cumsum(f0 / rate)
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(float)
    source = pulses + 0.03 * rng.standard_normal(n)
    voiced = _resonator(source, 650.0, 90.0, rate) + 0.5 * _resonator(source, 1400.0, 120.0, rate)
    if rate > 8000:
        voiced += 0.25 * _resonator(source, 2600.0, 160.0, rate)
    # Syllables: a raised-cosine envelope at about 4 Hz, never fully closed inside a spurt.
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.2 * t + 1.3 * np.sin(2 * np.pi * 0.9 * t))
    speech = voiced * envelope * active
    rms = math.sqrt(float(np.mean(speech[active] ** 2))) if active.any() else 0.0
    if rms > 0:
        speech *= 32768 * 10 ** (level_dbov / 20) / rms
    out += speech
    if noise_dbov is not None:
        out += rng.standard_normal(n) * 32768 * 10 ** (noise_dbov / 20)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)
