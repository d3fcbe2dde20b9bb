"""Two phones register (digest) with a real callward edge on loopback and call each other
through it: Record-Route, 407 on INVITE, in-dialog ACK/BYE routed via the edge."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from callward.config import CallwardConfig, EdgeConfig
from callward.ua.call import CallState
from callward.ua.phone import Phone
from peers import free_port

pytestmark = pytest.mark.timeout(60)

REALM = "callward.local"


async def _start_edge(tmp_path: Path, transport: str) -> tuple[Any, tuple[str, int]]:
    """A real edge on a fresh loopback port with digest subscribers alice and bob."""
    edge_mod = pytest.importorskip("callward.edge.app")
    subs_mod = pytest.importorskip("callward.edge.subscribers")
    port = free_port()
    cfg = CallwardConfig(
        edge=EdgeConfig(
            listen=[f"{transport}:127.0.0.1:{port}"],
            realm=REALM,
            domains=[REALM],
            subscribers=f"sqlite:{tmp_path / 'subs.sqlite'}",
            auth_secret="k" * 32,
        )
    )
    subscribers = subs_mod.SqliteSubscribers(tmp_path / "subs.sqlite")
    for user in ("alice", "bob"):
        subscribers.put(subs_mod.Subscriber.from_password(user, REALM, f"pw-{user}"))
    edge = edge_mod.EdgeNode(cfg, subscribers=subscribers)
    await edge.start()
    return edge, ("127.0.0.1", port)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_register_and_call_through_the_edge(tmp_path: Path, transport: str) -> None:
    edge, edge_addr = await _start_edge(tmp_path, transport)
    alice = await Phone.start("alice", transport=transport, password="pw-alice")
    bob = await Phone.start("bob", transport=transport, password="pw-bob", auto_answer=True)
    try:
        assert (await alice.register(edge_addr, domain=REALM, expires=300)).status == 200
        assert (await bob.register(edge_addr, domain=REALM, expires=300)).status == 200
        wrong = await Phone.start("alice", transport=transport, password="not-it")
        assert (await wrong.register(edge_addr, domain=REALM)).status in (401, 403)
        await wrong.close()

        seen: list[bytes] = []
        alice.transport.add_tap(lambda ev: seen.append(ev.data.split(b"\r\n", 1)[0]))
        call = await alice.call(f"sip:bob@{REALM}", dest=edge_addr)
        # The edge challenges the INVITE (§22.3); the phone retries with Proxy-Authorization.
        flow = [line for line in seen if not line.startswith(b"SIP/2.0 100")]
        assert flow[:4] == [
            f"INVITE sip:bob@{REALM} SIP/2.0".encode(),
            b"SIP/2.0 407 Proxy Authentication Required",
            f"ACK sip:bob@{REALM} SIP/2.0".encode(),  # by the INVITE transaction (§17.1.1.3)
            f"INVITE sip:bob@{REALM} SIP/2.0".encode(),
        ], flow
        assert call.status == 200 and call.state is CallState.CONFIRMED
        assert call.leg.route_set, "the edge Record-Routes, so ACK/BYE go through it"
        assert call.leg.next_hop() == edge_addr
        (incoming,) = bob.calls.values()
        await incoming.wait_confirmed(5)
        assert incoming.leg.remote_sdp == call.leg.local_sdp
        assert await call.hangup() == 200
        assert await incoming.wait_ended(5) == "bye"
    finally:
        await alice.close()
        await bob.close()
        await edge.stop()


async def test_outbound_flow_keepalive_and_recovery(tmp_path: Path) -> None:
    """RFC 5626: register over TCP with +sip.instance/reg-id, ping the flow (CRLFCRLF → CRLF
    from the edge), lose the connection, recover by re-registering, and still be reachable."""
    edge, edge_addr = await _start_edge(tmp_path, "tcp")
    alice = await Phone.start("alice", transport="tcp", password="pw-alice")
    bob = await Phone.start("bob", transport="tcp", password="pw-bob", auto_answer=True)
    instance = "urn:uuid:00000000-0000-4000-8000-00000000b0b0"
    try:
        assert (await alice.register(edge_addr, domain=REALM)).status == 200
        resp = await bob.register(edge_addr, domain=REALM, instance=instance, reg_id=1)
        assert resp.status == 200
        assert await bob.keep_alive(timeout=3) is True  # the edge answered the ping
        first_flow = bob.transport.connection_for(edge_addr)  # type: ignore[attr-defined]
        assert first_flow is not None
        await bob.transport.close_connection(first_flow)  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
        assert await bob.keep_alive(timeout=3) is False  # dead flow → re-registered
        second_flow = bob.transport.connection_for(edge_addr)  # type: ignore[attr-defined]
        assert second_flow not in (None, first_flow)
        call = await alice.call(f"sip:bob@{REALM}", dest=edge_addr)
        assert call.status == 200  # reached over the new flow
        assert await call.hangup() == 200
    finally:
        await alice.close()
        await bob.close()
        await edge.stop()
