"""Session timers (RFC 4028) between two phones: the UAC refreshes with UPDATE at half the
interval, the UAS sees the refreshes; a refresher that stops refreshing is hung up on at
N - min(32, N/3)."""

from __future__ import annotations

import asyncio

import pytest

from callward.sip.message import Headers, Request
from callward.sip.uri import parse_uri
from callward.ua.phone import Phone
from callward.ua.session_timer import parse_session_expires, response_timer

pytestmark = pytest.mark.timeout(60)


def _req(*headers: tuple[str, str]) -> Request:
    return Request(Headers(list(headers)), method="INVITE", uri=parse_uri("sip:a@b"))


def test_header_parsing_and_uas_choice() -> None:
    t = parse_session_expires(_req(("Session-Expires", "1800;refresher=uas")))
    assert t is not None and (t.interval, t.refresher) == (1800, "uas")
    assert t.refresh_after == 900 and t.expire_after == 1800 - 32
    assert parse_session_expires(_req(("x", "120"))) is not None  # compact form
    assert parse_session_expires(_req(("Session-Expires", "abc"))) is None
    assert parse_session_expires(_req(("Session-Expires", "90;refresher=me"))) is None
    chosen = response_timer(_req(("Session-Expires", "60")), None)
    assert chosen is not None and chosen.interval == 90, "raised to Min-SE (§5)"
    chosen = response_timer(_req(("Supported", "timer")), 600)
    assert chosen is not None and chosen.refresher == "uac"
    assert response_timer(_req(), None) is None


async def _pair(interval: int) -> tuple[Phone, Phone]:
    alice = await Phone.start("alice")
    bob = await Phone.start("bob", auto_answer=True)
    for p in (alice, bob):
        p.session_expires = interval
        p.min_se = 1
    return alice, bob


async def test_uac_refreshes_with_update_and_uas_keeps_the_call() -> None:
    alice, bob = await _pair(2)
    try:
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        assert call.status == 200
        assert call.session_timer is not None and call.session_timer.refresher == "uac"
        seen: list[bytes] = []
        bob.transport.add_tap(lambda ev: seen.append(ev.data.split(b" ", 1)[0]))
        await asyncio.sleep(3.3)  # refreshes at 1 s, 2 s, 3 s
        assert call.refreshes_sent >= 2
        assert seen.count(b"UPDATE") >= 2, "UPDATE preferred: bob's Allow lists it"
        (incoming,) = bob.calls.values()
        assert incoming.state.value == "confirmed" and call.state.value == "confirmed"
        assert await call.hangup() == 200
    finally:
        await alice.close()
        await bob.close()


async def test_no_refresh_means_the_uas_hangs_up() -> None:
    alice, bob = await _pair(3)
    try:
        call = await alice.call(f"sip:bob@127.0.0.1:{bob.local_addr[1]}")
        assert call.status == 200
        assert call._timer_task is not None
        call._timer_task.cancel()  # alice "crashes" as refresher: no more refreshes
        (incoming,) = bob.calls.values()
        # expire_after = 3 - min(32, 1) = 2 s
        assert await incoming.wait_ended(5) == "session-expired"
        assert await call.wait_ended(5) == "bye"
    finally:
        await alice.close()
        await bob.close()
