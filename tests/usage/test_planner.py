"""Planner figures against arithmetic done by hand from the RFC header sizes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.errors import ConfigError
from callward.usage import MediaChoice, plan_call, plan_keepalive


def test_g711_plain_rtp_ipv4() -> None:
    # 64 kbit/s at 20 ms = 160 B payload; + 12 RTP + 8 UDP + 20 IPv4 = 200 B; 50 pps.
    p = plan_call(MediaChoice("pcmu", srtp="none", rtcp=False))
    assert p.packet_bytes == 200
    assert p.bytes_per_minute == pytest.approx(200 * 50 * 60)
    assert p.kbit_per_second == pytest.approx(80.0)


def test_g711_srtp80_ipv6_with_rtcp() -> None:
    # 160 + 12 + 8 + 40 + 10 (HMAC-SHA1-80 tag) = 230 B, 50 pps = 11500 B/s; RTCP 5 % → 12075.
    p = plan_call(MediaChoice("pcma", srtp="AES_CM_128_HMAC_SHA1_80", ip_version=6))
    assert p.packet_bytes == 230
    assert p.bytes_per_second == pytest.approx(11500 * 1.05)


def test_opus_40ms_rohc_dtx() -> None:
    # 24 kbit/s at 40 ms = 120 B; ROHC 4 B + GCM tag 16 B = 140 B at 25 pps, talking 60 %.
    p = plan_call(
        MediaChoice(
            "opus", ptime_ms=40, srtp="AEAD_AES_128_GCM", rohc=True, voice_activity=0.6, rtcp=False
        )
    )
    assert p.payload_bytes == 120 and p.header_bytes == 20
    assert p.bytes_per_second == pytest.approx(140 * 25 * 0.6)


def test_longer_ptime_saves_header_bytes() -> None:
    short = plan_call(MediaChoice("g729", ptime_ms=20)).bytes_per_minute
    long = plan_call(MediaChoice("g729", ptime_ms=60)).bytes_per_minute
    assert long < short * 0.6  # headers dominate at 8 kbit/s


def test_keepalive() -> None:
    crlf = plan_keepalive("crlf", 120)
    assert crlf.bytes_per_hour == pytest.approx((32 + 30) * 30)
    assert plan_keepalive("register", 600).bytes_per_hour > crlf.bytes_per_hour


@pytest.mark.parametrize(
    "kwargs",
    [
        {"codec": "speex"},
        {"ptime_ms": 7},
        {"voice_activity": 0},
        {"ip_version": 5},
        {"srtp": "rot13"},
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
    assert doc["bytes_per_minute"] == round(200 * 50 * 60 * 1.05)
    bad = runner.invoke(app, ["plan", "--codec", "speex"])
    assert bad.exit_code == 2
    table = runner.invoke(app, ["plan"])
    assert table.exit_code == 0 and "bytes per minute" in table.stdout
