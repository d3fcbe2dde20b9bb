"""In-band DTMF: Goertzel detector against generated tones (+ noise), sox-synthesised tones
(an independent generator) and espeak-ng speech (talk-off), with Q.24 timing and twist."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import MediaError
from callward.media.dtmf_inband import DtmfDetector, detect_dtmf, generate_dtmf


def digits(pcm: np.ndarray) -> str:
    return "".join(d.digit for d in detect_dtmf(pcm))


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def test_all_sixteen_digits() -> None:
    seq = "0123456789*#ABCD"
    assert digits(generate_dtmf(seq, tone_ms=50, gap_ms=50, lead_ms=20)) == seq


@pytest.mark.parametrize("tone_ms, accepted", [(10, False), (20, False), (25, False),
                                               (40, True), (45, True), (200, True)])  # fmt: skip
def test_q24_duration_limits(tone_ms: int, accepted: bool) -> None:
    found = detect_dtmf(generate_dtmf("5", tone_ms=tone_ms, gap_ms=60, lead_ms=33))
    assert bool(found) is accepted
    if accepted:
        assert found[0].duration_ms == pytest.approx(tone_ms, abs=3.0)
        assert found[0].start_sample == pytest.approx(33 * 8, abs=20)


def test_interdigit_gap_separates_same_digit() -> None:
    assert digits(generate_dtmf("444", tone_ms=50, gap_ms=40, lead_ms=10)) == "444"


@pytest.mark.parametrize("twist_db, accepted", [(0, True), (6, True), (-3, True),
                                                (11, False), (-7, False)])  # fmt: skip
def test_twist_limits(twist_db: float, accepted: bool) -> None:
    # positive twist: high group weaker (normal twist, Q.24 allows more); negative: reverse
    pcm = generate_dtmf("8", twist_db=twist_db, level_dbfs=-12, lead_ms=10)
    assert (digits(pcm) == "8") is accepted


@pytest.mark.parametrize("snr_db", [20, 10, 6])
def test_white_noise(snr_db: float) -> None:
    rng = np.random.default_rng(int(snr_db))
    clean = generate_dtmf("159#", tone_ms=60, gap_ms=60, level_dbfs=-20, lead_ms=30)
    on = clean != 0
    sigma = np.sqrt(np.mean(clean[on].astype(float) ** 2) / 10 ** (snr_db / 10))
    noisy = np.clip(clean + rng.normal(0, sigma, len(clean)), -32768, 32767).astype(np.int16)
    assert digits(noisy) == "159#"


def test_noise_alone_gives_nothing() -> None:
    rng = np.random.default_rng(9)
    assert digits(rng.normal(0, 3000, 8000 * 3).astype(np.int16)) == ""


def test_too_quiet_is_ignored() -> None:
    assert digits(generate_dtmf("1", level_dbfs=-45, lead_ms=10)) == ""


def test_streaming_in_small_chunks_matches_batch() -> None:
    pcm = generate_dtmf("2580", tone_ms=70, gap_ms=50, lead_ms=13)
    det = DtmfDetector()
    found = []
    for i in range(0, len(pcm), 80):  # 10 ms chunks
        found += det.feed(pcm[i : i + 80])
    found += det.flush()
    assert found == detect_dtmf(pcm)


def test_bad_input() -> None:
    with pytest.raises(MediaError):
        generate_dtmf("Z")
    with pytest.raises(MediaError):
        generate_dtmf("1", level_dbfs=0)
    with pytest.raises(MediaError):
        DtmfDetector().feed(np.zeros(10, dtype=np.float32))  # type: ignore[arg-type]


@pytest.mark.interop
def test_sox_generated_tones(tmp_path: Path) -> None:
    if shutil.which("sox") is None:
        pytest.skip("why: sox not installed")
    # sox synthesises each tone pair independently of our generator
    pairs = {"1": (697, 1209), "6": (770, 1477), "#": (941, 1477), "D": (941, 1633)}
    parts = []
    for d, (lo, hi) in pairs.items():
        f = tmp_path / f"{ord(d)}.wav"
        subprocess.run(
            ["sox", "-n", "-r", "8000", "-b", "16", "-c", "1", str(f), "synth", "0.06",
             "sine", str(lo), "sine", str(hi), "remix", "1,2", "vol", "0.4",
             "pad", "0.05", "0.05"],
            check=True, timeout=30, capture_output=True,
        )  # fmt: skip
        parts.append(read_wav(f))
    found = detect_dtmf(np.concatenate(parts))
    assert "".join(x.digit for x in found) == "16#D"
    assert all(abs(x.duration_ms - 60) < 6 for x in found)
    # a 20 ms sox tone is rejected (Q.24 non-operate)
    short = tmp_path / "short.wav"
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-b", "16", "-c", "1", str(short), "synth", "0.02",
         "sine", "770", "sine", "1336", "remix", "1,2", "vol", "0.4", "pad", "0.05", "0.05"],
        check=True, timeout=30, capture_output=True,
    )  # fmt: skip
    assert detect_dtmf(read_wav(short)) == []


@pytest.mark.interop
def test_speech_talk_off(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("why: espeak-ng or sox not installed")
    raw = tmp_path / "speech.wav"
    out = tmp_path / "speech8k.wav"
    text = "Hello, this is a test of the emergency broadcast system. One two three four five."
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, timeout=60)
    subprocess.run(["sox", str(raw), "-r", "8000", "-b", "16", "-c", "1", str(out)],
                   check=True, timeout=60)  # fmt: skip
    assert digits(read_wav(out)) == ""
    # the same speech with a digit mixed in: only the digit comes out
    speech = read_wav(out)
    tone = generate_dtmf("7", tone_ms=80, gap_ms=0, level_dbfs=-12)
    mixed = speech.astype(np.int32)
    mixed[4000 : 4000 + len(tone)] += tone // 2
    assert digits(np.clip(mixed, -32768, 32767).astype(np.int16)) == "7"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-32768, 32767), max_size=3000), st.integers(1, 700))
def test_detector_never_crashes(samples: list[int], chunk: int) -> None:
    pcm = np.array(samples, dtype=np.int16)
    det = DtmfDetector()
    found = []
    for i in range(0, len(pcm), chunk):
        found += det.feed(pcm[i : i + chunk])
    found += det.flush()
    assert all(d.digit in "0123456789*#ABCD" for d in found)
