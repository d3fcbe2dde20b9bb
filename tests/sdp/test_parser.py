"""SDP parser/serializer: our hand-written vectors, cross-checked field by field against an
independent parser (sdp-transform), plus strict-mode rules and limits."""

from __future__ import annotations

from pathlib import Path

import pytest
import sdp_transform

from callward.errors import SdpError
from callward.sdp import (
    Attribute,
    Direction,
    SdpLimits,
    parse_sdp,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sdp"
ALL = sorted(VECTORS.glob("*.sdp"))
CRLF = [p for p in ALL if b"\r\n" in p.read_bytes()]


def test_vectors_exist() -> None:
    assert len(ALL) >= 7


@pytest.mark.parametrize("path", CRLF, ids=lambda p: p.name)
def test_round_trip_is_byte_exact(path: Path) -> None:
    # Reference: the file itself. A canonical (CRLF, ordered) SDP must come back unchanged.
    raw = path.read_bytes()
    assert bytes(parse_sdp(raw)) == raw


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_matches_sdp_transform(path: Path) -> None:
    """Field-by-field agreement with sdp-transform, an independent parser."""
    text = path.read_text()
    ours = parse_sdp(text)
    ref = sdp_transform.parse(text)
    assert ours.origin.username == ref["origin"]["username"]
    assert int(ours.origin.session_id) == ref["origin"]["sessionId"]
    assert ours.origin.session_version == ref["origin"]["sessionVersion"]
    assert ours.origin.address == ref["origin"]["address"]
    assert ours.session_name == ref["name"]
    if "connection" in ref:
        assert ours.connection is not None
        assert ours.connection.address == ref["connection"]["ip"]
    assert len(ours.media) == len(ref["media"])
    for md, rm in zip(ours.media, ref["media"], strict=True):
        assert md.media == rm["type"]
        assert md.port == rm["port"]
        assert md.proto == rm["protocol"]
        assert " ".join(md.formats) == str(rm["payloads"])
        rtpmaps = [v.split(" ", 1)[0] for v in md.attribute_values("rtpmap")]
        assert [int(p) for p in rtpmaps] == [r["payload"] for r in rm.get("rtp", [])]
        fmtps = {int(v.split(" ", 1)[0]): v.split(" ", 1)[1] for v in md.attribute_values("fmtp")}
        assert fmtps == {f["payload"]: f["config"] for f in rm.get("fmtp", [])}
        if "direction" in rm:
            assert md.direction_attribute == Direction(rm["direction"])
        cryptos = md.attribute_values("crypto")
        assert [c.split()[1] for c in cryptos] == [c["suite"] for c in rm.get("crypto", [])]
        if "ptime" in rm:
            assert md.attribute("ptime") == str(rm["ptime"])


def test_session_and_media_attributes_kept_in_order() -> None:
    sd = parse_sdp((VECTORS / "webrtc_dtls.sdp").read_bytes())
    assert sd.attributes[0] == Attribute("group", "BUNDLE 0")
    names = [a.name for a in sd.media[0].attributes]
    assert names[:4] == ["rtcp", "ice-ufrag", "ice-pwd", "ice-options"]
    assert names[-1] == "ssrc"
    assert Attribute("rtcp-mux") in sd.media[0].attributes  # a property attribute, no value


def test_all_line_types_round_trip() -> None:
    text = (
        "v=0\r\no=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\ns=SDP Seminar\r\n"
        "i=A Seminar on the session description protocol\r\n"
        "u=http://www.example.com/seminars/sdp.pdf\r\ne=j.doe@example.com (Jane Doe)\r\n"
        "p=+1 617 555-6011\r\nc=IN IP4 224.2.17.12/127\r\nb=CT:128\r\n"
        "t=2873397496 2873404696\r\nr=7d 1h 0 25h\r\nt=0 0\r\nz=2882844526 -1h 2898848070 0\r\n"
        "k=prompt\r\na=recvonly\r\nm=audio 49170/2 RTP/AVP 0\r\ni=voice\r\n"
        "c=IN IP4 224.2.17.12/127\r\nb=AS:64\r\nk=prompt\r\na=ptime:20\r\n"
        "m=video 51372 RTP/AVP 99\r\na=rtpmap:99 h263-1998/90000\r\n"
    )
    sd = parse_sdp(text, strict=True)
    assert str(sd) == text
    assert sd.timings[0].repeats == ("7d 1h 0 25h",)
    assert sd.media[0].port_count == 2
    assert sd.media[0].information == "voice"
    assert sd.zone == "2882844526 -1h 2898848070 0"
    assert sd.bandwidths[0].bwtype == "CT" and sd.bandwidths[0].bandwidth == 128


def test_tolerant_accepts_legacy_forms() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 10.0.0.1\n\nS=legacy\nc=IN  IP4   10.0.0.1\n"
        "x=unknown line\nm=audio 5004 RTP/AVP 0\na=sendrecv\n"
    )
    sd = parse_sdp(text)
    assert sd.session_name == "legacy"
    assert sd.connection is not None and sd.connection.address == "10.0.0.1"
    assert sd.timings[0].start == 0  # missing t= tolerated
    with pytest.raises(SdpError):
        parse_sdp(text, strict=True)


@pytest.mark.parametrize(
    ("text", "line", "rule"),
    [
        ("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0 0\n", 1, "CRLF"),
        ("v=0\r\ns=-\r\no=- 1 1 IN IP4 h\r\nt=0 0\r\n", 3, "order"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nx=1\r\n", 5, "unknown type"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n", 5, "media"),
        ("v=0\r\no=- 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n", 2, "origin"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\ns=again\r\nt=0 0\r\n", 4, "order"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n\r\n", 5, "type=value"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 96\r\n", 5, "§5.7"),
        (
            "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\nm=audio 1 RTP/AVP 96\r\n",
            6,
            "§6.6",
        ),
        ("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nb=CT\r\nt=0 0\r\n", 4, "bandwidth"),
        ("v=1\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n", 1, "proto-version"),
        ("v=0\r\no=- 1 1 IN IP4 h\r\nt=0 0\r\n", 0, "session-name"),
    ],
)
def test_strict_errors_name_line_and_rule(text: str, line: int, rule: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text, strict=True)
    assert info.value.line == line
    assert rule in info.value.rule
    assert info.value.status_hint == 400


def test_missing_origin_fails_in_both_modes() -> None:
    for strict in (False, True):
        with pytest.raises(SdpError, match="o="):
            parse_sdp("v=0\r\ns=-\r\nt=0 0\r\n", strict=strict)


def test_limits() -> None:
    base = "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\n"
    many_m = base + "m=audio 1 RTP/AVP 0\r\n" * 5
    with pytest.raises(SdpError, match="max_media"):
        parse_sdp(many_m, limits=SdpLimits(max_media=4))
    with pytest.raises(SdpError, match="max_bytes"):
        parse_sdp(base.encode() + b"a=x\r\n" * 100, limits=SdpLimits(max_bytes=200))
    with pytest.raises(SdpError, match="max_lines"):
        parse_sdp(base + "a=x\r\n" * 20, limits=SdpLimits(max_lines=10))
    with pytest.raises(SdpError, match="max_line_length"):
        parse_sdp(base + "a=" + "x" * 100 + "\r\n", limits=SdpLimits(max_line_length=50))
    with pytest.raises(SdpError, match="max_attributes"):
        parse_sdp(base + "a=x\r\n" * 20, limits=SdpLimits(max_attributes=10))


def test_non_utf8() -> None:
    data = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=Sitzung \xe4\r\nt=0 0\r\n"
    with pytest.raises(SdpError, match="UTF-8"):
        parse_sdp(data, strict=True)
    assert "Sitzung" in parse_sdp(data).session_name


def test_tab_inside_token_is_a_parse_error_with_line() -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(
            "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\t8\r\n",
            strict=True,
        )
    assert info.value.line == 6
    # Tolerant mode splits fields on any whitespace, as legacy gateways expect.
    sd = parse_sdp("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\t8\r\n")
    assert sd.media[0].formats == ("0", "8")


def test_warning_header_value() -> None:
    # RFC 3261 §20.43: warning-value = warn-code SP warn-agent SP warn-text (quoted-string).
    err = SdpError('no "codec"\\ here', warn_code=305)
    assert err.warning("edge.example") == '305 edge.example "no \\"codec\\"\\\\ here"'
