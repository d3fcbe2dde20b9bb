"""B2BUA anchoring: leg A's offer rewritten for leg B through the relay, then the answer
for leg A follows what leg B chose. Addresses of the other leg must never leak."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import sdp_transform

from callward.errors import SdpError
from callward.sdp import (
    LocalMedia,
    SecurityPolicy,
    anchor_offer,
    create_answer,
    follow_codecs,
    negotiate,
    parse_sdp,
    summary,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sdp"
RELAY_A = LocalMedia("192.0.2.50", (20000,))
RELAY_B = LocalMedia("192.0.2.51", (20002,))
PHONE_B = LocalMedia("203.0.113.20", (7000,))
TRUSTED = SecurityPolicy(allow_plain_rtp=True, trusted_leg=True)


def _vec(name: str) -> str:
    return (VECTORS / name).read_text()


def test_sdes_to_sdes_rekeys_per_leg_and_hides_leg_a() -> None:
    text_a = _vec("baresip_sdes.sdp")
    offer_a = parse_sdp(text_a)
    offer_b = anchor_offer(offer_a, RELAY_B, rng=lambda n: b"\x0b" * n)
    wire_b = str(offer_b)
    ref = sdp_transform.parse(wire_b)  # independent reading of what leg B receives
    assert ref["connection"]["ip"] == "192.0.2.51" and ref["origin"]["address"] == "192.0.2.51"
    assert ref["media"][0]["port"] == 20002
    assert str(ref["media"][0]["payloads"]) == "96 0 8 101"  # PT numbers carried over
    assert "127.0.0.1" not in wire_b and "alice" not in wire_b  # a=ssrc cname stripped
    keys_a = {ln.split()[-1] for ln in text_a.splitlines() if ln.startswith("a=crypto")}
    keys_b = {c["config"] for c in ref["media"][0]["crypto"]}
    assert keys_a.isdisjoint(keys_b)  # never forward leg A's keys

    answer_b = create_answer(offer_b, PHONE_B, rng=lambda n: b"\x0c" * n)
    streams_b = negotiate(offer_b, answer_b, we_offered=True)
    answer_a = create_answer(
        offer_a, RELAY_A, codecs=follow_codecs(streams_b), rng=lambda n: b"\x0a" * n
    )
    streams_a = negotiate(offer_a, answer_a, we_offered=False)
    assert streams_a[0].codec.key == streams_b[0].codec.key  # same payload format on both legs
    assert streams_a[0].local_crypto != streams_b[0].local_crypto
    assert "203.0.113.20" not in str(answer_a)  # leg B's address stays on leg B
    assert summary(answer_a) == "PCMU/8000 srtp-sdes"


def test_zrtp_passes_through_untouched() -> None:
    text = _vec("zrtp.sdp")
    offer_b = anchor_offer(parse_sdp(text), RELAY_B)
    hash_line = next(ln for ln in text.splitlines() if ln.startswith("a=zrtp-hash:"))
    assert f"{hash_line}\r\n" in str(offer_b)
    assert offer_b.media[0].proto == "RTP/AVP" and not offer_b.media[0].has("crypto")
    # Leg B is a ZRTP phone too: its hash must reach leg A untouched in the relay's answer.
    hash_b = "1.10 " + "cd" * 32
    answer_b = create_answer(offer_b, replace(PHONE_B, zrtp_hashes=(hash_b,)))
    streams_b = negotiate(offer_b, answer_b, we_offered=True)
    relay_a = replace(RELAY_A, zrtp_hashes=streams_b[0].zrtp_hashes)
    answer_a = create_answer(parse_sdp(text), relay_a, codecs=follow_codecs(streams_b))
    assert f"a=zrtp-hash:{hash_b}\r\n" in str(answer_a)
    assert summary(answer_a) == "PCMU/8000 zrtp"


def test_dtls_leg_a_becomes_sdes_leg_b_and_ice_is_stripped() -> None:
    offer_b = anchor_offer(parse_sdp(_vec("webrtc_dtls.sdp")), RELAY_B)
    md = offer_b.media[0]
    assert md.proto == "RTP/SAVPF"
    names = {a.name for a in md.attributes}
    assert not names & {"fingerprint", "setup", "ice-ufrag", "ice-pwd", "rtcp", "ssrc", "mid"}
    assert "crypto" in names and "rtcp-mux" in names
    assert not offer_b.attributes  # a=group:BUNDLE belonged to leg A


def test_plain_trusted_leg_and_refusal() -> None:
    offer_a = parse_sdp(_vec("baresip_sdes.sdp"))
    pbx_policy = SecurityPolicy(preference=(), allow_plain_rtp=True, trusted_leg=True)
    offer_b = anchor_offer(offer_a, RELAY_B, security=pbx_policy)
    assert offer_b.media[0].proto == "RTP/AVP" and not offer_b.media[0].has("crypto")
    untrusted = SecurityPolicy(preference=(), allow_plain_rtp=True, trusted_leg=False)
    with pytest.raises(SdpError) as info:
        anchor_offer(offer_a, RELAY_B, security=untrusted)
    assert info.value.status_hint == 488


def test_non_audio_slots_kept_as_port_zero() -> None:
    offer_b = anchor_offer(parse_sdp(_vec("multi_media.sdp")), RELAY_B)
    assert [(m.media, m.port) for m in offer_b.media] == [
        ("audio", 20002),
        ("video", 0),
        ("image", 0),
    ]


def test_follow_codecs_g729_passthrough_both_legs() -> None:
    offer_a = parse_sdp(_vec("cisco_legacy.sdp"))
    offer_b = anchor_offer(offer_a, RELAY_B, security=TRUSTED)
    from callward.sdp import CodecPolicy, CodecSpec

    g729_only = CodecPolicy(codecs=(CodecSpec("G729", 8000, 1, 18, passthrough=True),))
    answer_b = create_answer(offer_b, PHONE_B, codecs=g729_only, security=TRUSTED)
    streams_b = negotiate(offer_b, answer_b, we_offered=True, codecs=g729_only)
    policy_a = follow_codecs(streams_b, g729_only)
    answer_a = create_answer(offer_a, RELAY_A, codecs=policy_a, security=TRUSTED)
    (a,) = negotiate(offer_a, answer_a, we_offered=False, codecs=policy_a)
    assert a.codec.name == "G729" and a.passthrough
