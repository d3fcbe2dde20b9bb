"""A real loopback capture written by dumpcap (pcapng, kernel timestamps), not by us.

RTP is sent over 127.0.0.1 with deliberate gaps, a duplicate and a reordered pair; dumpcap
records it; our analyser and tshark read the same file and must agree field by field.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from callward.quality.analysis import collect, stream_reports
from callward.quality.synth import rtp_header
from peers import tshark_rtp_streams

pytestmark = pytest.mark.interop


def _bind_in(sock: socket.socket, base: int) -> int:
    """Bind to an even port in [base + offset, base + 1000): the offset (from our PID) keeps
    engineers running this test at the same time apart."""
    for cand in range(base + os.getpid() % 500 * 2, base + 1000, 2):
        try:
            sock.bind(("127.0.0.1", cand))
            break
        except OSError:
            continue
    return int(sock.getsockname()[1])


def test_live_loopback_capture_matches_tshark(tmp_path: Path) -> None:
    if shutil.which("dumpcap") is None or shutil.which("tshark") is None:
        pytest.skip("why: dumpcap/tshark not installed")
    # A port in a range no Wireshark dissector claims, so tshark's RTP heuristic sees it.
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dport = _bind_in(rx, 41000)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _bind_in(tx, 42000)
    out = tmp_path / "live.pcapng"
    cap = subprocess.Popen(
        ["dumpcap", "-q", "-i", "lo", "-f", f"udp port {dport}", "-w", str(out), "-a", "duration:20"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # let dumpcap open the interface
        if cap.poll() is not None:
            pytest.skip(f"why: dumpcap cannot capture on lo: {cap.stderr.read()[:200]!r}")
        plan = [i for i in range(200) if i not in (30, 31, 32, 77)]
        plan[100], plan[101] = plan[101], plan[100]  # reordered pair
        plan.insert(150, plan[149])  # duplicate
        for i in plan:
            tx.sendto(rtp_header(0, 5000 + i, i * 160, 0xCA11) + bytes(160), ("127.0.0.1", dport))
            time.sleep(0.02 if i % 50 else 0.045)
        time.sleep(1.0)
    finally:
        cap.terminate()
        cap.wait(timeout=15)
        tx.close()
        rx.close()
    ref = tshark_rtp_streams(out, "--enable-heuristic", "rtp_udp")
    got = {
        (s.src, s.sport, s.dst, s.dport, s.ssrc): (
            s.stats.packets, s.stats.lost, s.stats.max_delta, s.stats.mean_jitter,
            s.stats.max_jitter,
        )
        for s in stream_reports(collect(out))
    }  # fmt: skip
    assert set(got) == set(ref) and len(ref) == 1
    for k, r in ref.items():
        g = got[k]
        assert g[:2] == r[:2] == (len(plan), 4 - 1)  # 4 lost, 1 duplicate
        assert g[2] == pytest.approx(r[2], abs=0.01)
        assert g[3] == pytest.approx(r[3], abs=0.01)
        assert g[4] == pytest.approx(r[4], abs=0.01)
