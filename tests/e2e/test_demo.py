"""`callward demo` run exactly as a user would: a subprocess, from the installed entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def callward() -> str:
    local = Path(sys.executable).with_name("callward")
    found = str(local) if local.exists() else shutil.which("callward")
    if found is None:
        pytest.skip("why: the callward console script is not installed (pip install -e .)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [callward(), "demo", *args], capture_output=True, text=True, timeout=40, check=False
    )


def test_demo_prints_a_ladder_and_exits_0() -> None:
    start = time.monotonic()
    proc = run()
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 20
    lines = proc.stdout.splitlines()
    order = [
        next(i for i, ln in enumerate(lines) if needle in ln)
        for needle in ("INVITE", "180 Ringing", "200 OK (SDP)", "ACK", "BYE")
    ]
    assert order == sorted(order)  # the basic call flow of RFC 3665 §3.1, in that order
    bye = order[-1]
    assert any("200 OK" in ln for ln in lines[bye + 1 :])  # BYE answered
    assert "callward demo summary" in proc.stdout and "ok" in proc.stdout


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_demo_json_follows_rfc3665_basic_call(transport: str) -> None:
    proc = run("--json", "--transport", transport, "--rtp-packets", "10")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    sip = [(e["from"], e["to"], e["label"]) for e in report["ladder"] if e["transport"] != "rtp"]
    # RFC 3665 §3.1 (Successful Session Establishment), written out by hand; our UAS also sends
    # 100 Trying (RFC 3261 §17.2.1) before ringing.
    assert sip == [
        ("alice", "bob", "INVITE (SDP)"),
        ("bob", "alice", "100 Trying"),
        ("bob", "alice", "180 Ringing"),
        ("bob", "alice", "200 OK (SDP)"),
        ("alice", "bob", "ACK"),
        ("alice", "bob", "BYE"),
        ("bob", "alice", "200 OK"),
    ]
    assert report["ok"] is True and report["transport"] == transport
    assert report["summary"]["RTP alice → bob"] == "10/10 packets"
    assert report["summary"]["RTP bob → alice"] == "10/10 packets"
    times = [e["t_ms"] for e in report["ladder"]]
    assert times == sorted(times)


def test_demo_bad_transport_is_exit_2_with_one_line() -> None:
    proc = run("--transport", "carrier-pigeon")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "callward:" in proc.stderr
