"""Re-INVITE between two phones (RFC 3261 §14, RFC 3264 §8): a new address is followed, hold
is mirrored, SDES keys are renewed, the o= version grows, and glare resolves with 491 and the
§14.1 timers."""

from __future__ import annotations

import asyncio

import pytest

from callward.sdp import parse_sdp
from callward.ua.call_handle import Call
from callward.ua.phone import Phone

pytestmark = pytest.mark.timeout(60)


async def _pair(mode: str = "rtp") -> tuple[Phone, Phone, Call, Call]:
    alice = await Phone.start("alice")
    bob = await Phone.start("bob", auto_answer=True)
    alice.media_security = bob.media_security = mode
    alice.media_port, bob.media_port = 40000, 41000
    call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
    assert call.status == 200
    (incoming,) = bob.calls.values()
    await incoming.wait_confirmed(5)
    return alice, bob, call, incoming


def _version(sdp: bytes) -> int:
    return parse_sdp(sdp).origin.session_version


async def test_new_address_is_followed_and_hold_is_mirrored() -> None:
    alice, bob, call, incoming = await _pair()
    try:
        stream = call.negotiated()
        assert stream is not None and stream.remote_port == 41000
        before = _version(call.leg.local_sdp)
        bob.media_port = 41500  # bob moved its media (handover to a new socket)
        assert await incoming.reinvite() == 200
        await asyncio.wait_for(call.media_changed.wait(), 2)
        stream = call.negotiated()
        assert stream is not None and stream.remote_port == 41500, "alice follows bob"
        assert _version(call.leg.local_sdp) == before + 1, "a fresh answer, not the old SDP"
        assert call.reinvites_received == 1
        # Hold: bob offers sendonly, alice answers recvonly.
        assert await incoming.reinvite(hold=True) == 200
        assert b"a=sendonly" in incoming.leg.local_sdp
        assert b"a=recvonly" in call.leg.local_sdp
        assert await incoming.reinvite() == 200  # resume
        assert b"a=sendrecv" in call.leg.local_sdp
        assert await call.hangup() == 200
    finally:
        await alice.close()
        await bob.close()


async def test_sdes_rekey_in_a_reoffer_gets_a_fresh_answer_key() -> None:
    alice, bob, call, incoming = await _pair("srtp")
    try:
        first = call.negotiated()
        assert first is not None and first.local_crypto is not None
        assert await incoming.reinvite() == 200  # bob's new offer carries a new key
        again = call.negotiated()
        assert again is not None and again.local_crypto is not None
        assert again.remote_crypto != first.remote_crypto, "bob re-keyed"
        assert again.local_crypto.master_key != first.local_crypto.master_key, "alice too"
        mine = incoming.negotiated()
        assert mine is not None and mine.remote_crypto == again.local_crypto
    finally:
        await alice.close()
        await bob.close()


async def test_glare_resolves_with_491_and_a_retry() -> None:
    alice, bob, call, incoming = await _pair()
    try:
        a, b = await asyncio.gather(call.reinvite(), incoming.reinvite())
        assert (a, b) == (200, 200)
        assert call.glare + incoming.glare >= 1, "the crossing re-INVITEs met a 491"
        assert await call.hangup() == 200
    finally:
        await alice.close()
        await bob.close()


async def test_unacceptable_reoffer_keeps_the_session() -> None:
    alice, bob, call, incoming = await _pair()
    try:
        bad = incoming.leg.local_sdp.replace(b"RTP/AVP 0 8", b"RTP/AVP 18")
        bad = bad.replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:18 G729/8000")
        old = call.leg.local_sdp
        assert await incoming.reinvite(sdp=bad) == 488
        assert call.leg.local_sdp == old and call.negotiated() is not None
        assert await call.hangup() == 200
    finally:
        await alice.close()
        await bob.close()
