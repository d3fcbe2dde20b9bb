"""baresip registers with digest through callward edge and calls a SIPp uas through it.

Checked: baresip's REGISTER is challenged (401) and then accepted; its INVITE is challenged
(407) and then forwarded; SIPp's uas (``-m 1``) completes exactly one call (exit status 0); the
edge's /metrics show the REGISTER/INVITE pairs and one registration while baresip is up."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.interop


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
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_baresip_registers_with_digest_and_calls_through_edge(tmp_path: Path) -> None:
    for tool in ("baresip", "sipp"):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    edge_port, uas_port, bs_port, metrics = (free_port() for _ in range(4))
    cli = [sys.executable, "-c", "from callward.cli import main; main()", "edge"]
    db = f"sqlite:{tmp_path / 'subs.sqlite'}"
    subprocess.run(
        [*cli, "add-subscriber", "alice", "--password", "Secr3t!", "--subscribers", db],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    bs = tmp_path / "baresip"
    bs.mkdir()
    with wave.open(str(bs / "in.wav"), "wb") as w:  # 2 s of silence, then baresip hangs up
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 16000)
    (bs / "config").write_text(
        f"sip_listen 127.0.0.1:{bs_port}\nmodule_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule aufile.so\nmodule_app account.so\nmodule_app menu.so\n"
        f"audio_player aufile,{bs / 'out.wav'}\naudio_source aufile,{bs / 'in.wav'}\n"
    )
    (bs / "accounts").write_text(
        f"<sip:alice@127.0.0.1:{edge_port}>;regint=600;auth_pass=Secr3t!\n"
    )
    (bs / "contacts").write_text("")
    uas = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-m", "1", "-nostdin"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    log = tmp_path / "edge.log"
    with log.open("w") as fh:
        edge = subprocess.Popen(
            [*cli, "--listen", f"udp:127.0.0.1:{edge_port}", "--subscribers", db,
             "--route", f"service=sip:service@127.0.0.1:{uas_port}",
             "--metrics", f"127.0.0.1:{metrics}"],
            stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    baresip = None
    try:
        deadline = time.monotonic() + 20
        while "listening on" not in log.read_text():
            assert edge.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        baresip = subprocess.Popen(
            ["baresip", "-f", str(bs), "-e", f"/dial sip:service@127.0.0.1:{edge_port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert uas.wait(30) == 0  # the one call was answered, ACKed and hung up
        text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        assert _metric(text, 'callward_edge_requests_total{method="REGISTER"}') >= 2
        # challenged, then authorized (a UDP retransmission on a slow machine may add one)
        assert _metric(text, 'callward_edge_requests_total{method="INVITE"}') >= 2
        assert _metric(text, 'callward_edge_rejected_total{reason="auth"}') == 1  # the 407
        assert _metric(text, "callward_edge_registrations") == 1
    finally:
        if baresip is not None:
            _stop(baresip)
        _stop(edge)
        _stop(uas)
