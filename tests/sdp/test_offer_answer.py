"""RFC 3264 offer/answer, one test per rule. Answers are re-read with sdp-transform (an
independent parser) where the check is about what is on the wire."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import sdp_transform

from callward.errors import SdpError
from callward.sdp import (
    CodecPolicy,
    CodecSpec,
    Direction,
    Fingerprint,
    LocalMedia,
    SecurityMode,
    SecurityPolicy,
    create_answer,
    create_offer,
    negotiate,
    parse_sdp,
    summary,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sdp"
TRUSTED = SecurityPolicy(allow_plain_rtp=True, trusted_leg=True)
LOCAL = LocalMedia("192.0.2.10", (30000,))
FP = Fingerprint("sha-256", ":".join(["5A"] * 32))


def _rng(n: int) -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(n))


def _vec(name: str) -> str:
    return (VECTORS / name).read_text()


def _offer(fmts: str, extra: str = "", conn: str = "198.51.100.1") -> str:
    return (
        f"v=0\r\no=peer 42 1 IN IP4 {conn}\r\ns=-\r\nc=IN IP4 {conn}\r\nt=0 0\r\n"
        f"m=audio 5004 RTP/AVP {fmts}\r\n{extra}"
    )


def _ref(sd: object) -> dict:  # type: ignore[type-arg]
    parsed: dict = sdp_transform.parse(str(sd))  # type: ignore[type-arg]
    return parsed


def test_basic_answer() -> None:
    """§6.1: same m= count, our address/port, offered PT numbers, mirrored direction."""
    offer = parse_sdp(_vec("sipp_uac.sdp"))
    answer = create_answer(offer, LOCAL, security=TRUSTED)
    ref = _ref(answer)
    assert ref["connection"]["ip"] == "192.0.2.10"
    assert len(ref["media"]) == 1
    m = ref["media"][0]
    assert (m["type"], m["port"], m["protocol"], str(m["payloads"])) == (
        "audio",
        30000,
        "RTP/AVP",
        "0",
    )
    assert m["rtp"] == [{"payload": 0, "codec": "PCMU", "rate": 8000}]
    assert m["direction"] == "sendrecv"
    assert summary(answer) == "PCMU/8000 rtp"


def test_codec_intersection_order() -> None:
    """§6.1: only shared formats; our preference order by default, the offer's on request."""
    offer = parse_sdp(_offer("8 3 0 101", "a=rtpmap:101 telephone-event/8000\r\n"))
    ours = create_answer(offer, LOCAL, security=TRUSTED)
    assert ours.media[0].formats == ("0", "101")  # PCMU is first in our policy
    keep = CodecPolicy(honor_offer_order=True)
    theirs = create_answer(offer, LOCAL, codecs=keep, security=TRUSTED)
    assert theirs.media[0].formats == ("8", "101")  # offerer's first shared codec
    many = CodecPolicy(honor_offer_order=True, single_codec=False)
    both = create_answer(offer, LOCAL, codecs=many, security=TRUSTED)
    assert both.media[0].formats == ("8", "0", "101")  # GSM (3) is not in our policy


def test_no_common_codec_is_488_with_warning_305() -> None:
    offer = parse_sdp(_offer("3 4"))
    with pytest.raises(SdpError) as info:
        create_answer(offer, LOCAL, security=TRUSTED)
    err = info.value
    assert err.status_hint == 488
    warning = err.warning("edge1")
    assert warning.startswith('305 edge1 "Incompatible media format')
    assert "GSM/8000" in warning and "G723/8000" in warning


@pytest.mark.parametrize(
    ("offered", "answered"),
    [("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive")],
)
def test_hold_modern(offered: str, answered: str) -> None:
    """§8.4 / §6.1: direction attributes are mirrored."""
    offer = parse_sdp(_offer("0", f"a={offered}\r\n"))
    answer = create_answer(offer, LOCAL, security=TRUSTED)
    assert _ref(answer)["media"][0]["direction"] == answered
    (stream,) = negotiate(offer, answer, we_offered=False)
    assert stream.direction == Direction(answered) and stream.on_hold


def test_hold_legacy_c_zero() -> None:
    """§8.4: RFC 2543 hold (c=0.0.0.0, no attribute): we must not send, we may receive."""
    offer = parse_sdp(_vec("asterisk_hold.sdp"))
    answer = create_answer(offer, LOCAL, security=TRUSTED)
    assert _ref(answer)["media"][0]["direction"] == "recvonly"
    (stream,) = negotiate(offer, answer, we_offered=False)
    assert stream.direction is Direction.RECVONLY
    assert summary(offer) == "PCMA/8000 rtp sendonly"


def test_our_hold_offer_modern_and_legacy() -> None:
    modern = create_offer(LOCAL, security=TRUSTED, hold=True)
    assert _ref(modern)["media"][0]["direction"] == "sendonly"
    legacy = create_offer(LOCAL, security=TRUSTED, legacy_hold=True)
    assert _ref(legacy)["connection"]["ip"] == "0.0.0.0"


def test_port_zero_rejection_keeps_m_line_count() -> None:
    """§6: video and T.38 we do not take are answered with port 0, in place."""
    offer = parse_sdp(_vec("multi_media.sdp"))
    answer = create_answer(offer, LOCAL, rng=_rng)
    ref = _ref(answer)
    assert [(m["type"], m["port"]) for m in ref["media"]] == [
        ("audio", 30000),
        ("video", 0),
        ("image", 0),
    ]
    assert ref["media"][2]["protocol"] == "udptl"
    # Offered audio: G722 PCMU PCMA CN te; our policy has no G722 -> PCMU, then CN and te
    # in offer order.
    assert str(ref["media"][0]["payloads"]) == "0 13 101"
    assert summary(answer) == "PCMU/8000 srtp-sdes"


def test_offered_port_zero_stream_stays_rejected() -> None:
    text = _offer("0") + "m=audio 0 RTP/AVP 8\r\n"
    answer = create_answer(parse_sdp(text), LOCAL, security=TRUSTED)
    assert [m.port for m in answer.media] == [30000, 0]


def test_telephone_event_keeps_offer_pt_and_matches_clock() -> None:
    """RFC 4733 §7.1.1 + RFC 3264 §6.1: the offer's PT numbers; te at the codec's rate."""
    offer = parse_sdp(_vec("webrtc_dtls.sdp"))
    opus_first = CodecPolicy(codecs=(CodecSpec("opus", 48000, 2, 111), *CodecPolicy().codecs))
    local = LocalMedia("192.0.2.10", (30000,), fingerprint=FP)
    answer = create_answer(offer, local, codecs=opus_first)
    assert answer.media[0].formats == ("111", "110")  # te/48000 is PT 110 in the offer
    pcmu = create_answer(offer, local)
    assert pcmu.media[0].formats == ("0", "13", "126")  # te/8000 is PT 126 in the offer


def test_ptime_and_maxptime() -> None:
    def ptime_of(extra: str) -> str:
        answer = create_answer(parse_sdp(_offer("0", extra)), LOCAL, security=TRUSTED)
        return str(_ref(answer)["media"][0]["ptime"])

    assert ptime_of("") == "20"  # missing ptime: our default (RFC 3551 §4.5: 20 ms)
    assert ptime_of("a=ptime:30\r\n") == "30"
    assert ptime_of("a=ptime:100\r\n") == "60"  # capped at our maxptime
    assert ptime_of("a=ptime:40\r\na=maxptime:20\r\n") == "20"  # capped at theirs


def test_rtcp_mux_only_when_offered() -> None:
    plain = create_answer(parse_sdp(_offer("0")), LOCAL, security=TRUSTED)
    assert not plain.media[0].has("rtcp-mux")
    mux = create_answer(parse_sdp(_offer("0", "a=rtcp-mux\r\n")), LOCAL, security=TRUSTED)
    assert mux.media[0].has("rtcp-mux")
    (stream,) = negotiate(parse_sdp(_offer("0", "a=rtcp-mux\r\n")), mux, we_offered=False)
    assert stream.rtcp_mux and stream.remote_rtcp_port == 5004
    (plain_stream,) = negotiate(parse_sdp(_offer("0")), plain, we_offered=False)
    assert plain_stream.remote_rtcp_port == 5005  # RFC 3550 §11: RTP port + 1


def test_legacy_cisco_g729_passthrough() -> None:
    offer = parse_sdp(_vec("cisco_legacy.sdp"))
    g729_first = CodecPolicy(codecs=(CodecSpec("G729", 8000, 1, 18, passthrough=True),))
    answer = create_answer(offer, LOCAL, codecs=g729_first, security=TRUSTED)
    ref = _ref(answer)["media"][0]
    assert str(ref["payloads"]) == "18"
    assert ref["fmtp"] == [{"payload": 18, "config": "annexb=no"}]  # echoed (RFC 4856)
    (stream,) = negotiate(offer, answer, we_offered=False, codecs=g729_first)
    assert stream.passthrough and stream.codec.name == "G729"
    # Default policy on the same offer: PCMU from the lower-case 'pcmu' rtpmap.
    default = create_answer(offer, LOCAL, security=TRUSTED)
    assert default.media[0].formats == ("0", "101")
    assert default.media[0].attribute_values("rtpmap")[0] == "0 PCMU/8000"


def test_sdes_answer_has_own_key_same_tag_and_suite() -> None:
    """RFC 4568 §7.1.2: answer one crypto line with the chosen tag and suite, our own key."""
    offer = parse_sdp(_vec("baresip_sdes.sdp"))
    answer = create_answer(offer, LOCAL, rng=_rng)
    (line,) = answer.media[0].attribute_values("crypto")
    tag, suite, inline = line.split()
    assert (tag, suite) == ("1", "AES_CM_128_HMAC_SHA1_32")
    key = base64.b64decode(inline.removeprefix("inline:"))
    assert key == _rng(30)
    (stream,) = negotiate(offer, answer, we_offered=False)
    assert stream.security is SecurityMode.SDES_SRTP
    assert stream.local_crypto is not None and stream.local_crypto.keys[0].key_salt == key
    assert stream.remote_crypto is not None and stream.remote_crypto.tag == 1


def test_dtls_answer() -> None:
    offer = parse_sdp(_vec("webrtc_dtls.sdp"))
    answer = create_answer(offer, LocalMedia("192.0.2.10", (30000,), fingerprint=FP))
    m = _ref(answer)["media"][0]
    assert m["protocol"] == "UDP/TLS/RTP/SAVPF"
    assert m["setup"] == "active"  # RFC 5763 §5 / RFC 8842
    assert m["fingerprint"] == {"type": "sha-256", "hash": FP.value}
    assert summary(answer) == "PCMU/8000 dtls-srtp"
    with pytest.raises(SdpError):  # no local certificate -> no DTLS; nothing else offered
        create_answer(offer, LOCAL)


def test_zrtp_answer_passes_other_legs_hash() -> None:
    offer = parse_sdp(_vec("zrtp.sdp"))
    other_leg = "1.10 " + "ab" * 32
    answer = create_answer(offer, LocalMedia("192.0.2.10", (30000,), zrtp_hashes=(other_leg,)))
    assert answer.media[0].attribute_values("zrtp-hash") == (other_leg,)
    assert answer.media[0].proto == "RTP/AVP"


def test_full_exchange_between_two_engines() -> None:
    """Our offer, answered by our answerer: both sides read the same codec and cross keys."""
    alice = LocalMedia("192.0.2.1", (40000,))
    bob = LocalMedia("192.0.2.2", (50000,))
    offer = parse_sdp(bytes(create_offer(alice, rng=_rng)))
    answer = parse_sdp(bytes(create_answer(offer, bob, rng=lambda n: b"\x01" * n)))
    (a,) = negotiate(offer, answer, we_offered=True)
    (b,) = negotiate(offer, answer, we_offered=False)
    assert a.codec == b.codec and a.codec.name == "PCMU"
    assert (a.remote_address, a.remote_port) == ("192.0.2.2", 50000)
    assert (b.remote_address, b.remote_port) == ("192.0.2.1", 40000)
    assert a.local_crypto == b.remote_crypto and a.remote_crypto == b.local_crypto
    assert a.local_crypto is not None and a.local_crypto.keys[0].key_salt == _rng(30)


def test_answer_must_not_change_m_count_or_invent_pts() -> None:
    offer = parse_sdp(_offer("0 8"))
    bad_count = parse_sdp(_offer("0") + "m=audio 0 RTP/AVP 0\r\n")
    with pytest.raises(SdpError, match="m= lines"):
        negotiate(offer, bad_count, we_offered=True)
    with pytest.raises(SdpError, match="not offered"):
        negotiate(offer, parse_sdp(_offer("9")), we_offered=True)


def test_who_sends_which_codec_and_ptime() -> None:
    """§6.1: the answerer sends the offer's most preferred format also in the answer; §7: the
    offerer sends the answer's most preferred. ptime is the receiver's wish (RFC 8866 §6.4)."""
    offer = parse_sdp(_offer("8 0", "a=ptime:30\r\n"))
    both = CodecPolicy(single_codec=False)  # our order: PCMU, PCMA
    answer = create_answer(offer, LOCAL, codecs=both, security=TRUSTED)
    assert answer.media[0].formats == ("0", "8")
    (as_answerer,) = negotiate(offer, answer, we_offered=False)
    assert as_answerer.codec.name == "PCMA" and as_answerer.ptime == 30
    (as_offerer,) = negotiate(offer, answer, we_offered=True)
    assert as_offerer.codec.name == "PCMU" and as_offerer.ptime == 30  # our answer said 30


def test_answer_without_rtpmap_for_dynamic_pt_uses_the_offers() -> None:
    offer = parse_sdp(_offer("96", "a=rtpmap:96 opus/48000/2\r\n"))
    answer = parse_sdp(_offer("96"))  # legacy answerer: no rtpmap at all
    (stream,) = negotiate(offer, answer, we_offered=True)
    assert str(stream.codec) == "opus/48000/2"


def test_zrtp_offer_without_a_zrtp_peer_behind_us_is_not_plain_rtp() -> None:
    """A ZRTP offer answered by an endpoint that has no ZRTP would be plain RTP: refused."""
    with pytest.raises(SdpError) as info:
        create_answer(parse_sdp(_vec("zrtp.sdp")), LOCAL)
    assert info.value.status_hint == 488 and info.value.warn_code == 302


def test_offer_without_media_gets_answer_without_media() -> None:
    """RFC 3264 §5: zero m= lines is a valid offer; the answer has zero too."""
    offer = parse_sdp("v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nt=0 0\r\n")
    answer = create_answer(offer, LOCAL)
    assert answer.media == ()
    assert negotiate(offer, answer, we_offered=False) == ()
    with pytest.raises(SdpError, match="no stream"):
        create_answer(parse_sdp(_offer("0").replace("m=audio 5004", "m=audio 0")), LOCAL)
