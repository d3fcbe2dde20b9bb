"""Bytes noise suppression saves before DTX on noisy speech, against DTX alone.

Speech: espeak-ng phrases separated by pauses (a conversation's half), resampled to 16 kHz
with sox; noise: sox pink noise mixed in at 20, 10 and 5 dB SNR. Each signal goes through the
phone's send pipeline (``media/voice.py``: Opus 12 kb/s CBR, 20 ms, DTX) with and without the
Speex noise suppressor in front. Reported: packets and bytes on the wire (IPv4/UDP/RTP/SRTP
tag added per packet), and onset clipping: the share of 20 ms frames that start a talk spurt
in the clean speech (by webrtcvad) and were not sent.

    .venv/bin/python benchmarks/usage_ns.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

from callward.media.vad import classify
from callward.media.voice import VoiceSender, VoiceSettings

PHRASES = [
    "Hello, can you hear me?", "I am on the train, the signal is not great.",
    "We should meet at nine tomorrow.", "Yes, that works for me.",
    "Bring the documents for the contract.", "See you then, goodbye.",
]  # fmt: skip
WIRE = 20 + 8 + 12 + 10  # IPv4 + UDP + RTP + HMAC-SHA1-80 tag


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def speech(tmp: Path) -> np.ndarray:
    parts = []
    for i, text in enumerate(PHRASES):
        raw, wav = tmp / f"p{i}.wav", tmp / f"p{i}-16k.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)],
                       check=True)  # fmt: skip
        parts += [_read(wav), np.zeros(16000 * (1 + i % 3))]  # 1-3 s pauses
    return np.concatenate(parts)


def noise(tmp: Path, seconds: float) -> np.ndarray:
    out = tmp / "noise.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(out), "synth",
                    f"{seconds:.2f}", "pinknoise"], check=True)  # fmt: skip
    return _read(out)


def run(pcm: np.ndarray, ns: bool) -> tuple[int, int, set[int]]:
    s = VoiceSettings("opus", 111, 20, 12000, dtx=True, noise_suppression=ns)
    tx = VoiceSender(s)
    sent: set[int] = set()
    size = 0
    for i in range(0, len(pcm) - 320 + 1, 320):
        for p in tx.encode(pcm[i : i + 320]):
            sent.add(p.index)
            size += len(p.payload) + WIRE
    return len(sent), size, sent


def main() -> int:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        print("usage_ns: needs espeak-ng and sox")
        return 2
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clean = speech(tmp)
        pink = noise(tmp, len(clean) / 16000 + 1)[: len(clean)]
    active, _ = classify(clean.astype(np.int16), 16000)
    onsets = {i for i in range(1, len(active)) if active[i] and not active[i - 1]}
    onsets |= {i + 1 for i in onsets} | {i + 2 for i in onsets}  # the first 60 ms of a spurt
    clean = clean[: len(active) * 320]
    pink = pink[: len(clean)]
    p_speech = float(np.mean(clean[np.repeat(active, 320)] ** 2))
    seconds = len(clean) / 16000
    print(f"{seconds:.1f} s of espeak-ng speech with pauses, voice activity {active.mean():.2f}; "
          f"Opus 12 kb/s CBR 20 ms DTX; bytes/min on the wire (IPv4/UDP/RTP/SRTP)")  # fmt: skip
    print(f"{'SNR':>6} {'DTX alone B/min':>16} {'NS+DTX B/min':>13} {'saved':>7} "
          f"{'onsets clipped DTX':>19} {'NS+DTX':>7}")  # fmt: skip
    for snr in (20, 10, 5):
        p_noise = float(np.mean(pink**2))
        mix = clean + pink * np.sqrt(p_speech / p_noise / 10 ** (snr / 10))
        pcm = np.clip(np.round(mix), -32768, 32767).astype(np.int16)
        _, plain, sent_plain = run(pcm, False)
        _, ns, sent_ns = run(pcm, True)
        clip_plain = len(onsets - sent_plain) / len(onsets)
        clip_ns = len(onsets - sent_ns) / len(onsets)
        print(f"{snr:>4} dB {plain * 60 / seconds:>16,.0f} {ns * 60 / seconds:>13,.0f} "
              f"{1 - ns / plain:>7.1%} {clip_plain:>19.1%} {clip_ns:>7.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
