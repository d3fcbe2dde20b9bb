"""Hostile but well-framed SIP at a live phone: every message parses strictly (so it reaches the
transaction layer and the UA core), yet headers are mutated. Nothing may escape to the event
loop's exception handler and the phone must still answer afterwards."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from callward.sip import parse_message
from callward.ua.phone import Phone

METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "X"]


def message(
    method: str, status: int | None, to_tag: str, branch: str, cseq: int, cseq_method: str
) -> bytes:
    start = f"SIP/2.0 {status} Fuzz" if status else f"{method} sip:bob@127.0.0.1 SIP/2.0"
    if not status:
        cseq_method = method  # §8.1.1.5, else the strict parser stops it before the core
    tag = f";tag={to_tag}" if to_tag else ""
    body = b"v=0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 127.0.0.1\r\n" if method == "INVITE" else b""
    head = (
        f"{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch={branch}\r\nMax-Forwards: 70\r\n"
        f"From: <sip:f@127.0.0.1>;tag=f\r\nTo: <sip:bob@127.0.0.1>{tag}\r\nCall-ID: fuzz-1\r\n"
        f"CSeq: {cseq} {cseq_method}\r\nContact: <sip:f@127.0.0.1:9>\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


msgs = st.builds(
    message,
    st.sampled_from(METHODS),
    st.one_of(st.none(), st.sampled_from([100, 180, 200, 202, 401, 407, 481, 487, 500, 699])),
    st.sampled_from(["", "x", "f"]),
    st.sampled_from(["z9hG4bK-a", "z9hG4bK-b", "rfc2543", "z9hG4bK"]),
    st.integers(0, 2**31 - 1),
    st.sampled_from(METHODS),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(msgs, min_size=1, max_size=8), st.booleans())
def test_phone_survives_mutated_dialogs(batch: list[bytes], auto: bool) -> None:
    async def run() -> None:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _l, c: errors.append(c))
        bob = await Phone.start("bob", auto_answer=auto)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        try:
            for data in batch:
                parse_message(data)  # well-formed: it reaches the core, not the 400 path
                sock.sendto(data, bob.local_addr)
            await asyncio.sleep(0.05)
            probe = message("OPTIONS", None, "", "z9hG4bK-probe", 1, "OPTIONS")
            probe = probe.replace(b"127.0.0.1:9", f"127.0.0.1:{sock.getsockname()[1]}".encode())
            probe = probe.replace(b"fuzz-1", b"probe-1")
            sock.sendto(probe, bob.local_addr)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(5):
                while True:
                    reply = await loop.sock_recv(sock, 65535)
                    if b"probe-1" in reply:
                        break
            assert reply.startswith(b"SIP/2.0 200")
        finally:
            sock.close()
            for task in list(bob._tasks):
                task.cancel()
            await bob.transport.close()
            if bob._sender is not None:
                bob._sender.cancel()
        assert not errors, errors

    asyncio.run(run())
