"""VAD with hangover and onset look-ahead, measured on espeak-ng speech mixed with sox pink
noise (made in tmp_path) against the raw webrtcvad decisions and an energy ground truth
computed on the clean speech."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from callward.errors import MediaError
from callward.media.vad import VoiceActivityDetector, classify

FRAME = 160  # 20 ms at 8 kHz
PHRASES = ["Hello there.", "This is a test of the detector.", "Please call me back tomorrow.",
           "Seven eight nine.", "Goodbye."]  # fmt: skip


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def make_audio(tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("why: espeak-ng or sox not installed")
    parts = []
    for i, text in enumerate(PHRASES):
        raw, out = tmp / f"raw{i}.wav", tmp / f"p{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, timeout=60)
        subprocess.run(["sox", str(raw), "-r", "8000", "-b", "16", "-c", "1", str(out),
                        "pad", "0.8", "0.7"], check=True, timeout=60)  # fmt: skip
        parts.append(str(out))
    speech = tmp / "speech.wav"
    subprocess.run(["sox", *parts, str(speech)], check=True, timeout=60)
    s = read_wav(speech)
    s = s[: len(s) // FRAME * FRAME]
    noise = tmp / "noise.wav"
    subprocess.run(["sox", "-R", "-n", "-r", "8000", "-b", "16", "-c", "1", str(noise), "synth",
                    f"{len(s) / 8000 + 0.1:.3f}", "pinknoise", "vol", "0.06"],
                   check=True, timeout=60)  # fmt: skip
    return s, read_wav(noise)[: len(s)]


def metrics(flags: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(onset clipping, false activation, missed speech) as fractions."""
    flags = flags[: len(truth)]
    onsets = [i for i in range(10, len(truth)) if truth[i] and not truth[i - 10 : i].any()]
    onset_frames = [j for i in onsets for j in range(i, min(i + 5, len(truth))) if truth[j]]
    far = np.convolve(truth.astype(int), np.ones(21), "same") == 0  # > 200 ms from speech
    clip = float(np.mean([not flags[j] for j in onset_frames]))
    return clip, float(flags[far].mean()), float((~flags[truth]).mean())


@pytest.mark.interop
def test_onset_clipping_and_false_activation(tmp_path: Path) -> None:
    speech, noise = make_audio(tmp_path)
    rms = np.sqrt((speech.reshape(-1, FRAME).astype(float) ** 2).mean(axis=1))
    truth = rms > 0.01 * rms.max()  # clean-speech energy, independent of webrtcvad
    assert 10 < truth.sum() < len(truth)
    mixed = np.clip(speech.astype(np.int32) + noise, -32768, 32767).astype(np.int16)
    snr = 10 * np.log10(np.mean(speech[np.repeat(truth, FRAME)].astype(float) ** 2)
                        / np.mean(noise.astype(float) ** 2))  # fmt: skip
    assert 8 < snr < 25
    active, raw = classify(mixed, 8000)
    raw_clip, _raw_false, raw_miss = metrics(raw, truth)
    clip, false, miss = metrics(active, truth)
    # look-ahead + hangover must clip fewer onset frames and miss less speech than bare VAD
    assert clip < raw_clip or raw_clip == 0
    assert clip <= 0.2 and miss <= 0.05 and miss <= raw_miss
    # ... at a bounded cost in activation during real pauses
    assert false <= 0.35


def test_lookahead_marks_frames_before_onset() -> None:
    vad = VoiceActivityDetector(8000, lookahead_frames=3, hangover_frames=0)
    vad._vad = type("Fake", (), {})()  # scripted detector: speech on frames 5..6 only
    script = iter([False] * 5 + [True] * 2 + [False] * 5)
    vad._vad.is_speech = lambda frame, rate: next(script)  # type: ignore[attr-defined]
    out = []
    for _ in range(12):
        out += vad.process(bytes(320))
    out += vad.flush()
    assert [d.index for d in out] == list(range(12))
    assert [d.active for d in out] == [False, False, True, True, True, True, True] + [False] * 5
    assert [d.raw for d in out][5:7] == [True, True]


def test_hangover_extends_speech() -> None:
    vad = VoiceActivityDetector(8000, lookahead_frames=0, hangover_frames=2)
    vad._vad = type("Fake", (), {})()
    script = iter([True] + [False] * 5)
    vad._vad.is_speech = lambda frame, rate: next(script)  # type: ignore[attr-defined]
    out = [d.active for _ in range(6) for d in vad.process(bytes(320))]
    assert out == [True, True, True, False, False, False]


def test_bad_arguments() -> None:
    with pytest.raises(MediaError):
        VoiceActivityDetector(11025)
    with pytest.raises(MediaError):
        VoiceActivityDetector(8000, frame_ms=25)
    with pytest.raises(MediaError):
        VoiceActivityDetector(8000).process(b"\0" * 100)
