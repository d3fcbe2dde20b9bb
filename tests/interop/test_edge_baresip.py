"""baresip registers with digest through callward edge and calls a SIPp uas through it.

Checked: baresip's REGISTER is challenged (401) and then accepted; its INVITE is challenged
(407) and then forwarded; SIPp's uas (``-m 1``) completes exactly one call (exit status 0); the
edge's /metrics show the REGISTER/INVITE pairs and one registration while baresip is up."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from peers import (
    add_subscriber,
    baresip_config,
    callward_edge,
    free_port,
    metric,
    silence_wav,
    sipp_uas,
    stop,
)

pytestmark = pytest.mark.interop


def test_baresip_registers_with_digest_and_calls_through_edge(tmp_path: Path) -> None:
    for tool in ("baresip", "sipp"):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    edge_port, uas_port, bs_port, metrics = (free_port((10000, 60000)) for _ in range(4))
    db = add_subscriber(tmp_path, "alice", "Secr3t!")
    bs = baresip_config(
        tmp_path / "baresip",
        sip_port=bs_port,
        modules=["g711.so", "aufile.so"],
        account=f"<sip:alice@127.0.0.1:{edge_port}>;regint=600;auth_pass=Secr3t!",
        settings=[f"audio_player aufile,{tmp_path / 'baresip' / 'out.wav'}",
                  f"audio_source aufile,{tmp_path / 'baresip' / 'in.wav'}"],
    )  # fmt: skip
    silence_wav(bs / "in.wav", 2)  # 2 s of silence, then baresip hangs up
    baresip = None
    with (
        sipp_uas(tmp_path, uas_port, extra=("-m", "1")) as uas,
        callward_edge(
            tmp_path,
            "--listen",
            f"udp:127.0.0.1:{edge_port}",
            "--subscribers",
            db,
            "--route",
            f"service=sip:service@127.0.0.1:{uas_port}",
            "--metrics",
            f"127.0.0.1:{metrics}",
        ),
    ):
        try:
            baresip = subprocess.Popen(
                ["baresip", "-f", str(bs), "-e", f"/dial sip:service@127.0.0.1:{edge_port}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            assert uas.wait(30) == 0  # the one call was answered, ACKed and hung up
            text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
            assert metric(text, 'callward_edge_requests_total{method="REGISTER"}') >= 2
            # challenged, then authorized (a UDP retransmission on a slow machine may add one)
            assert metric(text, 'callward_edge_requests_total{method="INVITE"}') >= 2
            # the 407 is a challenge, counted apart from failed authentication (none here)
            assert metric(text, 'callward_edge_rejected_total{reason="challenge"}') >= 1
            assert metric(text, 'callward_edge_rejected_total{reason="auth"}') == 0
            assert metric(text, "callward_edge_registrations") == 1
        finally:
            if baresip is not None:
                stop(baresip)
