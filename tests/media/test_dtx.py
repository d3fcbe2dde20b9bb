"""G.711 DTX: speech frames all go out with a marker at each talkspurt, silence costs a few SID
packets, and the receiver's comfort noise matches the real background level (RFC 3389)."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from callward.errors import MediaError
from callward.media.comfort_noise import analyze_noise
from callward.media.dtx import CN_PAYLOAD_TYPE, FRAME, DtxFrame, G711DtxReceiver, G711DtxSender


def run_sender(pcm: np.ndarray, **kw: int) -> list[DtxFrame]:
    tx = G711DtxSender(**kw)  # type: ignore[arg-type]
    out: list[DtxFrame] = []
    for i in range(0, len(pcm) - FRAME + 1, FRAME):
        out += tx.process(pcm[i : i + FRAME])
    return out + tx.flush()


def test_pure_noise_sends_only_sids() -> None:
    rng = np.random.default_rng(4)
    noise = rng.normal(0, 200, 8000 * 4).astype(np.int16)
    frames = run_sender(noise, sid_interval=25)
    assert len(frames) == 200 and [f.index for f in frames] == list(range(200))
    # webrtcvad needs a few frames to learn the noise floor (plus our hangover): skip them
    start = next(i for i, f in enumerate(frames) if not f.speech)
    assert start <= 20 and not any(f.speech for f in frames[start:])
    sent = [f for f in frames[start:] if f.payload is not None]
    assert all(f.payload_type == CN_PAYLOAD_TYPE for f in sent)
    # a SID at the first silent frame, then a refresh every 25 frames (steady level)
    assert [f.index for f in sent] == list(range(start, 200, 25))
    # the SID level is the noise level: 200 rms -> -20*log10(200/32768) = 44.3 dBov
    assert all(abs(f.payload[0] - 44) <= 1 for f in sent)  # type: ignore[index]


def test_level_change_triggers_sid() -> None:
    rng = np.random.default_rng(5)
    quiet = rng.normal(0, 100, 16000).astype(np.int16)
    louder = rng.normal(0, 200, 16000).astype(np.int16)  # +6 dB (a jump the VAD ignores)
    frames = run_sender(np.concatenate([quiet, louder]), sid_interval=1000)
    sids = [f.index for f in frames if f.payload is not None and not f.speech]
    # one SID once the VAD settles in the quiet part, the next one exactly where it gets louder
    assert len(sids) == 2 and sids[0] < 50 and sids[1] == 100


def test_receiver_fills_gaps_with_matching_noise() -> None:
    rng = np.random.default_rng(6)
    noise = rng.normal(0, 300, 8000 * 2).astype(np.int16)
    frames = run_sender(noise)
    frames = frames[next(i for i, f in enumerate(frames) if not f.speech) :]
    noise = noise[frames[0].index * FRAME :]
    rx = G711DtxReceiver()
    out = np.concatenate([rx.frame(f.payload_type if f.payload else None, f.payload)
                          for f in frames])  # fmt: skip
    assert len(out) == len(noise)
    level_in = analyze_noise(noise, order=0).level_dbov
    assert abs(analyze_noise(out, order=0).level_dbov - level_in) <= 1


def test_errors() -> None:
    with pytest.raises(MediaError):
        G711DtxSender("opus")
    with pytest.raises(MediaError):
        G711DtxSender().process(np.zeros(80, dtype=np.int16))
    with pytest.raises(MediaError):
        G711DtxReceiver().frame(0, b"\xff" * 10)


@pytest.mark.interop
def test_speech_with_noise_saves_bandwidth_without_dropping_speech(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("why: espeak-ng or sox not installed")
    raw, s8, nz = tmp_path / "r.wav", tmp_path / "s.wav", tmp_path / "n.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "Hello. ... This is a test. ... Goodbye."],
                   check=True, timeout=60)  # fmt: skip
    subprocess.run(["sox", str(raw), "-r", "8000", "-b", "16", "-c", "1", str(s8),
                    "pad", "1.0", "1.5"], check=True, timeout=60)  # fmt: skip
    with wave.open(str(s8)) as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    speech = speech[: len(speech) // FRAME * FRAME]
    subprocess.run(["sox", "-R", "-n", "-r", "8000", "-b", "16", "-c", "1", str(nz), "synth",
                    f"{len(speech) / 8000 + 0.1:.3f}", "pinknoise", "vol", "0.01"],
                   check=True, timeout=60)  # fmt: skip
    with wave.open(str(nz)) as w:
        noise = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")[: len(speech)]
    mixed = np.clip(speech.astype(np.int32) + noise, -32768, 32767).astype(np.int16)
    frames = run_sender(mixed)
    rms = np.sqrt((speech.reshape(-1, FRAME).astype(float) ** 2).mean(axis=1))
    truth = rms > 0.01 * rms.max()
    sent_speech = np.array([f.speech for f in frames])
    assert sent_speech[truth].mean() >= 0.97  # (almost) every speech frame goes out as G.711
    markers = [f.index for f in frames if f.marker]
    assert 1 <= len(markers) <= 6  # one per talkspurt
    packets = sum(f.payload is not None for f in frames)
    assert packets < 0.8 * len(frames)  # silence is cheap
