"""The reverse of test_relay_kamailio: callward's ng client (the one the edge uses) drives
the real rtpengine (Debian rtpengine-daemon, userspace forwarding): ping, offer, answer with
the same flags, RTP both ways through the ports it advertised, query and delete with its
statistics, and an error reply for an unknown call."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from callward.ng import NgCommand, NgFlags, NgRequest
from callward.ng.transport import NgConnection
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.sdp import parse_sdp
from peers import free_port, stop

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


def sdp(port: int) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


async def test_ng_client_drives_real_rtpengine(tmp_path: Path) -> None:
    if shutil.which("rtpengine") is None:
        pytest.skip("why: rtpengine-daemon not installed")
    ng = free_port()
    lo = 45000 + (ng % 40) * 20
    log = (tmp_path / "rtpengine.log").open("w")
    proc = subprocess.Popen(
        ["rtpengine", "--foreground", "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng}",
         "--table=-1", f"--port-min={lo}", f"--port-max={lo + 19}", "--log-stderr",
         "--log-level=5", "--no-fallback", f"--pidfile={tmp_path / 'rtpe.pid'}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    conn = None
    try:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        conn = await NgConnection.open(("127.0.0.1", ng), timeout_s=0.3, attempts=10)
        pong = await conn.request(NgRequest(NgCommand.PING))  # retries while it starts up
        assert pong.body == {"result": "pong"}
        flags = NgFlags(replace_origin=True, replace_session_connection=True, ice="remove")
        offer = await conn.request(NgRequest(NgCommand.OFFER, call_id="rtpe-1", from_tag="A",
                                             sdp=sdp(a.getsockname()[1]), flags=flags))  # fmt: skip
        assert offer.ok, offer.body
        port_b = parse_sdp(offer.sdp).media[0].port
        answer = await conn.request(NgRequest(NgCommand.ANSWER, call_id="rtpe-1", from_tag="A",
                                              to_tag="B", sdp=sdp(b.getsockname()[1]), flags=flags))  # fmt: skip
        assert answer.ok, answer.body
        port_a = parse_sdp(answer.sdp).media[0].port
        assert lo <= port_a < lo + 20 and lo <= port_b < lo + 20
        for seq in range(20):
            a.sendto(
                bytes(RtpPacket(0, seq, seq * 160, 0x11, b"\xd5" * 160)), ("127.0.0.1", port_a)
            )
            b.sendto(
                bytes(RtpPacket(0, seq, seq * 160, 0x22, b"\xd5" * 160)), ("127.0.0.1", port_b)
            )
            await asyncio.sleep(0.02)
        got_b = [parse_rtp(await asyncio.wait_for(loop.sock_recv(b, 2048), 2)) for _ in range(20)]
        got_a = [parse_rtp(await asyncio.wait_for(loop.sock_recv(a, 2048), 2)) for _ in range(20)]
        assert {p.ssrc for p in got_b} == {0x11} and {p.ssrc for p in got_a} == {0x22}
        q = await conn.request(NgRequest(NgCommand.QUERY, call_id="rtpe-1"))
        assert q.ok and set(q.body["tags"]) == {"A", "B"}  # type: ignore[arg-type]
        totals = q.body["totals"]["RTP"]  # type: ignore[index]
        assert totals["packets"] == 40  # type: ignore[index]
        d = await conn.request(NgRequest(NgCommand.DELETE, call_id="rtpe-1", from_tag="A"))
        assert d.ok
        gone = await conn.request(NgRequest(NgCommand.QUERY, call_id="never-offered"))
        assert not gone.ok and gone.error
    finally:
        if conn is not None:
            conn.close()
        a.close()
        b.close()
        stop(proc)
        log.close()
