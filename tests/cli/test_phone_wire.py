"""Two ``callward phone`` processes hold a conversation and the caller records it (``--capture``,
dumpcap); tshark, an independent dissector, reads the capture: the codec and ptime agreed in
SDP are what the RTP carries, DTX/VAD leaves real gaps (marker bit after each), the bytes tshark
counts are the bytes the phone reports, and the planner is within 1 % of them."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from peers import add_subscriber, callward_edge, free_port, stop, tshark_capture

pytestmark = [pytest.mark.interop, pytest.mark.timeout(150)]

CLI = [sys.executable, "-m", "callward.cli", "phone"]
PORTS = (24100, 24199)  # economy16's block (COORD.md)

if shutil.which("tshark") is None or shutil.which("dumpcap") is None:  # pragma: no cover
    pytest.skip("why: tshark/dumpcap (Debian tshark) not installed", allow_module_level=True)


def _rtp_rows(pcap: Path) -> dict[int, list[tuple[int, int, int, bool, int, float]]]:
    """Per UDP source port: (payload type, seq, timestamp, marker, IP length, time) as tshark
    decodes them (RTP found from the SDP of the SIP dialog it also captured)."""
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "rtp", "-T", "fields", "-e", "udp.srcport",
         "-e", "rtp.p_type", "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.marker",
         "-e", "ip.len", "-e", "frame.time_relative"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    rows: dict[int, list[tuple[int, int, int, bool, int, float]]] = defaultdict(list)
    for line in out.splitlines():
        port, pt, seq, ts, marker, length, t = line.split("\t")
        rows[int(port)].append(
            (int(pt), int(seq), int(ts), marker in ("1", "True"), int(length), float(t))
        )
    return rows


def _converse(tmp_path: Path, seconds: int, *media: str) -> tuple[dict, dict, Path]:
    port = free_port(PORTS)
    pcap = tmp_path / "call.pcapng"
    answering = subprocess.Popen(
        [*CLI, "answer", "--listen", f"127.0.0.1:{port}", "--user", "bob", "--json",
         "--timeout", "60", "--srtp", "sdes", *media],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.5)  # interpreter start + bind
        proc = subprocess.run(
            [*CLI, "call", f"sip:bob@127.0.0.1:{port}", "--user", "alice", "--seconds",
             str(seconds), "--srtp", "sdes", "--capture", str(pcap), "--json", *media],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        out, err = answering.communicate(timeout=30)
    finally:
        stop(answering)
    assert answering.returncode == 0, err
    return json.loads(proc.stdout), json.loads(out), pcap


def _check_stream(rows: list, pt: int, step: int, cn_pt: int | None = None) -> tuple[int, int]:
    """Consecutive packets advance the timestamp by whole ptimes; the first speech packet after
    a DTX gap (timestamp jump) or comfort noise carries the marker bit (RFC 3551 §4.1).
    Returns (timestamp gaps, CN packets)."""
    gaps = cn = 0
    for prev, cur in itertools.pairwise(rows):
        assert cur[0] in (pt, cn_pt), cur
        assert (cur[1] - prev[1]) & 0xFFFF == 1  # no sequence gap on loopback
        delta = (cur[2] - prev[2]) & 0xFFFFFFFF
        assert delta % step == 0 and delta >= step, (prev, cur)
        if cur[0] == cn_pt:
            cn += 1
        gaps += delta > step
        if cur[0] != cn_pt and (delta > step or prev[0] == cn_pt):
            assert cur[3], f"no marker on the first packet of a talk spurt: {cur}"
    return gaps, cn


def test_opus_dtx_60ms_conversation_on_the_wire(tmp_path: Path) -> None:
    media = ("--codec", "opus", "--bitrate", "12000", "--ptime", "60", "--dtx")
    caller, answerer, pcap = _converse(tmp_path, 20, *media)
    assert caller["status"] == 200 and caller["bye_status"] == 200
    assert caller["rtp"]["codec"] == "opus" and caller["rtp"]["ptime_ms"] == 60
    assert answerer["answered"][0]["rtp"]["dtx"] is True
    rows = _rtp_rows(pcap)
    mine = rows[caller["media_port"]]
    theirs = next(v for k, v in rows.items() if k != caller["media_port"])
    for stream in (mine, theirs):
        gaps, _ = _check_stream(stream, 111, 2880)
        assert gaps >= 5  # a 20 s conversation has pauses DTX skips
        assert all(r[4] == 20 + 8 + 12 + 90 + 10 for r in stream)  # CBR 12 kb/s x 60 ms + tag
    wire = caller["wire"]
    # tshark's count of our direction is the phone's count, and DTX halved the stream
    assert sum(r[4] for r in mine) == wire["rtp_sent"]["ip_bytes"]
    assert sum(r[4] for r in theirs) == wire["rtp_received"]["ip_bytes"]
    full = 20 * 1000 / 60 * 140
    assert wire["rtp_sent"]["ip_bytes"] < 0.75 * full
    # libopus's VAD wakes now and then on background noise: single calls vary a little more
    assert abs(wire["planner_ratio"] - 1) <= 0.03, wire


def test_g711_vad_40ms_conversation_on_the_wire(tmp_path: Path) -> None:
    media = ("--codec", "pcma", "--ptime", "40", "--vad")
    caller, _answerer, pcap = _converse(tmp_path, 15, *media)
    assert caller["rtp"]["codec"] == "pcma" and caller["rtp"]["ptime_ms"] == 40
    rows = _rtp_rows(pcap)
    mine = rows[caller["media_port"]]
    gaps, cn = _check_stream(mine, 8, 320, cn_pt=13)
    assert gaps >= 3 and cn >= 3  # RFC 3389 SID packets in the pauses
    assert all(r[4] == 20 + 8 + 12 + 320 + 10 for r in mine if r[0] == 8)
    assert all(r[4] == 20 + 8 + 12 + 5 + 10 for r in mine if r[0] == 13)
    wire = caller["wire"]
    assert sum(r[4] for r in mine) == wire["rtp_sent"]["ip_bytes"]
    assert abs(wire["planner_ratio"] - 1) <= 0.01, wire


def test_optimised_call_sends_the_optimisers_choice(tmp_path: Path) -> None:
    """``--optimise --loss 1 --rtt 120`` on both phones: usage/optimise.py picks the cheapest
    setting with MOS >= 4.0 at call set-up, and the wire carries exactly that codec, ptime and
    CBR frame size, priced by the planner within 3 %."""
    media = ("--optimise", "--loss", "1", "--rtt", "120", "--min-mos", "4.0")
    caller, answerer, pcap = _converse(tmp_path, 20, *media)
    best = caller["optimised"]
    assert best["meets_target"] and best["mos"] >= 4.0 and best["dtx"]
    assert answerer["answered"][0]["optimised"] == best
    sent = caller["rtp"]
    assert (sent["codec"], sent["bitrate"], sent["ptime_ms"]) == (
        best["codec"],
        best["bitrate"],
        best["ptime_ms"],
    )
    rows = _rtp_rows(pcap)
    mine = rows[caller["media_port"]]
    assert best["codec"] == "opus"
    frame = best["bitrate"] * best["ptime_ms"] // 8000
    assert all(r[0] == 111 and r[4] == 20 + 8 + 12 + frame + 10 for r in mine)
    gaps, _ = _check_stream(mine, 111, 48 * best["ptime_ms"])
    assert gaps >= 3
    wire = caller["wire"]
    assert abs(wire["planner_ratio"] - 1) <= 0.03, wire
    both = wire["media_both_directions_bytes_per_minute"]
    assert both < 2 * best["bytes_per_minute"] * 1.1  # the optimiser's price, both directions


def test_metered_call_renegotiates_a_longer_ptime_mid_call(tmp_path: Path) -> None:
    """``--metered``: after the first RTCP report the caller's rate controller asks for 40 ms;
    the phone re-INVITEs with ``a=ptime:40``, the answerer follows the new answer, and both
    directions switch from 20 to 40 ms packets mid-call with continuous RTP timestamps."""
    media = ("--codec", "opus", "--dtx")
    port = free_port(PORTS)
    pcap = tmp_path / "call.pcapng"
    answering = subprocess.Popen(
        [*CLI, "answer", "--listen", f"127.0.0.1:{port}", "--user", "bob", "--json",
         "--timeout", "60", "--srtp", "sdes", *media],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.5)
        proc = subprocess.run(
            [*CLI, "call", f"sip:bob@127.0.0.1:{port}", "--user", "alice", "--seconds", "15",
             "--srtp", "sdes", "--capture", str(pcap), "--json", "--metered", *media],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        answering.communicate(timeout=30)
    finally:
        stop(answering)
    caller = json.loads(proc.stdout)
    assert {"reinvite": 200, "ptime_ms": 40} in caller["rtp"]["renegotiated"]
    invites = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "sip.Method == INVITE && sdp", "-T", "fields",
         "-e", "sip.CSeq.seq", "-e", "sdp.media_attr"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert len(invites) == 2 and "ptime:20" in invites[0] and "ptime:40" in invites[1]
    for stream in _rtp_rows(pcap).values():
        steps = [
            (cur[2] - prev[2]) & 0xFFFFFFFF
            for prev, cur in itertools.pairwise(stream)
            if (cur[1] - prev[1]) & 0xFFFF == 1
        ]
        ptimes = [s // 48 for s in steps if s in (960, 1920)]
        assert ptimes[:5] == [20] * 5 and ptimes[-5:] == [40] * 5  # 20 ms, then 40 ms
        assert all(s % 960 == 0 for s in steps)  # timestamps carry on across the change
        switch = ptimes.index(40)
        assert all(p == 40 for p in ptimes[switch:])  # no ping-pong back to 20 ms


def test_idle_budget_sets_the_refresh_and_keepalive_cap(tmp_path: Path) -> None:
    """``phone answer --register --idle-budget 5000``: usage/budget.py splits 5 KB/h between
    the registration refresh (the phone asks for 3600 s: tshark sees it on the REGISTER) and
    STUN keep-alives (a cap that puts their interval at >= 174 s)."""
    add_subscriber(tmp_path, "bob", "pw-bob")
    db = add_subscriber(tmp_path, "alice", "pw-alice")
    edge_port, bob_port = free_port(PORTS), free_port(PORTS)
    edge = f"127.0.0.1:{edge_port}"
    pcap = tmp_path / "idle.pcapng"
    with callward_edge(tmp_path, "--listen", f"udp:{edge}", "--subscribers", db), \
            tshark_capture(pcap, [edge_port]):  # fmt: skip
        answering = subprocess.Popen(
            [*CLI, "answer", "--listen", f"127.0.0.1:{bob_port}", "--user", "bob",
             "--password", "pw-bob", "--register", "--proxy", edge, "--domain", "callward.local",
             "--idle-budget", "5000", "--json", "--timeout", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            proc = None
            while time.monotonic() < deadline:
                proc = subprocess.run(
                    [*CLI, "call", "sip:bob@callward.local", "--user", "alice", "--password",
                     "pw-alice", "--proxy", edge, "--register", "--seconds", "0.5", "--json"],
                    capture_output=True, text=True, timeout=40, check=False,
                )  # fmt: skip
                if proc.returncode == 0:
                    break
                time.sleep(0.5)
            assert proc is not None and proc.returncode == 0, proc.stderr if proc else ""
            out, err = answering.communicate(timeout=40)
        finally:
            stop(answering)
    assert answering.returncode == 0, err
    budget = json.loads(out)["idle_budget"]
    assert budget["fits"] and budget["register_expires"] == 3600
    assert budget["keepalive"] == "stun" and budget["keepalive_min_interval_s"] >= 170
    assert budget["planned_bytes_per_hour"] <= 5000
    registers = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", 'sip.Method == "REGISTER"', "-T", "fields",
         "-e", "sip.from.user", "-e", "sip.Expires"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    asked = {tuple(line.split("\t")) for line in registers}
    assert ("bob", "3600") in asked and ("alice", "600") in asked, asked  # alice: no budget


def test_reported_loss_reoptimises_and_reinvites(tmp_path: Path) -> None:
    """``--optimise --loss 0``: set up for a clean path (Opus 13k, 60 ms, no FEC); the caller's
    uplink then loses 8 % (``--send-loss``), the answerer's RTCP reports say so, the optimiser
    runs again on the measured loss and the phone re-INVITEs with a shorter ptime and FEC;
    tshark sees the new offer and the RTP timestamps step down to the new ptime."""
    media = ("--optimise", "--loss", "0")
    port = free_port(PORTS)
    pcap = tmp_path / "call.pcapng"
    answering = subprocess.Popen(
        [*CLI, "answer", "--listen", f"127.0.0.1:{port}", "--user", "bob", "--json",
         "--timeout", "60", "--srtp", "sdes", *media],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.5)
        proc = subprocess.run(
            [*CLI, "call", f"sip:bob@127.0.0.1:{port}", "--user", "alice", "--seconds", "15",
             "--srtp", "sdes", "--capture", str(pcap), "--json", "--send-loss", "8", *media],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        answering.communicate(timeout=30)
    finally:
        stop(answering)
    caller = json.loads(proc.stdout)
    first = caller["optimised"]
    assert (first["ptime_ms"], first["fec"]) == (60, False)
    changes = caller["rtp"]["renegotiated"]
    redo = next(c for c in changes if "reoptimised_for_loss_pct" in c)
    assert redo["reoptimised_for_loss_pct"] > 3 and redo["fec"] and redo["ptime_ms"] < 60
    invites = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "sip.Method == INVITE && sdp", "-T", "fields",
         "-e", "sdp.media_attr"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert "useinbandfec=0" in invites[0] and "ptime:60" in invites[0]
    assert "useinbandfec=1" in invites[1] and f"ptime:{redo['ptime_ms']}" in invites[1]
    mine = _rtp_rows(pcap)[caller["media_port"]]
    steps = {
        (cur[2] - prev[2]) & 0xFFFFFFFF
        for prev, cur in itertools.pairwise(mine)
        if (cur[1] - prev[1]) & 0xFFFF == 1
    }
    assert {2880, 48 * redo["ptime_ms"]} <= steps  # 60 ms, then the new ptime


def test_sip_over_tcp_is_counted_with_its_acks(tmp_path: Path) -> None:
    """Over TCP the capture's SIP bytes are every segment between the two SIP ports (requests,
    responses and bare ACKs): the phone's figure equals tshark's sum of their IP lengths."""
    caller, _answerer, pcap = _converse(tmp_path, 3, "--transport", "tcp")
    tcp = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "tcp", "-T", "fields", "-e", "ip.len"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert caller["transport"] == "tcp" and len(tcp) >= 8
    assert caller["wire"]["sip_bytes"] == sum(int(n) for n in tcp)
