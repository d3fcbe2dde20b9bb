"""The tiny offer/answer of the UA, checked against SDP written by hand (RFC 4566 examples)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from callward.ua.sdp_offer import AudioEndpoint, answer_sdp, audio_endpoint, offer_sdp

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
