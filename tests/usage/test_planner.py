"""Planner figures against arithmetic done by hand from the RFC header sizes, and its silence
model against the packets libopus and our G.711 VAD really emit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.errors import ConfigError
from callward.media.talkspurt import conversation, speech_signal
from callward.media.voice import VoiceSender, VoiceSettings
from callward.usage import MediaChoice, plan_call, planner
from callward.usage.planner import dtx_packets_for_mask, dtx_packets_in_gap, rtcp_reports

MEAN = 5 / (math.e - 1.5)  # RFC 3550 A.7 mean interval at the 5 s minimum


def test_g711_plain_rtp_ipv4() -> None:
    # 64 kbit/s at 20 ms = 160 B payload; + 12 RTP + 8 UDP + 20 IPv4 = 200 B; 50 pps.
    p = plan_call(MediaChoice("pcmu", srtp="none", rtcp=False))
    assert p.packet_bytes == 200
    assert p.bytes_per_minute == pytest.approx(200 * 50 * 60)
    assert p.kbit_per_second == pytest.approx(80.0)


def test_g711_srtp80_ipv6_rtcp_from_the_interval_rules() -> None:
    # 160 + 12 + 8 + 40 + 10 (HMAC-SHA1-80 tag) = 230 B at 50 pps. RTCP: SR 52 + SDES 28 +
    # SRTCP 14 + IPv6/UDP 48 = 142 B per report; RR+BYE 16 + 14 + 48 = 78 B at the end.
    p = plan_call(MediaChoice("pcma", ip_version=6))
    assert p.packet_bytes == 230
    reports = 1 + (60 - MEAN / 2) / MEAN
    assert p.rtcp_bytes_per_minute == pytest.approx(reports * 142 + 78)
    assert p.media_bytes_per_minute == pytest.approx(230 * 50 * 60)
    # the old flat 5 % was 12x too much for a voice call
    assert p.rtcp_bytes_per_minute < 0.05 * p.media_bytes_per_minute / 5


def test_reduced_size_rtcp_and_srtp32() -> None:
    # RFC 5506: SR alone (52 B); the _32 suite still tags SRTCP with 80 bits (RFC 3711 §5.2)
    full = plan_call(MediaChoice("pcmu", srtp="AES_CM_128_HMAC_SHA1_32"))
    reduced = plan_call(MediaChoice("pcmu", srtp="AES_CM_128_HMAC_SHA1_32", rtcp_reduced=True))
    assert full.packet_bytes == 160 + 12 + 8 + 20 + 4
    reports = 1 + (60 - MEAN / 2) / MEAN
    assert full.rtcp_bytes_per_minute - reduced.rtcp_bytes_per_minute == pytest.approx(reports * 28)


def test_rtcp_report_count() -> None:
    assert rtcp_reports(MEAN / 2) == pytest.approx(1.0)
    assert rtcp_reports(MEAN / 2 + 10 * MEAN) == pytest.approx(11.0)


def test_opus_cbr_rohc_and_turn() -> None:
    # 16 kbit/s CBR at 40 ms = 80 B; ROHC 4 B + GCM tag 16 B = 100 B at 25 pps.
    p = plan_call(MediaChoice("opus", ptime_ms=40, bitrate=16000, srtp="AEAD_AES_128_GCM",
                              rohc=True, rtcp=False))  # fmt: skip
    assert p.payload_bytes == 80 and p.header_bytes == 20
    assert p.bytes_per_second == pytest.approx(100 * 25)
    # TURN ChannelData: +4 B (RFC 8656 §12.4); Send indication: 20 STUN + 12 XOR-PEER-ADDRESS
    # + 4 DATA header + padding of the 80 + 12 + 10 = 102 B SRTP packet to 104.
    base = MediaChoice("opus", bitrate=16000, rtcp=False)
    plain = plan_call(base).packet_bytes
    chan = plan_call(MediaChoice("opus", bitrate=16000, rtcp=False, transport="turn-channel"))
    send = plan_call(MediaChoice("opus", bitrate=16000, rtcp=False, transport="turn-send"))
    assert plain == 40 + 12 + 8 + 20 + 10
    assert chan.packet_bytes == plain + 4
    assert send.packet_bytes == plain + 20 + 12 + 4 + 2


def test_fec_costs_bytes_only_in_vbr() -> None:
    cbr = plan_call(MediaChoice("opus", bitrate=12000, fec=True, rtcp=False))
    vbr = plan_call(MediaChoice("opus", bitrate=12000, fec=True, cbr=False, rtcp=False))
    assert cbr.payload_bytes == 30 and vbr.payload_bytes > 30


def test_longer_ptime_saves_header_bytes() -> None:
    short = plan_call(MediaChoice("g729", ptime_ms=20)).bytes_per_minute
    long = plan_call(MediaChoice("g729", ptime_ms=60)).bytes_per_minute
    assert long < short * 0.6  # headers dominate at 8 kbit/s


def test_dtx_gap_model_by_hand() -> None:
    # Opus at 20 ms: 200 ms of hangover (10 frames), then one frame per 21 (400 ms of DTX).
    assert dtx_packets_in_gap("opus", 0.1, 20) == (5.0, 0.0)
    assert dtx_packets_in_gap("opus", 0.2 + 0.42 * 3, 20) == (13.0, 0.0)
    # at 60 ms: 4 packets of hangover, then 6 DTX packets and one sent (every 21 frames)
    assert dtx_packets_in_gap("opus", 0.24 + 0.42 * 2, 60) == (6.0, 0.0)
    # at 40 ms: 5 packets of hangover, one per 420 ms after that (alternately 10 and 11)
    assert dtx_packets_in_gap("opus", 0.2 + 0.42 * 4, 40) == (9.0, 0.0)
    # G.711 VAD: 14 frames stay speech, then a SID every 25 frames (first one at once)
    assert dtx_packets_in_gap("pcmu", 0.28 + 0.5 * 2, 20) == (14.0, 2.0)
    assert dtx_packets_in_gap("pcmu", 0.28 + 0.5 * 2 + 0.02, 20) == (14.0, 3.0)


def _gaps(mask: np.ndarray) -> list[float]:
    edges = np.flatnonzero(np.diff(np.concatenate([[1], mask.astype(int), [1]])))
    return [float(b - a) / 100 for a, b in zip(edges[::2], edges[1::2], strict=True)]


@pytest.mark.parametrize(
    ("codec", "ptime"), [("opus", 20), ("opus", 40), ("opus", 60), ("pcmu", 20), ("pcma", 60)]
)
def test_dtx_packet_count_matches_the_real_encoders(codec: str, ptime: int) -> None:
    """The planner, told only the talk model's silences, predicts the packets the real
    sender (libopus DTX / webrtcvad + CN) emits for a minute of conversation within 2 %."""
    mask, _ = conversation(60, seed=4)
    s = VoiceSettings(codec, 111 if codec == "opus" else 0, ptime, 12000, dtx=True)
    pcm = speech_signal(mask, s.sample_rate, seed=4)
    tx = VoiceSender(s)
    sent = []
    for i in range(0, len(pcm) - s.frame_samples + 1, s.frame_samples):
        sent += tx.encode(pcm[i : i + s.frame_samples])
    sent += tx.flush()
    choice = MediaChoice(codec, ptime, 12000 if codec == "opus" else None,
                         voice_activity=float(mask.mean()), rtcp=False)  # fmt: skip
    plan = plan_call(choice, silence_gaps_s=_gaps(mask))
    assert plan.media_packets == pytest.approx(len(sent), rel=0.02)
    payload = sum(len(p.payload) for p in sent)
    planned_payload = plan.breakdown["codec_payload"] * 60
    assert planned_payload == pytest.approx(payload, rel=0.02)


def _sent_bytes(codec: str, ptime: int, mask: np.ndarray, seed: int) -> int:
    """IPv4/UDP/RTP/SRTP-80 bytes media/voice.py sends for one party of a conversation."""
    s = VoiceSettings(codec, 111 if codec == "opus" else 0, ptime, 12000, dtx=True)
    pcm = speech_signal(mask, s.sample_rate, seed=seed, noise_dbov=-65.0)
    tx = VoiceSender(s)
    sent = []
    for i in range(0, len(pcm) - s.frame_samples + 1, s.frame_samples):
        sent += tx.encode(pcm[i : i + s.frame_samples])
    sent += tx.flush()
    return sum(len(p.payload) + 12 + 10 + 28 for p in sent)


def _planned(codec: str, ptime: int, mask: np.ndarray) -> float:
    choice = MediaChoice(codec, ptime, 12000 if codec == "opus" else None,
                         voice_activity=float(mask.mean()), rtcp=False)  # fmt: skip
    return plan_call(choice, talk_mask=mask.tolist()).media_bytes_per_second * 60


@pytest.mark.parametrize(
    ("codec", "ptime", "seed"), [("pcmu", 20, 3), ("pcma", 40, 2), ("pcmu", 60, 4)]
)
def test_talk_mask_plan_within_1pct_of_the_g711_vad_sender(
    codec: str, ptime: int, seed: int
) -> None:
    """Given the talk mask (not just its silences) the planner follows the VAD + CN sender
    frame by frame on the packet grid: within 1 % of what media/voice.py emits for a minute
    of conversation, for several talk shapes and ptimes."""
    mask = conversation(60, seed=seed)[seed % 2]
    assert _planned(codec, ptime, mask) == pytest.approx(
        _sent_bytes(codec, ptime, mask, seed), rel=0.01
    )


@pytest.mark.parametrize("ptime", [20, 60])
def test_talk_mask_plan_of_opus_dtx_within_1pct_on_average(ptime: int) -> None:
    """Opus DTX: libopus's VAD wakes now and then on the background noise (a random cost
    the planner prices as an expected rate), so single minutes vary by a few percent; over
    six conversations (seeds not used to measure that rate) the planner is within 1 %."""
    errors = []
    for seed in range(21, 27):
        mask = conversation(60, seed=seed)[seed % 2]
        wire = _sent_bytes("opus", ptime, mask, seed)
        errors.append(_planned("opus", ptime, mask) / wire - 1)
    assert abs(sum(errors) / len(errors)) <= 0.01, errors
    assert max(abs(e) for e in errors) <= 0.05, errors


def test_talk_mask_model_by_hand() -> None:
    # Opus 20 ms: a 100 ms spurt, then silence: coded up to the first 20 ms boundary 210 ms
    # after it (11 frames), then the 21st DTX frame is coded (refresh)
    mask = [True] * 10 + [False] * 90
    full, sid = dtx_packets_for_mask("opus", mask, 20)
    dtx_s = (90 // 2 - 11 - 1) * 0.02  # plus the expected noise wake-ups in the DTX time
    wakes = dtx_s * planner.OPUS_NOISE_WAKES_PER_S * planner.OPUS_WAKE_FRAMES
    assert (full, sid) == (pytest.approx(5 + 11 + 1 + wakes), 0)
    # G.711 20 ms: 14 frames of hangover (270 ms after the end, to the boundary), a SID at the
    # first silent frame and one 25 frames later, 2 look-ahead frames before the next onset
    mask = [False] * 0 + [True] * 10 + [False] * 100 + [True] * 10
    full, sid = dtx_packets_for_mask("pcmu", mask, 20)
    assert full == 5 + 14 + 2 + 5 and sid == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"codec": "speex"},
        {"ptime_ms": 7},
        {"voice_activity": 0},
        {"ip_version": 5},
        {"srtp": "rot13"},
        {"transport": "carrier-pigeon"},
    ],
)
def test_bad_choices_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MediaChoice(**kwargs)  # type: ignore[arg-type]


def test_cli_json_and_bad_input() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["plan", "--codec", "pcmu", "--srtp", "none", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    # plain RTCP: 80 B compound + 28 B IPv4/UDP; RR+BYE 16 + 28
    reports = 1 + (60 - MEAN / 2) / MEAN
    assert doc["bytes_per_minute"] == round(200 * 50 * 60 + reports * 108 + 44)
    bad = runner.invoke(app, ["plan", "--codec", "speex"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1
    table = runner.invoke(app, ["plan"])
    assert table.exit_code == 0 and "bytes per minute" in table.stdout
