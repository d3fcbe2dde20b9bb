from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from callward.cli import app

RUNNER = CliRunner()

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1, SIP/2.0/TCP p.example.com;branch=z9hG4bK2\r\n"
    b"Max-Forwards: 70\r\nt: <sip:bob@example.com>\r\nf: <sip:al@example.com>;tag=9\r\n"
    b"i: abc@x\r\nCSeq: 1 INVITE\r\nX-Custom: one\r\nl: 3\r\n\r\nabc"
)
OK = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
    b"t: <sip:bob@example.com>;tag=77\r\nf: <sip:al@example.com>;tag=9\r\ni: abc@x\r\n"
    b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def test_parse_json_single_and_many(tmp_path: Path) -> None:
    a = tmp_path / "invite.sip"
    a.write_bytes(INVITE)
    b = tmp_path / "ok.sip"
    b.write_bytes(OK)
    res = RUNNER.invoke(app, ["sip", "parse", str(a), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert (
        doc["kind"] == "request"
        and doc["method"] == "INVITE"
        and doc["uri"] == "sip:bob@example.com"
    )
    assert doc["headers"]["Via"] == [
        "SIP/2.0/UDP h.example.com;branch=z9hG4bK1",
        "SIP/2.0/TCP p.example.com;branch=z9hG4bK2",
    ]
    assert doc["headers"]["Call-ID"] == ["abc@x"] and doc["headers"]["X-Custom"] == ["one"]
    assert doc["body_length"] == 3 and doc["status"] is None
    res = RUNNER.invoke(app, ["sip", "parse", str(a), str(b), "--json"])
    both = json.loads(res.stdout)
    assert [d["kind"] for d in both] == ["request", "response"]
    assert both[1]["status"] == 200 and both[1]["reason"] == "OK"


def test_malformed_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sip"
    bad.write_bytes(INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"))
    proc = subprocess.run(
        [sys.executable, "-m", "callward.cli", "sip", "parse", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.sip" in lines[0] and "CSeq" in lines[0]
    missing = subprocess.run(
        [sys.executable, "-m", "callward.cli", "sip", "parse", str(tmp_path / "nope.sip")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
