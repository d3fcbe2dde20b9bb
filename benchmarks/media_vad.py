"""VAD onset clipping / false activation: callward's VAD (webrtcvad + look-ahead + hangover)
against bare webrtcvad (the peer) on espeak-ng speech mixed with sox pink noise at several
SNRs, in the same run. Ground truth: frame energy of the clean speech.

    .venv/bin/python benchmarks/media_vad.py
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from callward.media.vad import classify

FRAME = 160
PHRASES = ["Hello there.", "This is a test of the detector.", "Please call me back tomorrow.",
           "Seven eight nine.", "Goodbye.", "The quick brown fox jumps over the lazy dog.",
           "Can you hear me now?", "Thank you for calling."]  # fmt: skip


def wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        parts = []
        for i, text in enumerate(PHRASES):
            subprocess.run(["espeak-ng", "-w", str(tmp / f"r{i}.wav"), text], check=True)
            subprocess.run(["sox", str(tmp / f"r{i}.wav"), "-r", "8000", "-b", "16", "-c", "1",
                            str(tmp / f"p{i}.wav"), "pad", "0.8", "0.7"], check=True)  # fmt: skip
            parts.append(str(tmp / f"p{i}.wav"))
        subprocess.run(["sox", *parts, str(tmp / "s.wav")], check=True)
        s = wav(tmp / "s.wav")
        s = s[: len(s) // FRAME * FRAME]
        subprocess.run(["sox", "-R", "-n", "-r", "8000", "-b", "16", "-c", "1", str(tmp / "n.wav"),
                        "synth", f"{len(s) / 8000 + 0.1:.3f}", "pinknoise", "vol", "0.05"],
                       check=True)  # fmt: skip
        n = wav(tmp / "n.wav")[: len(s)].astype(np.int32)
    rms = np.sqrt((s.reshape(-1, FRAME).astype(float) ** 2).mean(axis=1))
    truth = rms > 0.01 * rms.max()
    onsets = [i for i in range(10, len(truth)) if truth[i] and not truth[i - 10 : i].any()]
    onset_frames = [j for i in onsets for j in range(i, min(i + 5, len(truth))) if truth[j]]
    far = np.convolve(truth.astype(int), np.ones(21), "same") == 0
    sp = np.mean(s[np.repeat(truth, FRAME)].astype(float) ** 2)
    print(f"{len(PHRASES)} phrases, {len(onsets)} onsets, {truth.sum()} speech frames of 20 ms")
    print(f"{'SNR':>6} {'detector':<12} {'onset clip':>10} {'false act':>10} {'missed':>8}")
    for gain in (0.5, 1.0, 2.0, 4.0):
        noise = n * gain
        snr = 10 * np.log10(sp / np.mean(noise.astype(float) ** 2))
        mixed = np.clip(s.astype(np.int32) + noise.astype(np.int32), -32768, 32767).astype(np.int16)
        ours, raw = classify(mixed, 8000)
        res = {}
        for name, f in (("webrtcvad", raw), ("callward", ours)):
            f = f[: len(truth)]
            clip = np.mean([not f[j] for j in onset_frames])
            res[name] = clip
            print(f"{snr:>5.1f}dB {name:<12} {100 * clip:>9.1f}% {100 * f[far].mean():>9.1f}% "
                  f"{100 * (~f[truth]).mean():>7.1f}%")  # fmt: skip
        if res["webrtcvad"]:
            print(f"{'':>6} onset clipping ratio callward/webrtcvad: "
                  f"{res['callward'] / res['webrtcvad']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
