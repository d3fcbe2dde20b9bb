"""Path MTU (RFC 3261 §18.1.1): a request too large for a datagram goes over TCP (Via says
TCP), a small one stays on UDP, and no UDP datagram above the configured MTU ever leaves."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from callward.sip.message import Request, make_response
from callward.sip.parser import parse_message
from callward.ua.phone import Phone
from callward.ua.sdp_offer import offer_sdp

pytestmark = pytest.mark.timeout(60)


class _Uas:
    """A raw UAS on one port number over both UDP and TCP: it answers every INVITE 486."""

    def __init__(self) -> None:
        self.udp: list[bytes] = []
        self.tcp: list[Request] = []

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        owner = self

        class Udp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                owner.udp.append(data)

        self.dgram, _ = await loop.create_datagram_endpoint(
            Udp, local_addr=("127.0.0.1", port), family=socket.AF_INET
        )
        return int(port)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        msg = parse_message(head + await reader.readexactly(length))
        assert isinstance(msg, Request)
        self.tcp.append(msg)
        writer.write(bytes(make_response(msg, 486, to_tag="uas")))
        await writer.drain()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1.0)  # the ACK (for a non-2xx: the transaction's own) arrives
        writer.close()

    def close(self) -> None:
        self.server.close()
        self.dgram.close()


async def test_large_request_moves_to_tcp_small_stays_on_udp() -> None:
    uas = _Uas()
    port = await uas.start()
    alice = await Phone.start("alice")
    alice.mtu = 900
    sent: list[tuple[str, int]] = []
    alice.transport.add_tap(lambda ev: sent.append((ev.transport, len(ev.data))))
    try:
        big = offer_sdp("127.0.0.1", 40000, 1) + b"a=x-pad:" + b"p" * 800 + b"\r\n"
        call = await alice.call(f"sip:bob@127.0.0.1:{port}", sdp=big)
        assert call.status == 486
        (invite,) = uas.tcp
        assert invite.top_via.transport.upper() == "TCP" and invite.body == big
        assert not uas.udp, "nothing went over UDP"
        assert all(n + 48 <= 900 for t, n in sent if t == "udp")
        alice.dial(f"sip:bob@127.0.0.1:{port}")
        await asyncio.sleep(0.3)
        assert uas.udp and uas.udp[0].startswith(b"INVITE "), "a small INVITE stays on UDP"
        uas.udp.clear()
    finally:
        await alice.close()
        uas.close()


async def test_no_datagram_above_the_mtu_leaves() -> None:
    """bob's 200 OK with SDP does not fit a 300-byte MTU: it is not sent (counted), never
    fragmented."""
    bob = await Phone.start("bob", auto_answer=True)
    bob.mtu = 300
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.settimeout(0.2)
    try:
        port = raw.getsockname()[1]
        sdp = offer_sdp("127.0.0.1", 40000, 1)
        invite = (
            f"INVITE sip:bob@127.0.0.1:{bob.local_addr[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKmtu1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: mtu-1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
        ).encode() + sdp
        raw.sendto(invite, bob.local_addr)
        got: list[bytes] = []
        for _ in range(15):
            try:
                got.append(raw.recvfrom(65535)[0])
            except TimeoutError:
                await asyncio.sleep(0.1)
        assert got, "the small 100/180 responses still arrive"
        assert all(len(d) + 28 <= 300 for d in got), [len(d) for d in got]
        assert bob.mtu_refused >= 1
    finally:
        raw.close()
        await bob.close()
