"""DTMF over SIP INFO between two phones: key presses both ways in order; a bad dtmf-relay body
is 400, another content type 415 with Accept, an empty INFO 200; INFO outside a call is 481."""

from __future__ import annotations

import asyncio

import pytest

from callward.sip.message import Request
from callward.ua.dtmf_info import DTMF_RELAY, make_info
from callward.ua.phone import Phone

pytestmark = pytest.mark.timeout(30)


async def test_key_presses_both_ways_and_bad_bodies() -> None:
    alice = await Phone.start("alice")
    bob = await Phone.start("bob", auto_answer=True)
    try:
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        assert call.status == 200
        (theirs,) = bob.calls.values()
        await theirs.wait_confirmed(5)
        assert await call.send_dtmf("12#", gap=0) == [200, 200, 200]
        got = [await asyncio.wait_for(theirs.dtmf_received.get(), 2) for _ in range(3)]
        assert got == ["1", "2", "#"]
        assert await theirs.send_dtmf("*") == [200]
        assert await asyncio.wait_for(call.dtmf_received.get(), 2) == "*"

        def info(body: bytes, ctype: str) -> Request:
            req = make_info(call.leg, "5")
            headers = req.headers.set("Content-Type", ctype).set("Content-Length", str(len(body)))
            return req.replace(headers=headers, body=body)

        hop = call.leg.next_hop()
        assert (await alice.request(info(b"Signal=Z\r\n", DTMF_RELAY), hop)).status == 400
        resp = await alice.request(info(b"hello", "text/plain"), hop)
        assert resp.status == 415 and resp.headers.get("Accept") == DTMF_RELAY
        assert (await alice.request(info(b"", DTMF_RELAY), hop)).status == 200
        assert theirs.dtmf_received.empty()
        stray = info(b"Signal=5\r\n", DTMF_RELAY)
        stray = stray.replace(headers=stray.headers.set("Call-ID", "no-such-call"))
        assert (await alice.request(stray, hop)).status == 481, "INFO outside a dialog"
        await call.hangup()
    finally:
        await alice.close()
        await bob.close()
