"""The conversation model: each side talks a little under half of the time, turns alternate,
the signal is speech to WebRTC's VAD where the mask says so and silence elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from callward.errors import MediaError
from callward.media.talkspurt import conversation, speech_signal
from callward.media.vad import classify


def test_activity_and_determinism() -> None:
    acts = []
    for seed in range(6):
        a, b = conversation(120, seed)
        assert len(a) == len(b) == 12000
        acts += [a.mean(), b.mean()]
        assert (a & b).mean() < 0.05  # people rarely talk over each other
    assert 0.3 < float(np.mean(acts)) < 0.55
    a1, _ = conversation(30, 9)
    a2, _ = conversation(30, 9)
    assert (a1 == a2).all()


def test_signal_is_speech_only_where_the_mask_is() -> None:
    mask, _ = conversation(20, 2)
    pcm = speech_signal(mask, 8000, seed=2)
    _active, raw = classify(pcm, 8000)
    truth = mask.reshape(-1, 2).any(axis=1)[: len(raw)]
    agree = (raw == truth).mean()
    assert agree > 0.9
    assert np.abs(pcm[np.repeat(~mask, 80)]).max() == 0  # digital silence between spurts


def test_bad_input() -> None:
    with pytest.raises(MediaError):
        conversation(0)
    with pytest.raises(MediaError):
        speech_signal(np.ones(10, dtype=bool), 11025)
