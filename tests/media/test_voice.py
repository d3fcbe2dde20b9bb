"""The voice pipelines against the codecs' own behaviour: CBR Opus frames are exactly
bitrate x ptime, DTX sends nothing but 400 ms refreshes in silence, a single loss is rebuilt
from FEC, G.711 + VAD sends speech and RFC 3389 SIDs, and noise suppression lets DTX start
on noisy speech."""

from __future__ import annotations

import numpy as np
import pytest

from callward.errors import MediaError
from callward.media import noise_suppression
from callward.media.talkspurt import conversation, speech_signal
from callward.media.voice import VoicePacket, VoiceReceiver, VoiceSender, VoiceSettings


def _run(s: VoiceSettings, pcm: np.ndarray) -> list[VoicePacket]:
    tx = VoiceSender(s)
    out: list[VoicePacket] = []
    for i in range(0, len(pcm) - s.frame_samples + 1, s.frame_samples):
        out += tx.encode(pcm[i : i + s.frame_samples])
    return out + tx.flush()


@pytest.mark.parametrize(("bitrate", "ptime"), [(12000, 60), (16000, 20), (6000, 40)])
def test_cbr_opus_frames_have_the_planned_size(bitrate: int, ptime: int) -> None:
    mask = np.ones(300, dtype=bool)
    s = VoiceSettings("opus", 111, ptime, bitrate)
    pkts = _run(s, speech_signal(mask, 16000))
    assert len(pkts) == 3000 // ptime
    assert {len(p.payload) for p in pkts} == {bitrate * ptime // 8000}
    assert pkts[0].marker and not any(p.marker for p in pkts[1:])


def test_dtx_sends_markers_at_talkspurts_and_sparse_refreshes() -> None:
    mask = np.zeros(400, dtype=bool)
    mask[:100] = mask[300:] = True  # 1 s talk, 2 s silence, 1 s talk
    s = VoiceSettings("opus", 111, 20, 12000, dtx=True)
    pkts = _run(s, speech_signal(mask, 16000))
    # 2 s of silence (frames 50-149): 200 ms of hangover (10 frames), then one refresh per
    # 21 frames (400 ms of DTX): 1.8 s / 0.42 s -> 4 refreshes
    hang = [p for p in pkts if 50 <= p.index < 62]
    refresh = [p for p in pkts if 62 <= p.index < 150]
    assert 9 <= len(hang) <= 12 and 3 <= len(refresh) <= 5
    assert all(len(p.payload) == 30 for p in pkts)  # CBR: refreshes are full frames
    starts = [p.index for p in pkts if p.marker]
    assert starts[0] == 0 and any(148 <= i <= 152 for i in starts)


def test_fec_rebuilds_a_single_loss() -> None:
    mask = np.ones(400, dtype=bool)
    s = VoiceSettings("opus", 111, 20, 16000, fec=True, expected_loss_pct=10)
    pkts = _run(s, speech_signal(mask, 16000))
    rx = VoiceReceiver(s)
    for seq, p in enumerate(pkts):
        if seq not in (50, 120, 121):
            rx.receive(seq, p.payload_type, p.payload)
    c = rx.counters
    assert c.decoded == len(pkts) - 3 and c.fec_recovered == 2 and c.concealed == 1
    assert c.decode_errors == 0


def test_g711_vad_speech_and_sid() -> None:
    mask = np.zeros(300, dtype=bool)
    mask[50:150] = True
    s = VoiceSettings("pcmu", 0, 40, dtx=True)
    pkts = _run(s, speech_signal(mask, 8000))
    speech = [p for p in pkts if p.speech]
    sids = [p for p in pkts if not p.speech]
    assert all(len(p.payload) == 320 and p.payload_type == 0 for p in speech)
    # RFC 3389 SID: the level byte, plus 4 reflection coefficients when there is noise to
    # describe (digital silence has none)
    assert all(p.payload_type == 13 and len(p.payload) in (1, 5) for p in sids)
    assert 50 // 2 - 2 <= len(speech) <= 50 // 2 + 10 and len(sids) >= 3
    rx = VoiceReceiver(s)
    for seq, p in enumerate(pkts):
        rx.receive(seq, p.payload_type, p.payload)
    assert rx.counters.decoded == len(speech) and rx.counters.comfort_noise == len(sids)


@pytest.mark.skipif(not noise_suppression.available(), reason="why: no libspeexdsp")
def test_noise_suppression_lets_dtx_start_on_noisy_speech() -> None:
    mask, _ = conversation(20, 3)
    noisy = speech_signal(mask, 16000, seed=3, noise_dbov=-45)
    base = VoiceSettings("opus", 111, 20, 12000, dtx=True)
    plain = len(_run(base, noisy))
    ns = VoiceSettings("opus", 111, 20, 12000, dtx=True, noise_suppression=True)
    assert len(_run(ns, noisy)) < 0.85 * plain


def test_settings_are_validated() -> None:
    with pytest.raises(MediaError):
        VoiceSettings("g729")
    with pytest.raises(MediaError):
        VoiceSettings("pcmu", ptime_ms=10)
    with pytest.raises(MediaError):
        VoiceSettings("opus", bitrate=100000)
    tx = VoiceSender(VoiceSettings("opus"))
    with pytest.raises(MediaError):
        tx.encode(np.zeros(100, dtype=np.int16))
    with pytest.raises(MediaError):
        tx.apply(VoiceSettings("opus", ptime_ms=60))
