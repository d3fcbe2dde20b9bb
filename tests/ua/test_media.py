"""The phone's RTP/SRTP endpoint over loopback: keys from a real SDES offer/answer, packet
sizes from RFC 3550/3711 arithmetic, and the wire checked with a plain socket."""

from __future__ import annotations

import asyncio
import random
import socket

import numpy as np
import pytest

from callward.media.talkspurt import speech_signal
from callward.media.voice import VoiceSettings
from callward.rtp.packet import parse_rtp
from callward.rtp.srtp import SrtpKeying, SrtpProfile
from callward.sdp import CryptoAttribute
from callward.ua.impairment import Impairment, ImpairmentShim
from callward.ua.media import RtpEndpoint
from callward.ua.sdp_offer import answer_sdp, negotiated_audio, offer_sdp

pytestmark = pytest.mark.timeout(30)


def _keying(c: CryptoAttribute | None) -> SrtpKeying:
    assert c is not None
    return SrtpKeying(SrtpProfile(c.suite), c.master_key, c.master_salt)


async def _pair() -> tuple[RtpEndpoint, RtpEndpoint]:
    a, b = await RtpEndpoint.open(), await RtpEndpoint.open()
    offer = offer_sdp("127.0.0.1", a.local_addr[1], 1, srtp=True)
    answer = answer_sdp(offer, "127.0.0.1", b.local_addr[1], 2)
    assert answer is not None
    sa = negotiated_audio(offer, answer, we_offered=True)
    sb = negotiated_audio(answer, offer, we_offered=False)
    assert sa is not None and sb is not None
    a.secure(_keying(sa.local_crypto), _keying(sa.remote_crypto))
    b.secure(_keying(sb.local_crypto), _keying(sb.remote_crypto))
    return a, b


async def test_srtp_both_ways_with_negotiated_keys() -> None:
    a, b = await _pair()
    try:
        await asyncio.gather(a.send_audio(b.local_addr, 20), b.send_audio(a.local_addr, 20))
        await asyncio.sleep(0.1)
        for rx, tx in ((a, b), (b, a)):
            assert rx.counters.invalid == 0 and rx.counters.packets_received == 20
            # 12 B RTP header + 160 B G.711 + 10 B HMAC-SHA1-80 tag (RFC 3711 §4.2).
            assert tx.counters.bytes_sent == 20 * (12 + 160 + 10)
            snap = rx.stats[tx.ssrc].snapshot()
            assert snap.received == 19 and snap.cumulative_lost == 0  # A.1 probation: 1st
    finally:
        a.close()
        b.close()


async def test_wrong_key_is_rejected_and_payload_is_encrypted_on_the_wire() -> None:
    a, b = await _pair()
    wire = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wire.bind(("127.0.0.1", 0))
    wire.settimeout(2)
    stranger = await RtpEndpoint.open()
    stranger.secure(SrtpKeying.generate(), SrtpKeying.generate())
    try:
        await stranger.send_audio(b.local_addr, 5)
        await a.send_audio(wire.getsockname(), 1)
        data = wire.recv(2048)
        await asyncio.sleep(0.05)
        assert b.counters.invalid == 5 and b.counters.packets_received == 0
        assert len(data) == 12 + 160 + 10
        header = parse_rtp(data[:12])  # RFC 3711 §3.1: the header stays in the clear
        assert header.ssrc == a.ssrc and header.payload_type == 0
        assert data[12:172] != b"\xff" * 160  # μ-law silence is not visible
    finally:
        wire.close()
        for ep in (a, b, stranger):
            ep.close()


async def test_sender_impairment_drops_before_the_wire() -> None:
    a, b = await RtpEndpoint.open(), await RtpEndpoint.open()
    a.impairment = ImpairmentShim.seeded(Impairment(loss_pct=100), 1, "a")
    try:
        await a.send_audio(b.local_addr, 10)
        await asyncio.sleep(0.05)
        assert a.counters.dropped == a.counters.packets_sent == 10
        assert b.counters.packets_received == 0
    finally:
        a.close()
        b.close()


async def _voice_pair(mux: bool, settings: VoiceSettings) -> tuple[RtpEndpoint, RtpEndpoint]:
    a, b = await _pair()
    a.start(b.local_addr, settings, rtcp_mux=mux, rng=random.Random(1))
    b.start(a.local_addr, settings, rtcp_mux=mux, rng=random.Random(2))
    return a, b


@pytest.mark.parametrize("mux", [True, False])
async def test_voice_with_srtcp_reports_both_ways(mux: bool) -> None:
    """Opus CBR over SRTP with SR/RR compound reports as SRTCP (on the RTP port with
    rtcp-mux, else on port + 1): both sides decode everything and learn the RTT."""
    s = VoiceSettings("opus", 111, 20, 16000)
    a, b = await _voice_pair(mux, s)
    if not mux:
        assert a.local_addr[1] % 2 == 0 and a._rtcp_sock is not None
    try:
        mask = np.ones(600, dtype=bool)  # 6 s: the first report is due after 1-3 s
        pcm = speech_signal(mask, 16000)
        await asyncio.gather(a.send_voice(pcm), b.send_voice(pcm))
        await a.stop()
        await b.stop()
        await asyncio.sleep(0.1)
        for rx, tx in ((a, b), (b, a)):
            assert rx.counters.invalid == 0 and rx.counters.rtcp_invalid == 0
            assert tx.counters.packets_sent == 300
            # 12 RTP + 40 B of Opus (16 kb/s x 20 ms) + 10 B tag
            assert tx.counters.bytes_sent == 300 * (12 + 40 + 10)
            assert rx.receiver is not None and rx.receiver.counters.decoded == 300
            assert tx.counters.rtcp_sent >= 2 and rx.counters.rtcp_received >= 1
        assert a.session is None and b.stats[a.ssrc].snapshot().received >= 299
        result = b.playout(a.ssrc)
        # every packet is either played or late (how many are late depends on how the
        # shared host schedules the sender, so that is not asserted here)
        assert result.late + result.played == 300 and len(result.delay_ms) == 300
    finally:
        a.close()
        b.close()


async def test_rate_controller_follows_receiver_reports() -> None:
    """A receiver report with 20 % loss makes the controller cut the bitrate and turn on FEC;
    the encoder follows at once (CBR frames get smaller)."""
    s = VoiceSettings("opus", 111, 20, 24000, fec=False)
    a, b = await _voice_pair(True, s)
    try:
        a._on_report(51)  # fraction lost 51/256 = 20 %
        assert a.settings is not None and a.settings.bitrate < 24000 and a.settings.fec
        assert a.decisions and "loss" in a.decisions[0].cause
        mask = np.ones(10, dtype=bool)
        await a.send_voice(speech_signal(mask, 16000))
        assert a.counters.bytes_sent < 5 * (12 + 60 + 10)
    finally:
        a.close()
        b.close()
