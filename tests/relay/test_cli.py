"""`callward relay` as a user runs it: a real subprocess relaying SRTP to a trusted RTP leg,
stopping on RTP timeout with per-leg stats; bad input exits 2 with one line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from callward.cli import app
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpContext, SrtpKeying

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["relay", "--a", "nonsense"], "HOST:PORT"),
        (["relay"], "trusted"),  # two plain legs, neither trusted
        (["relay", "--a-trusted", "--b-trusted", "--b-crypto-rx", "F8 inline:AAAA"], "suite"),
        (["relay", "--a-trusted", "--b-trusted", "--dscp", "99"], "dscp"),
        (
            ["relay", "--a-trusted", "--b-trusted", "--a", "127.0.0.1:30001", "--a-no-rtcp-mux"],
            "even",
        ),
    ],
)
def test_bad_input_exit_2(args: list[str], needle: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle.lower() in lines[0].lower()


def test_relay_subprocess_srtp_to_trusted_rtp() -> None:
    peer_key = SrtpKeying.generate()
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    pbx.settimeout(5)
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(5)
    cmd = [sys.executable, "-m", "callward.cli", "relay", "--json", "--timeout", "1",
           "--a-crypto-rx", f"AES_CM_128_HMAC_SHA1_80 {peer_key.inline}",
           "--b-trusted", "--b-remote", f"127.0.0.1:{pbx.getsockname()[1]}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        host, port = started["a"].rsplit(":", 1)
        suite, inline = started["a_crypto_tx"].split(" ")
        back_key = SrtpKeying.from_sdes(suite, inline)
        tx = SrtpContext(peer_key, inbound=False)
        for seq in range(10):
            phone.sendto(tx.protect(bytes(RtpPacket(0, seq, seq * 160, 5, b"\x7f" * 160))),
                         (host, int(port)))  # fmt: skip
            time.sleep(0.01)
        got = [parse_rtp(pbx.recvfrom(2048)[0]) for _ in range(10)]
        assert [p.sequence_number for p in got] == list(range(10))
        # and the way back is SRTP with the key the relay announced
        bhost, bport = started["b"].rsplit(":", 1)
        pbx.sendto(bytes(RtpPacket(8, 1, 160, 6, b"\xd5" * 160)), (bhost, int(bport)))
        wire = phone.recvfrom(2048)[0]
        assert parse_rtp(SrtpContext(back_key, inbound=True).unprotect(wire)).payload_type == 8
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        pbx.close()
        phone.close()
    assert proc.returncode == 0, err
    ended = json.loads(out.strip().splitlines()[-1])
    assert ended["reason"] == "rtp-timeout"
    legs = {x["leg"]: x for x in ended["legs"]}
    assert legs["a"]["packets"] == 10 and legs["b"]["packets"] == 1
    assert "127.0.0.1" not in json.dumps(ended["legs"])  # no peer addresses in stats
