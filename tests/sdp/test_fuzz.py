"""Hypothesis: the parser and the offer/answer engine never crash (only SdpError escapes),
and every constructible model survives serialize -> parse unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import sdp_transform
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callward.errors import SdpError
from callward.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    Fingerprint,
    LocalMedia,
    MediaDescription,
    OfferAnswerSession,
    Origin,
    SecurityPolicy,
    SessionDescription,
    Timing,
    anchor_offer,
    create_answer,
    negotiate,
    parse_sdp,
    summary,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sdp"
SEEDS = [p.read_bytes() for p in sorted(VECTORS.glob("*.sdp"))]
LOCAL = LocalMedia(
    "192.0.2.10", (30000, 30002), fingerprint=Fingerprint("sha-1", "AB:" * 19 + "AB")
)
# CALLWARD_FUZZ_EXAMPLES=5000 for a long local run; the default keeps tests/sdp well under 2 min.
EXAMPLES = int(os.environ.get("CALLWARD_FUZZ_EXAMPLES", "150"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

token = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=10)
attr_name = token.filter(lambda s: ":" not in s)
text = st.text(
    st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=20
)
ws_text = text.map(lambda s: s.strip(" \t")).filter(bool)
small = st.integers(0, 2**40)

attributes = st.lists(st.builds(Attribute, attr_name, st.none() | text), max_size=6).map(tuple)
connections = st.builds(Connection, token, token, token)
bandwidths = st.lists(
    st.builds(Bandwidth, token.filter(lambda s: ":" not in s), small), max_size=2
).map(tuple)

media = st.builds(
    MediaDescription,
    media=token,
    port=st.integers(0, 65535),
    proto=token,
    formats=st.lists(token, min_size=1, max_size=5).map(tuple),
    port_count=st.none() | st.integers(1, 8),
    information=st.none() | text,
    connections=st.lists(connections, max_size=2).map(tuple),
    bandwidths=bandwidths,
    key=st.none() | ws_text,
    attributes=attributes,
)

sessions = st.builds(
    SessionDescription,
    origin=st.builds(Origin, token, token, small, token, token, token),
    session_name=text,
    information=st.none() | text,
    uri=st.none() | text,
    emails=st.lists(ws_text, max_size=2).map(tuple),
    phones=st.lists(ws_text, max_size=2).map(tuple),
    connection=st.none() | connections,
    bandwidths=bandwidths,
    timings=st.lists(
        st.builds(Timing, small, small, st.lists(ws_text, max_size=2).map(tuple)),
        min_size=1,
        max_size=2,
    ).map(tuple),
    zone=st.none() | ws_text,
    key=st.none() | ws_text,
    attributes=attributes,
    media=st.lists(media, max_size=3).map(tuple),
)


@FAST
@given(sessions)
def test_round_trip_generated_models(sd: SessionDescription) -> None:
    wire = bytes(sd)
    assert parse_sdp(wire) == sd
    assert bytes(parse_sdp(wire)) == wire


@FAST
@given(st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes_only_sdp_error(data: bytes, strict: bool) -> None:
    try:
        parse_sdp(data, strict=strict)
    except SdpError:
        pass


def _answer_everything(data: bytes) -> None:
    try:
        offer = parse_sdp(data)
        summary(offer)
        answer = create_answer(offer, LOCAL, rng=lambda n: b"\x07" * n)
        negotiate(offer, answer, we_offered=False)
        trusted = SecurityPolicy(allow_plain_rtp=True, trusted_leg=True)
        create_answer(offer, LOCAL, security=trusted, hold=True)
        anchor_offer(offer, LOCAL, rng=lambda n: b"\x02" * n)
    except SdpError:
        pass


@FAST
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=6)), max_size=4),
)
def test_mutated_vectors_only_sdp_error(seed: bytes, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(seed)
    for pos, chunk in edits:
        p = pos % (len(data) + 1)
        data[p : p + len(chunk)] = chunk
    _answer_everything(bytes(data))


line_kinds = st.sampled_from(
    [
        "a=rtpmap:{n} {w}/{n}",
        "a=fmtp:{n} {w}",
        "a=ptime:{n}",
        "a=maxptime:{w}",
        "a=crypto:{n} AES_CM_128_HMAC_SHA1_80 inline:{w}",
        "a=crypto:1 AEAD_AES_128_GCM inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVph",
        "a=fingerprint:sha-256 {w}",
        "a=setup:{w}",
        "a=rtcp:{n}",
        "a=zrtp-hash:{w}",
        "a={w}",
        "c=IN IP4 {w}",
        "m=audio {n} RTP/SAVP {n} 0 8",
        "m={w} {n} UDP/TLS/RTP/SAVPF {n}",
        "m=audio {n} RTP/AVP {n}",
    ]
)


@FAST
@given(
    st.lists(
        st.tuples(line_kinds, st.integers(0, 70000), st.sampled_from(["0", "x", "", "PCMU", "96"])),
        max_size=12,
    )
)
def test_structured_offers_only_sdp_error(lines: list[tuple[str, int, str]]) -> None:
    body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    body += "".join(k.format(n=n, w=w) + "\r\n" for k, n, w in lines)
    _answer_everything(body.encode())


@settings(max_examples=max(40, EXAMPLES // 4), deadline=None)
@given(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=4), st.booleans())
def test_session_sequences_only_sdp_error(offers: list[bytes], offer_first: bool) -> None:
    s = OfferAnswerSession(LOCAL, rng=lambda n: b"\x01" * n)
    if offer_first:
        s.create_offer()
        s.rollback()
    for raw in offers:
        try:
            s.receive_offer(parse_sdp(raw))
        except SdpError:
            pass


letters = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-"), min_size=1, max_size=8)
ipv4 = st.tuples(*[st.integers(1, 254)] * 4).map(lambda t: ".".join(map(str, t)))


@FAST
@given(
    st.builds(
        Origin,
        letters,
        st.integers(0, 2**31).map(str),
        st.integers(0, 2**31),
        st.just("IN"),
        st.just("IP4"),
        ipv4,
    ),
    ipv4,
    st.lists(
        st.tuples(
            st.sampled_from(["audio", "video", "image"]),
            st.integers(0, 65535),
            st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF"]),
            st.lists(st.integers(0, 127).map(str), min_size=1, max_size=5, unique=True),
        ),
        max_size=4,
    ),
)
def test_differential_against_sdp_transform(
    origin: Origin, address: str, streams: list[tuple[str, int, str, list[str]]]
) -> None:
    """Generated SDPs read the same by us and by sdp-transform (an independent parser)."""
    sd = SessionDescription(
        origin=origin,
        connection=Connection(address),
        media=tuple(
            MediaDescription(m, p, proto, tuple(f), attributes=(Attribute("sendonly"),))
            for m, p, proto, f in streams
        ),
    )
    ref = sdp_transform.parse(str(sd))
    ours = parse_sdp(str(sd))
    # (letters only: sdp-transform turns a numeric username "00" into the int 0)
    assert ref["origin"]["username"] == ours.origin.username
    assert ref["origin"]["sessionVersion"] == ours.origin.session_version
    assert ref["connection"]["ip"] == address
    assert [(m["type"], m["port"], m["protocol"], str(m["payloads"])) for m in ref["media"]] == [
        (m.media, m.port, m.proto, " ".join(m.formats)) for m in ours.media
    ]
    assert all(m["direction"] == "sendonly" for m in ref["media"])
