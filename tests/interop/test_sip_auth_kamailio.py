"""Our digest client (callward.sip.auth.authorize) and client transactions against Kamailio's
auth module as the verifier: MD5 and SHA-256 (RFC 8760) with qop=auth.

qop=auth-int is not exercised here: Kamailio 5.6's ``auth_check_response`` hands an
uninitialised entity hash to ``calc_response``, so no client can pass auth-int there; our
auth-int is checked against the RFC 7616 formulas in tests/sip/test_auth.py instead.

Kamailio computes and checks the response itself from a plaintext password in its config,
so a 200 means our HA1/HA2/response match an independent implementation; a wrong password
must get a 401 again."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from callward.sip import Request, Response, parse_message
from callward.sip.auth import Challenge, authorize
from callward.sip.message import Headers
from callward.sip.timers import TimerConfig
from callward.sip.transaction import ResponseReceived, TransactionTimeout, new_branch
from callward.sip.transaction_layer import TransactionLayer
from callward.sip.uri import parse_uri
from peers import KAMAILIO_MODULES, free_port, kamailio_registrar, stop_group

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

KAMAILIO = shutil.which("kamailio")


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.layer = TransactionLayer(timers=TimerConfig(t1=0.2))
        self.transport: Any = None
        self.wake = asyncio.Event()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = parse_message(data, strict=False)
        self.layer.receive(msg, asyncio.get_running_loop().time(), peer=addr)
        self.wake.set()

    def flush(self) -> None:
        for t in self.layer.datagrams_to_send():
            self.transport.sendto(t.data, t.peer)

    async def transact(self, request: Request, peer: tuple[str, int]) -> Response:
        """Run one client transaction to its final response (Timer E retransmits while
        Kamailio starts up)."""
        loop = asyncio.get_running_loop()
        self.layer.send_request(request, loop.time(), peer=peer)
        while True:
            self.flush()
            while (ev := self.layer.next_event()) is not None:
                if isinstance(ev, ResponseReceived) and ev.response.status >= 200:
                    return ev.response
                if isinstance(ev, TransactionTimeout):
                    raise AssertionError("Kamailio never answered")
            deadline = self.layer.get_timer()
            self.wake.clear()
            wait = 1.0 if deadline is None else max(0.0, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), wait)
            self.layer.handle_timer(loop.time())


def register(local_port: int, cseq: int, body: bytes = b"") -> Request:
    items = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{local_port};branch={new_branch()};rport"),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@callward.test>;tag=kamtest"),
        ("To", "<sip:alice@callward.test>"),
        ("Call-ID", "kamailio-auth-interop"),
        ("CSeq", f"{cseq} REGISTER"),
        ("Contact", f"<sip:alice@127.0.0.1:{local_port}>"),
        ("Expires", "60"),
    ]
    if body:
        items.append(("Content-Type", "text/plain"))
    return Request(Headers(items), body, method="REGISTER", uri=parse_uri("sip:callward.test"))


@pytest.mark.parametrize(
    ("algorithm", "qop_flag", "qop", "body"),
    [
        ("MD5", "1", "auth", b""),
        ("SHA-256", "1", "auth", b""),
    ],
)
@pytest.mark.parametrize("password_ok", [True, False])
async def test_register_against_kamailio(
    tmp_path: Path, algorithm: str, qop_flag: str, qop: str, body: bytes, password_ok: bool
) -> None:
    if KAMAILIO is None or not Path(KAMAILIO_MODULES, "auth.so").exists():
        pytest.skip("why: kamailio (with the auth module) not installed")
    kport = free_port()
    proc = kamailio_registrar(
        tmp_path, kport, realm="callward.test", password="s3cret", algorithm=algorithm,
        qop_flag=qop_flag, debug=1, memory=(32, 4),
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.1", 0))
    try:
        lport = transport.get_extra_info("sockname")[1]
        first = await client.transact(register(lport, 1, body), ("127.0.0.1", kport))
        assert first.status == 401
        (line,) = first.headers.get_lines("WWW-Authenticate")
        challenge = Challenge.parse(line)
        assert challenge.algorithm.value == algorithm and qop in challenge.qop
        retry = authorize(
            register(lport, 2, body),
            first,
            username="alice",
            password="s3cret" if password_ok else "wrong",
        )
        final = await client.transact(retry, ("127.0.0.1", kport))
        assert final.status == (200 if password_ok else 401)
    finally:
        transport.close()
        stop_group(proc)  # kamailio forks helpers into its own process group
