"""Codec views: RFC 3551 static payload types, case-insensitive names, ptime."""

from __future__ import annotations

from pathlib import Path

import pytest

from callward.errors import SdpError
from callward.sdp import (
    STATIC_PAYLOAD_TYPES,
    MediaDescription,
    media_codecs,
    media_maxptime,
    media_ptime,
    parse_rtpmap,
    parse_sdp,
)
from callward.sdp.model import Attribute

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sdp"


@pytest.mark.parametrize(
    ("pt", "name", "rate"),
    # Typed from RFC 3551 §6, Table 4.
    [(0, "PCMU", 8000), (3, "GSM", 8000), (8, "PCMA", 8000), (9, "G722", 8000),
     (13, "CN", 8000), (18, "G729", 8000), (6, "DVI4", 16000), (34, "H263", 90000)],
)  # fmt: skip
def test_static_table(pt: int, name: str, rate: int) -> None:
    assert STATIC_PAYLOAD_TYPES[pt][:2] == (name, rate)


def test_cisco_static_without_rtpmap_and_lowercase() -> None:
    sd = parse_sdp((VECTORS / "cisco_legacy.sdp").read_bytes())
    codecs = media_codecs(sd.media[0])
    assert [(c.payload_type, c.name, c.clock_rate) for c in codecs] == [
        (18, "G729", 8000),  # no rtpmap: RFC 3551 default
        (0, "PCMU", 8000),  # 'pcmu' in the SDP, registered spelling here
        (101, "telephone-event", 8000),  # 'Telephone-Event'
    ]
    assert codecs[0].fmtp == "annexb=no"
    assert media_ptime(sd.media[0]) is None  # missing ptime stays missing


def test_dynamic_without_rtpmap() -> None:
    md = MediaDescription("audio", 1, "RTP/AVP", ("0", "96"))
    assert [c.payload_type for c in media_codecs(md)] == [0]
    with pytest.raises(SdpError, match="96"):
        media_codecs(md, strict=True)


def test_rtpmap_channels_and_errors() -> None:
    assert parse_rtpmap("111 OPUS/48000/2") == (111, "opus", 48000, 2)
    for bad in ("x PCMU/8000", "0 PCMU", "0 PCMU/x", "200 PCMU/8000", "0 /8000"):
        with pytest.raises(SdpError):
            parse_rtpmap(bad)


def test_ptime_decimal_and_maxptime() -> None:
    md = MediaDescription(
        "audio",
        1,
        "RTP/AVP",
        ("0",),
        attributes=(Attribute("ptime", "30.0"), Attribute("maxptime", "40")),
    )
    assert media_ptime(md) == 30
    assert media_maxptime(md) == 40


def test_non_rtp_has_no_codecs() -> None:
    assert media_codecs(MediaDescription("image", 1, "udptl", ("t38",))) == ()
