"""Kamailio 5.6 as the second upstream of callward edge: the first upstream is dead, the edge
fails over to Kamailio (after Timer B), blacklists the dead one, and every SIPp call completes
(SIPp uac → edge → Kamailio → SIPp uas). The failover count is read from /metrics."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.interop

KAM_CFG = Path(__file__).resolve().parents[2] / "benchmarks" / "kamailio" / "proxy.cfg"


def free_port() -> int:
    for _ in range(500):
        port = random.randint(10000, 60000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            try:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def kamailio(tmp_path: Path, port: int, uas: int) -> Iterator[int]:
    pidfile = tmp_path / "kamailio.pid"
    res = subprocess.run(
        ["kamailio", "-f", str(KAM_CFG), "-P", str(pidfile), "-m", "64", "-M", "8",
         "-l", f"udp:127.0.0.1:{port}", "-A", f'UAS_ADDR="sip:127.0.0.1:{uas}"',
         "-w", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-500:]
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "kamailio wrote no pidfile"
        time.sleep(0.1)
    pid = int(pidfile.read_text().strip())
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


def test_failover_to_kamailio_upstream(tmp_path: Path) -> None:
    for tool in ("kamailio", "sipp"):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    uas, kam, dead, edge_port, metrics = (free_port() for _ in range(5))
    uas_proc = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas), "-nostdin"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(
        "edge:\n"
        f"  listen: ['udp:127.0.0.1:{edge_port}']\n"
        "  auth: false\n"
        "  t1: 0.05\n"
        "  blacklist_seconds: 120\n"
        f"  upstreams: ['sip:127.0.0.1:{dead}', 'sip:127.0.0.1:{kam}']\n"
        f"  metrics_listen: '127.0.0.1:{metrics}'\n"
    )
    log = tmp_path / "edge.log"
    try:
        with kamailio(tmp_path, kam, uas):
            with log.open("w") as fh:
                edge = subprocess.Popen(
                    [sys.executable, "-c", "from callward.cli import main; main()", "edge",
                     "--config", str(cfg)],
                    stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path,
                )  # fmt: skip
            try:
                deadline = time.monotonic() + 20
                while "listening on" not in log.read_text():
                    assert edge.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
                # one call first (waits 64*T1 on the dead upstream), then 20 more
                for calls, rate in ((1, 1), (20, 10)):
                    res = subprocess.run(
                        ["sipp", "-sn", "uac", f"127.0.0.1:{edge_port}", "-i", "127.0.0.1",
                         "-p", str(free_port()), "-s", "service", "-r", str(rate),
                         "-m", str(calls), "-nostdin", "-timeout", "60s"],
                        cwd=tmp_path, capture_output=True, text=True, timeout=90,
                    )  # fmt: skip
                    assert res.returncode == 0, res.stderr[:3000]
                text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
                failovers = [
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith("callward_edge_failovers_total ")
                ]
                # only the first call waited for the dead upstream; then it was blacklisted
                assert failovers == [1.0]
                assert "127.0.0.1" not in text  # no addresses in metric labels
            finally:
                _stop(edge)
    finally:
        _stop(uas_proc)
