"""The UA's offer/answer, checked against SDP written by hand (RFC 4566 and RFC 4568
examples) and keys decoded independently with base64."""

from __future__ import annotations

import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from callward.ua.sdp_offer import (
    AudioEndpoint,
    MediaPrefs,
    answer_sdp,
    audio_endpoint,
    negotiated_audio,
    offer_sdp,
    voice_settings,
)

# Shaped like RFC 4566 §5 / RFC 3264 §10.1 examples: session c=, media c= override, video first.
OFFER = (
    b"v=0\r\no=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\ns=-\r\n"
    b"c=IN IP4 224.2.17.12/127\r\nt=0 0\r\n"
    b"m=video 51372 RTP/AVP 99\r\na=rtpmap:99 h263-1998/90000\r\n"
    b"m=audio 49170 RTP/AVP 97 8 0\r\nc=IN IP4 192.0.2.10\r\na=rtpmap:97 iLBC/8000\r\n"
)


def test_audio_endpoint_prefers_media_level_connection() -> None:
    assert audio_endpoint(OFFER) == AudioEndpoint("192.0.2.10", 49170, (97, 8, 0))


def test_answer_keeps_offer_order_of_supported_codecs() -> None:
    answer = answer_sdp(OFFER, "127.0.0.1", 4000, 7)
    assert answer is not None
    assert b"m=audio 4000 RTP/AVP 8 0\r\n" in answer
    assert b"c=IN IP4 127.0.0.1\r\n" in answer and answer.startswith(b"v=0\r\n")
    assert audio_endpoint(answer) == AudioEndpoint("127.0.0.1", 4000, (8, 0))


def test_no_acceptable_codec_or_no_audio() -> None:
    assert answer_sdp(OFFER.replace(b"97 8 0", b"97"), "127.0.0.1", 1, 1) is None
    assert audio_endpoint(b"v=0\r\nm=video 5 RTP/AVP 99\r\n") is None
    assert audio_endpoint(b"\xff\xfe") is None
    offer = offer_sdp("::1", 5004, 1)
    assert b"c=IN IP6 ::1" in offer and audio_endpoint(offer) == AudioEndpoint("::1", 5004, (0, 8))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_never_crashes(data: bytes) -> None:
    audio_endpoint(data)
    answer_sdp(data, "127.0.0.1", 1, 1)


# RFC 4568 §8.1's example offer line, without its MKI (the phone does not use MKIs).
SDES_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
SDES_OFFER = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.1\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 49170 RTP/SAVP 0\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + SDES_KEY.encode() + b"|2^20\r\n"
)
CRYPTO = re.compile(rb"a=crypto:(\d+) (\S+) inline:([A-Za-z0-9+/=]+)\r\n")


def test_sdes_offer_is_answered_with_a_fresh_key_of_the_same_tag_and_suite() -> None:
    answer = answer_sdp(SDES_OFFER, "127.0.0.1", 4000, 7)
    assert answer is not None
    assert b"m=audio 4000 RTP/SAVP 0\r\n" in answer  # RFC 4568 §7.1.2: same profile
    ((tag, suite, key),) = CRYPTO.findall(answer)
    assert (tag, suite) == (b"1", b"AES_CM_128_HMAC_SHA1_80")
    assert len(base64.b64decode(key)) == 30 and key.decode() != SDES_KEY  # 16 B key + 14 salt
    # From the answerer's side: it receives with the offerer's key, sends with its own.
    stream = negotiated_audio(answer, SDES_OFFER, we_offered=False)
    assert stream is not None and stream.local_crypto is not None
    assert stream.remote_crypto is not None
    material = base64.b64decode(SDES_KEY)
    assert stream.remote_crypto.master_key == material[:16]
    assert stream.remote_crypto.master_salt == material[16:]
    assert stream.local_crypto.master_key == base64.b64decode(key)[:16]
    assert (stream.remote_address, stream.remote_port) == ("192.0.2.1", 49170)


def test_sdes_offer_and_answer_between_two_phones_cross_keys() -> None:
    offer = offer_sdp("127.0.0.1", 5004, 1, srtp=True)
    assert b"m=audio 5004 RTP/SAVP 0 8\r\n" in offer and len(CRYPTO.findall(offer)) == 1
    answer = answer_sdp(offer, "127.0.0.1", 6004, 2, require_srtp=True)
    assert answer is not None
    caller = negotiated_audio(offer, answer, we_offered=True)
    callee = negotiated_audio(answer, offer, we_offered=False)
    assert caller is not None and callee is not None
    assert caller.local_crypto == callee.remote_crypto != caller.remote_crypto
    assert caller.remote_port == 6004 and callee.remote_port == 5004
    assert caller.codec.name == callee.codec.name == "PCMU"


def test_unusable_security_is_refused() -> None:
    assert answer_sdp(SDES_OFFER.replace(b"_80", b"_32"), "127.0.0.1", 1, 1) is None
    assert answer_sdp(OFFER, "127.0.0.1", 1, 1, require_srtp=True) is None  # plain offer
    no_crypto = b"\r\n".join(ln for ln in SDES_OFFER.split(b"\r\n") if b"crypto" not in ln)
    assert answer_sdp(no_crypto, "127.0.0.1", 1, 1) is None  # SAVP without a=crypto
    assert negotiated_audio(b"garbage", SDES_OFFER, we_offered=True) is None


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_sdes_answer_never_crashes(tail: bytes) -> None:
    answer_sdp(SDES_OFFER + tail, "127.0.0.1", 1, 1)
    negotiated_audio(SDES_OFFER, SDES_OFFER + tail, we_offered=True)


def test_opus_offer_answer_and_voice_settings() -> None:
    """Opus with the RFC 7587 §6.1 receive parameters; what each side sends follows the
    peer's: the lesser maxaveragebitrate, FEC when the peer can use it, DTX when accepted."""
    alice = MediaPrefs(codecs=("opus", "pcmu"), ptime=60, bitrate=12000, fec=True, dtx=True)
    bob = MediaPrefs(codecs=("opus", "pcmu"), ptime=20, bitrate=16000, fec=False, dtx=True)
    offer = offer_sdp("127.0.0.1", 5004, 1, srtp=True, prefs=alice)
    text = offer.decode()
    assert "a=rtpmap:111 opus/48000/2" in text and "a=ptime:60" in text
    assert "useinbandfec=1" in text and "usedtx=1" in text and "maxaveragebitrate=12000" in text
    answer = answer_sdp(offer, "127.0.0.1", 6004, 2, require_srtp=True, prefs=bob)
    assert answer is not None and b"useinbandfec=0" in answer
    a = negotiated_audio(offer, answer, we_offered=True, prefs=alice)
    b = negotiated_audio(answer, offer, we_offered=False, prefs=bob)
    assert a is not None and b is not None and a.codec.name == b.codec.name == "opus"
    sa, sb = voice_settings(a, alice), voice_settings(b, bob)
    assert (sa.codec, sa.bitrate, sa.fec, sa.dtx, sa.ptime_ms) == ("opus", 12000, False, True, 60)
    assert (sb.codec, sb.bitrate, sb.fec, sb.dtx, sb.ptime_ms) == ("opus", 12000, False, True, 60)


def test_plain_g711_vad_offers_cn() -> None:
    prefs = MediaPrefs(codecs=("pcma",), dtx=True)
    offer = offer_sdp("127.0.0.1", 5004, 1, prefs=prefs)
    assert b"m=audio 5004 RTP/AVP 8 13\r\n" in offer and b"a=rtcp-mux" in offer
    answer = answer_sdp(offer, "127.0.0.1", 6004, 2, prefs=prefs)
    assert answer is not None and b"RTP/AVP 8 13" in answer
    stream = negotiated_audio(offer, answer, we_offered=True, prefs=prefs)
    assert stream is not None and stream.rtcp_mux
    s = voice_settings(stream, prefs)
    assert (s.codec, s.dtx, s.cn_payload_type) == ("pcma", True, 13)
