"""`callward serve` as a user runs it: one process answers SIP on the edge, ng on the relay
and HTTP on the dashboard, relays media for an ng-driven call whose CDR (with the relay's
per-leg packets) lands in the store, and stops cleanly on SIGTERM; bad config exits 2."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from callward.cli import app
from callward.ng import NgCommand, NgRequest
from callward.ng.transport import NgConnection
from callward.records.rows import CdrQuery
from callward.records.service import open_records
from callward.rtp.packet import RtpPacket
from callward.sdp import parse_sdp
from peers import free_port

pytestmark = pytest.mark.timeout(90)


def sdp(port: int) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )


def test_bad_config_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    bad = tmp_path / "c.yaml"
    bad.write_text("media:\n  rtp_port_min: 30000\n  rtp_port_max: 30001\n")
    res = CliRunner().invoke(app, ["serve", "--config", str(bad)])
    assert res.exit_code == 2 and "rtp_port_max" in res.output


def test_serve_runs_edge_relay_web_and_writes_cdrs(tmp_path: Path) -> None:
    sip, ng = free_port(), free_port()
    cfg = tmp_path / "callward.yaml"
    cfg.write_text(
        f"storage: {{data_dir: {tmp_path}}}\n"
        f"edge: {{listen: ['udp:127.0.0.1:{sip}'], auth: false}}\n"
        f"media: {{ng_listen: '127.0.0.1:{ng}', rtp_port_min: 42000, rtp_port_max: 42999}}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "callward.cli",
        "serve",
        "--config",
        str(cfg),
        "--json",
        "--web-port",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        bound = {}
        while bound.get("event") != "serving":  # structlog JSON lines share stdout
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            bound = json.loads(line)
        assert bound["ng"] == f"127.0.0.1:{ng}"
        # web
        with urllib.request.urlopen(bound["web"], timeout=10) as resp:
            assert resp.status == 200
        # SIP: the edge answers an OPTIONS
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        port = s.getsockname()[1]
        s.sendto(
            (f"OPTIONS sip:127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKs1\r\n"
             f"From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n"
             "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", sip),
        )  # fmt: skip
        assert s.recv(4096).startswith(b"SIP/2.0 ")
        s.close()

        async def drive() -> None:
            a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
            for x in (a, b):
                x.bind(("127.0.0.1", 0))
                x.setblocking(False)
            conn = await NgConnection.open(("127.0.0.1", ng))
            loop = asyncio.get_running_loop()
            try:
                r = await conn.request(NgRequest(NgCommand.OFFER, call_id="serve-1", from_tag="A",
                                                 sdp=sdp(a.getsockname()[1])))  # fmt: skip
                port_b = parse_sdp(r.sdp).media[0].port
                r = await conn.request(NgRequest(NgCommand.ANSWER, call_id="serve-1", from_tag="A",
                                                 to_tag="B", sdp=sdp(b.getsockname()[1])))  # fmt: skip
                port_a = parse_sdp(r.sdp).media[0].port
                for seq in range(30):
                    a.sendto(
                        bytes(RtpPacket(0, seq, seq * 160, 1, b"\0" * 160)), ("127.0.0.1", port_a)
                    )
                for seq in range(12):
                    b.sendto(
                        bytes(RtpPacket(0, seq, seq * 160, 2, b"\0" * 160)), ("127.0.0.1", port_b)
                    )
                for _ in range(30):
                    await asyncio.wait_for(loop.sock_recv(b, 2048), 2)
                for _ in range(12):
                    await asyncio.wait_for(loop.sock_recv(a, 2048), 2)
                await conn.request(NgRequest(NgCommand.DELETE, call_id="serve-1", from_tag="A"))
            finally:
                conn.close()
                a.close()
                b.close()

        asyncio.run(drive())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # in serve the edge owns the call events; the relay contributed only media stats, which
    # the store holds as a call flagged missing-start once flushed at shutdown
    rec = open_records(tmp_path)
    try:
        cdrs = {c.call_id: c for c in rec.store.query(CdrQuery())}
        legs = {lg.leg: lg for lg in cdrs["serve-1"].legs}
        assert legs["a"].packets == 30 and legs["b"].packets == 12
    finally:
        rec.close()
