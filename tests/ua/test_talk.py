"""ua/talk.py: what a CLI phone says (conversation parties, silence, WAV) and the planner's
figure for it; the real call on the wire is tests/cli/test_phone_wire.py."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from callward.errors import CallwardError
from callward.media.talkspurt import speech_signal
from callward.media.voice import VoiceSettings
from callward.ua.talk import Talked, Voice, planned_for, silence_gaps


def test_caller_and_answerer_are_the_two_parties_of_one_conversation() -> None:
    a, b = Voice("conversation", 0, 7).mask(30), Voice("conversation", 1, 7).mask(30)
    assert len(a) == len(b) == 3000
    assert 0.3 < a.mean() < 0.6 and 0.3 < b.mean() < 0.6
    assert (a & b).mean() < 0.05  # they take turns (back-channel words overlap a little)


def test_blocks_cover_the_mask_at_the_codec_rate() -> None:
    voice = Voice("conversation", 1, 3)
    mask = voice.mask(20.5)
    blocks = list(voice.blocks(mask, 16000))
    assert [len(b) for b in blocks] == [16000] * 20 + [8000]
    pcm = np.concatenate(blocks)
    step = 160
    loud = np.array([np.abs(pcm[i * step : (i + 1) * step]).mean() for i in range(len(mask))])
    assert loud[mask].mean() > 30 * loud[~mask].mean()  # speech where the mask says so


def test_block_synthesis_keeps_the_pitch_continuous() -> None:
    mask = np.ones(200, dtype=bool)
    whole = speech_signal(mask, 8000, seed=5, t0=0.0)
    halves = np.concatenate(
        [speech_signal(mask[:100], 8000, seed=5), speech_signal(mask[100:], 8000, seed=5, t0=1.0)]
    )
    restarted = np.concatenate(
        [speech_signal(mask[:100], 8000, seed=5), speech_signal(mask[100:], 8000, seed=5)]
    )
    assert len(whole) == len(halves)

    def spectrum(x: np.ndarray) -> np.ndarray:
        return np.abs(np.fft.rfft(x[8000:8800]))  # the second half's first 100 ms

    # the continued block carries on the whole signal's pitch; a restarted one does not
    same = np.corrcoef(spectrum(whole), spectrum(halves))[0, 1]
    other = np.corrcoef(spectrum(whole), spectrum(restarted))[0, 1]
    assert same > 0.9 > other


def test_silence_and_wav_sources(tmp_path: Path) -> None:
    assert not Voice("silence").mask(1).any()
    assert all(not b.any() for b in Voice("silence").blocks(np.zeros(100, bool), 8000))
    path = tmp_path / "hello.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.arange(8000) % 100 * 50).astype("<i2").tobytes())
    voice = Voice(str(path))
    pcm = np.concatenate(list(voice.blocks(voice.mask(3), 16000)))
    assert len(pcm) == 48000 and pcm.any()  # resampled to 16 kHz, repeated for 3 s


@pytest.mark.parametrize("source", ["speech", "/nonexistent.wav"])
def test_bad_source_is_one_clear_error(source: str) -> None:
    with pytest.raises(CallwardError, match="expected conversation, silence or a WAV"):
        Voice(source)


def test_not_a_wav(tmp_path: Path) -> None:
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"RIFF0000nope")
    with pytest.raises(CallwardError, match="not a readable WAV"):
        list(Voice(str(bad)).blocks(np.ones(10, bool), 8000))


def test_silence_gaps_and_plan() -> None:
    mask = np.array([0, 0, 1, 1, 1, 0, 1, 0, 0, 0], dtype=bool)
    assert silence_gaps(mask) == [0.02, 0.01, 0.03]
    talked = Talked(VoiceSettings("pcmu", 0, 20, dtx=False), np.ones(6000, dtype=bool))
    plan = planned_for(talked, rtcp_mux=True, srtp=True)
    assert plan.media_bytes_per_minute == pytest.approx(50 * 60 * (160 + 12 + 10 + 28))
