"""Host names outside the configured upstreams (a route or Contact naming a host) are resolved
off the event loop: the UDP transport refuses to ``sendto`` a name (which would call the
resolver inside the loop) and resolves it with ``loop.getaddrinfo`` instead. A resolver that
takes 0.6 s for ``slow.test`` delays that call only: the loop keeps ticking, and the INVITE
reaches the callee. Ports 27080-27081 (safe15's block)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from callward.config import CallwardConfig, EdgeConfig
from callward.edge.app import EdgeNode
from callward.sip import Request, parse_message

EDGE, UAS = 27080, 27081


async def test_a_slow_name_does_not_block_the_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "slow.test":
            time.sleep(0.6)  # in the resolver thread, never in the loop
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    node = EdgeNode(
        CallwardConfig(
            edge=EdgeConfig(listen=[f"udp:127.0.0.1:{EDGE}"], auth=False,
                            routes={"bob": f"sip:bob@slow.test:{UAS}"})
        )
    )  # fmt: skip
    await node.start()
    loop = asyncio.get_running_loop()
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    caller.setblocking(False)
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.bind(("127.0.0.1", UAS))
    uas.setblocking(False)
    gaps: list[float] = []

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.02)
            now = loop.time()
            gaps.append(now - last)
            last = now

    tick = asyncio.ensure_future(ticker())
    try:
        port = caller.getsockname()[1]
        invite = (
            "INVITE sip:bob@callward.local SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@callward.local>;tag=a\r\n"
            "To: <sip:bob@callward.local>\r\nCall-ID: dns-1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:alice@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
        )
        await loop.sock_sendto(caller, invite.encode(), ("127.0.0.1", EDGE))
        async with asyncio.timeout(5):
            msg = parse_message(await loop.sock_recv(uas, 65536))
        assert isinstance(msg, Request) and msg.method == "INVITE" and msg.call_id == "dns-1"
        assert max(gaps) < 0.3, max(gaps)  # the 0.6 s resolution never stalled the loop
    finally:
        tick.cancel()
        caller.close()
        uas.close()
        await node.stop()
