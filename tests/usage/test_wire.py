"""Wire measurement: classification by first bytes (RFC 5761 §4, RFC 5389 §6) and IP datagram
sizes, on captures written byte by byte with quality/synth.py (IPv4 and IPv6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import CaptureError
from callward.quality.synth import Frame, ethernet_ipv4_udp, ethernet_ipv6_udp, write_pcap
from callward.usage.wire import classify, measure_capture

RTP = bytes([0x80, 111]) + bytes(10) + bytes(90)  # v=2, PT 111, 90 B payload
SR = bytes([0x80, 200, 0, 6]) + bytes(24)
STUN = bytes([0, 1, 0, 0]) + b"\x21\x12\xa4\x42" + bytes(12)


def test_classify() -> None:
    assert classify(RTP) == "rtp"
    assert classify(SR) == "rtcp" and classify(bytes([0x81, 201]) + bytes(6)) == "rtcp"
    assert classify(STUN) == "stun"
    assert classify(b"REGISTER sip:x SIP/2.0\r\n") == "sip"
    assert classify(b"SIP/2.0 200 OK\r\n") == classify(b"\r\n\r\n") == "sip"
    assert classify(b"hello") == classify(b"") == "other"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_classify_never_crashes(data: bytes) -> None:
    assert classify(data) in {"rtp", "rtcp", "stun", "sip", "other"}


def test_capture_bytes_per_direction(tmp_path: Path) -> None:
    frames = [Frame(1.0 + i * 0.06, ethernet_ipv4_udp("10.0.0.1", 4000, "10.0.0.2", 5000, RTP))
              for i in range(50)]  # fmt: skip
    frames += [Frame(1.0 + i * 0.02, ethernet_ipv6_udp("::1", 6000, "::2", 7000, RTP))
               for i in range(10)]  # fmt: skip
    frames.append(Frame(2.0, ethernet_ipv4_udp("10.0.0.1", 4001, "10.0.0.2", 5001, SR)))
    frames.sort(key=lambda f: f.ts)
    path = tmp_path / "c.pcap"
    write_pcap(path, frames)
    wire = measure_capture(path)
    (v4,) = [f for f in wire.of("rtp") if f.src == "10.0.0.1:4000"]
    assert v4.packets == 50 and v4.ip_bytes == 50 * (20 + 8 + 102)
    assert v4.seconds == pytest.approx(49 * 0.06)
    (v6,) = [f for f in wire.of("rtp") if f.src == "::1:6000"]
    assert v6.ip_bytes == 10 * (40 + 8 + 102)
    assert wire.total("rtcp") == 20 + 8 + len(SR)


def test_missing_capture_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError):
        measure_capture(tmp_path / "nope.pcap")


def test_plan_verify_against_a_capture(tmp_path: Path) -> None:
    """`callward plan --verify`: 10 s of Opus 12 kb/s CBR at 60 ms (90 B + 12 RTP + 10 tag)
    written by hand; the planner for the same settings agrees exactly, a wrong bitrate
    does not (exit 1)."""
    import json

    from typer.testing import CliRunner

    from callward.cli import app

    pkt = bytes([0x80, 111]) + bytes(10) + bytes(90 + 10)
    frames = [Frame(1.0 + i * 0.06, ethernet_ipv4_udp("10.0.0.1", 4000, "10.0.0.2", 5000, pkt))
              for i in range(167)]  # fmt: skip
    path = tmp_path / "call.pcap"
    write_pcap(path, frames)
    runner = CliRunner()
    args = ["plan", "--codec", "opus", "--bitrate", "12000", "--ptime", "60", "--no-rtcp",
            "--verify", str(path), "--json"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)["verify"]
    (row,) = doc["directions"]
    assert row["packets"] == 167 and row["ratio"] == pytest.approx(1.0, abs=1e-3)
    res = runner.invoke(app, [*args[:4], "16000", *args[5:]])
    assert res.exit_code == 1
    res = runner.invoke(app, ["plan", "--verify", str(tmp_path / "missing.pcap")])
    assert res.exit_code == 2
