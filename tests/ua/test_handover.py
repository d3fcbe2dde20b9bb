"""Handover mid-call: alice moves from 127.0.0.1 to 127.0.0.2 (a new SIP socket and a new RTP
socket, as after Wi-Fi -> cellular) while in a call from bob through a real callward edge. She
re-registers from the new Contact and re-INVITEs with the new Contact and media address; bob
follows it, his media reaches her new socket, and his BYE reaches her new address."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from callward.ua.call import CallState
from callward.ua.media import RtpEndpoint
from callward.ua.phone import Phone
from callward.ua.registration_agent import RegistrationAgent

pytestmark = pytest.mark.timeout(60)
REALM = "callward.local"


def _second_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


async def test_call_survives_an_address_change(start_edge: Any) -> None:
    if not _second_loopback():
        pytest.skip("why: 127.0.0.2 is not usable on this host")
    _, edge_addr = await start_edge("udp")
    alice = await Phone.start("alice", password="pw-alice", auto_answer=True)
    bob = await Phone.start("bob", password="pw-bob")
    a_rtp = await RtpEndpoint.open("127.0.0.1")
    b_rtp = await RtpEndpoint.open("127.0.0.1")
    alice.media_port, bob.media_port = a_rtp.local_addr[1], b_rtp.local_addr[1]
    new_rtp: RtpEndpoint | None = None
    try:
        a_reg = await RegistrationAgent.start(alice, [edge_addr], domain=REALM, expires=300)
        b_reg = await RegistrationAgent.start(bob, [edge_addr], domain=REALM, expires=300)
        await a_reg.wait_registered(5)
        await b_reg.wait_registered(5)
        # bob calls alice; alice (the callee) then moves. (When the *caller* moves, the edge's
        # RFC 5626 flow token in Record-Route still points at its old address for requests
        # toward it: see docs/architecture.md.)
        incoming = await bob.call(f"sip:alice@{REALM}", dest=edge_addr)
        assert incoming.status == 200
        (call,) = alice.calls.values()
        await call.wait_confirmed(5)
        # Wi-Fi -> cellular: new address, new sockets.
        new_rtp = await RtpEndpoint.open("127.0.0.2")
        sent_before = a_reg.manager.sent
        statuses = await alice.handover("127.0.0.2", media_port=new_rtp.local_addr[1])
        assert statuses == [200]
        assert alice.local_addr[0] == "127.0.0.2"
        for _ in range(50):  # the re-REGISTER from the new Contact went out and succeeded
            if a_reg.manager.sent > sent_before and a_reg.registered():
                break
            await asyncio.sleep(0.1)
        assert a_reg.manager.sent > sent_before and a_reg.registered()
        stream = incoming.negotiated()
        assert stream is not None
        assert (stream.remote_address, stream.remote_port) == new_rtp.local_addr
        await b_rtp.send_audio((stream.remote_address, stream.remote_port), 10)
        await asyncio.sleep(0.2)
        assert new_rtp.counters.packets_received >= 9, "bob's media reaches the new socket"
        assert await incoming.hangup() == 200, "bob's BYE reaches alice's new address"
        assert await call.wait_ended(5) == "bye" and call.state is CallState.TERMINATED
    finally:
        for r in (a_rtp, b_rtp, new_rtp):
            if r is not None:
                r.close()
        await alice.close()
        await bob.close()
