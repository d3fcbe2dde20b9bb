"""A baresip call, recorded by tshark, analysed by `callward analyze`.

baresip registers and calls through callward edge (digest: 401 on REGISTER, 407 on INVITE, both
retried with credentials) to a SIPp uas that echoes its RTP; tshark records the loopback ports
of all three. The verdict must be one call answered after one challenge, with media in both
directions and no problem (exit code 0).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from peers import (
    CALLWARD_CLI,
    add_subscriber,
    baresip_config,
    callward_edge,
    free_port,
    silence_wav,
    sipp_uas,
    stop,
    tshark_capture,
)

pytestmark = pytest.mark.interop


def test_baresip_call_through_the_edge_is_answered(tmp_path: Path) -> None:
    for tool in ("baresip", "sipp", "tshark"):
        if shutil.which(tool) is None:
            pytest.skip(f"why: {tool} not installed")
    edge, uas_sip, bs_sip, uas_media = (free_port((10000, 60000)) for _ in range(4))
    bs_rtp = free_port((10000, 60000)) & ~1
    db = add_subscriber(tmp_path, "alice", "Secr3t!")
    bs = baresip_config(
        tmp_path / "baresip", sip_port=bs_sip, modules=["g711.so", "aufile.so"],
        account=f"<sip:alice@127.0.0.1:{edge}>;regint=600;auth_pass=Secr3t!",
        settings=[f"audio_player aufile,{tmp_path / 'baresip' / 'out.wav'}",
                  f"audio_source aufile,{tmp_path / 'baresip' / 'in.wav'}",
                  f"rtp_ports {bs_rtp}-{bs_rtp + 1}"],
    )  # fmt: skip
    silence_wav(bs / "in.wav", 2)  # 2 s of audio, then baresip hangs up
    cap = tmp_path / "baresip.pcap"
    ports = [edge, uas_sip, bs_sip, bs_rtp, bs_rtp + 1, uas_media, uas_media + 1]
    baresip = None
    with (
        tshark_capture(cap, ports),
        sipp_uas(tmp_path, uas_sip, extra=("-m", "1", "-mi", "127.0.0.1", "-mp", str(uas_media),
                                           "-rtp_echo")) as uas,
        callward_edge(tmp_path, "--listen", f"udp:127.0.0.1:{edge}", "--subscribers", db,
                      "--route", f"service=sip:service@127.0.0.1:{uas_sip}"),
    ):  # fmt: skip
        try:
            baresip = subprocess.Popen(
                ["baresip", "-f", str(bs), "-e", f"/dial sip:service@127.0.0.1:{edge}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            assert uas.wait(40) == 0  # the one call was answered, ACKed and hung up
            time.sleep(0.5)
        finally:
            if baresip is not None:
                stop(baresip)
    res = subprocess.run([*CALLWARD_CLI, "analyze", "--json", str(cap)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr
    rep = json.loads(res.stdout)
    (call,) = rep["calls"]
    assert (call["outcome"], call["final_status"], call["challenges"]) == ("answered", 200, 1)
    assert [a["status"] for a in call["attempts"]] == [407, 200]
    assert call["problems"] == [] and len(call["streams"]) == 2
