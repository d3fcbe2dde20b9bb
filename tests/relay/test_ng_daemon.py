"""The ng relay on real loopback sockets: callward's own ng client (``NgConnection``) drives
offer/answer/query/delete; two UDP 'phones' exchange SRTP and RTP through it; the relay's
counters equal what the phones sent; `callward relay --ng` as a user runs it writes the CDR."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callward.events import InProcessBus, MediaStats
from callward.ng import NgCommand, NgFlags, NgRequest
from callward.ng.transport import NgConnection
from callward.records.rows import CdrQuery
from callward.records.service import open_records
from callward.relay.leg import read_dscp
from callward.relay.ng_daemon import NgDaemon
from callward.relay.ng_server import NgSettings
from callward.rtp.packet import RtpPacket, parse_rtp
from callward.rtp.srtp import SrtpContext, SrtpKeying
from callward.sdp import media_crypto, parse_sdp
from peers import free_port

pytestmark = pytest.mark.timeout(60)


def sdp(port: int, proto: str = "RTP/AVP", extra: str = "") -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{extra}a=sendrecv\r\n"
    )


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def recv(s: socket.socket, timeout: float = 2.0) -> bytes:
    loop = asyncio.get_running_loop()
    return (await asyncio.wait_for(loop.sock_recvfrom(s, 2048), timeout))[0]


async def test_srtp_phone_to_plain_pbx_through_the_daemon() -> None:
    bus = InProcessBus()
    seen: list[object] = []
    bus.subscribe(seen.append)
    daemon = NgDaemon(
        NgSettings(), control=("127.0.0.1", 0), port_range=(40000, 40999), dscp=34, bus=bus
    )
    await daemon.start()
    phone, pbx = udp(), udp()
    conn = await NgConnection.open(daemon.bound, timeout_s=0.5)
    try:
        assert (await conn.request(NgRequest(NgCommand.PING))).body == {"result": "pong"}
        phone_key = SrtpKeying.generate()
        offer = sdp(phone.getsockname()[1], "RTP/SAVP",
                    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {phone_key.inline}\r\na=rtcp-mux\r\n")  # fmt: skip
        flags = NgFlags(replace_origin=True, transport_protocol="RTP/AVP", ice="remove")
        r = await conn.request(
            NgRequest(NgCommand.OFFER, call_id="c1", from_tag="A", sdp=offer, flags=flags)
        )
        to_pbx = parse_sdp(r.sdp).media[0]
        assert r.ok and to_pbx.proto == "RTP/AVP" and 40000 <= to_pbx.port <= 40999
        r = await conn.request(NgRequest(NgCommand.ANSWER, call_id="c1", from_tag="A", to_tag="B",
                                         sdp=sdp(pbx.getsockname()[1])))  # fmt: skip
        to_phone = parse_sdp(r.sdp).media[0]
        (crypto,) = media_crypto(to_phone)
        relay_key = SrtpKeying.from_sdes(crypto.suite, str(crypto.keys[0]))
        assert daemon.pool is not None and read_dscp(daemon.pool.sockets[to_phone.port]) == 34
        tx = SrtpContext(phone_key, inbound=False)
        for seq in range(20):
            phone.sendto(tx.protect(bytes(RtpPacket(0, seq, seq * 160, 7, b"\xd5" * 160))),
                         ("127.0.0.1", to_phone.port))  # fmt: skip
        got = [parse_rtp(await recv(pbx)) for _ in range(20)]
        assert [p.sequence_number for p in got] == list(range(20))
        rx = SrtpContext(relay_key, inbound=True)
        for seq in range(5):
            pbx.sendto(
                bytes(RtpPacket(0, seq, seq * 160, 9, b"\xff" * 160)), ("127.0.0.1", to_pbx.port)
            )
            assert parse_rtp(rx.unprotect(await recv(phone))).ssrc == 9
        q = await conn.request(NgRequest(NgCommand.QUERY, call_id="c1"))
        assert q.body["tags"]["A"]["stats"]["packets"] == 20  # type: ignore[index]
        d = await conn.request(NgRequest(NgCommand.DELETE, call_id="c1", from_tag="A"))
        assert d.body["tags"]["B"]["stats"]["packets"] == 5  # type: ignore[index]
        assert d.body["tags"]["B"]["stats"]["packets out"] == 20  # type: ignore[index]
        assert (await conn.request(NgRequest(NgCommand.LIST))).body["calls"] == []
        await asyncio.sleep(0.05)
        stats = {e.leg: e for e in seen if isinstance(e, MediaStats)}
        assert stats["a"].packets == 20 and stats["b"].packets == 5 and stats["a"].lost == 0
        assert not daemon.pool.sockets  # every port freed
    finally:
        conn.close()
        phone.close()
        pbx.close()
        await daemon.stop()


def test_cli_daemon_writes_the_cdr(tmp_path: Path) -> None:
    ng = free_port()
    env = {**os.environ, "CALLWARD_STORAGE__DATA_DIR": str(tmp_path),
           "CALLWARD_MEDIA__RTP_PORT_MIN": "41000", "CALLWARD_MEDIA__RTP_PORT_MAX": "41999"}  # fmt: skip
    cmd = [sys.executable, "-m", "callward.cli", "relay", "--ng", f"127.0.0.1:{ng}", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["ng"] == f"127.0.0.1:{ng}"

        async def drive() -> None:
            a, b = udp(), udp()
            conn = await NgConnection.open(("127.0.0.1", ng))
            try:
                r = await conn.request(NgRequest(NgCommand.OFFER, call_id="cli-1", from_tag="A",
                                                 sdp=sdp(a.getsockname()[1])))  # fmt: skip
                port_b = parse_sdp(r.sdp).media[0].port
                r = await conn.request(NgRequest(NgCommand.ANSWER, call_id="cli-1", from_tag="A",
                                                 to_tag="B", sdp=sdp(b.getsockname()[1])))  # fmt: skip
                port_a = parse_sdp(r.sdp).media[0].port
                for seq in range(10):
                    a.sendto(
                        bytes(RtpPacket(0, seq, seq * 160, 1, b"\0" * 160)), ("127.0.0.1", port_a)
                    )
                    b.sendto(
                        bytes(RtpPacket(0, seq, seq * 160, 2, b"\0" * 160)), ("127.0.0.1", port_b)
                    )
                for _ in range(10):
                    await recv(a)
                    await recv(b)
                await conn.request(NgRequest(NgCommand.DELETE, call_id="cli-1", from_tag="A"))
            finally:
                conn.close()
                a.close()
                b.close()

        asyncio.run(drive())
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    rec = open_records(tmp_path)
    try:
        (cdr,) = rec.store.query(CdrQuery())
        legs = {lg.leg: lg for lg in cdr.legs}
        assert cdr.call_id == "cli-1" and legs["a"].packets == 10 and legs["b"].packets == 10
    finally:
        rec.close()
