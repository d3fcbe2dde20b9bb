"""The registration manager on real sockets: two outbound flows to two real callward edges
over TCP with CRLF keep-alives and failover when one edge dies; STUN keep-alives over UDP to a
raw registrar that answers Binding requests on its SIP port (RFC 5626 §4.4.2), with the idle
bytes per hour measured on the wire; clean unregister on close."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from callward.nat.stun import binding_success, is_stun
from callward.sip.message import Request, make_response
from callward.sip.parser import parse_message
from callward.ua.phone import Phone
from callward.ua.registration_agent import RegistrationAgent, keepalive_policy
from callward.usage.planner import plan_keepalive

pytestmark = pytest.mark.timeout(60)

REALM = "callward.local"
INSTANCE = "urn:uuid:00000000-0000-4000-8000-0000000000a1"


async def test_two_flows_to_two_edges_fail_over_on_a_dead_keepalive(start_edge: Any) -> None:
    edge_a, addr_a = await start_edge("tcp")
    _, addr_b = await start_edge("tcp")
    bob = await Phone.start("bob", transport="tcp", password="pw-bob", auto_answer=True)
    alice = await Phone.start("alice", transport="tcp", password="pw-alice")
    try:
        agent = await RegistrationAgent.start(
            bob, [addr_a, addr_b], domain=REALM, expires=300, instance=INSTANCE,
            keepalive=keepalive_policy("tcp", initial_interval=1.0, min_interval=1.0),
            ka_timeout=1.0,
        )  # fmt: skip
        await agent.wait_registered(10, flows=2)
        assert agent.active_edge() == addr_a
        await asyncio.sleep(1.5)
        assert agent.keepalives_sent >= 2 and len(agent.registered()) == 2
        await edge_a.stop()  # edge A dies: its flow's next CRLF ping gets no pong
        for _ in range(60):
            if agent.active_edge() == addr_b:
                break
            await asyncio.sleep(0.1)
        assert agent.active_edge() == addr_b, "calls fail over to the flow on edge B"
        # Bob is still reachable, through edge B.
        assert (await alice.register(addr_b, domain=REALM)).status == 200
        call = await alice.call(f"sip:bob@{REALM}", dest=addr_b)
        assert call.status == 200
        assert await call.hangup() == 200
    finally:
        await alice.close()
        await bob.close()


class RawRegistrar(asyncio.DatagramProtocol):
    """A UDP registrar that answers REGISTER with 200 (echoing the Contact and a Flow-Timer)
    and STUN Binding requests on the same port, as an RFC 5626 edge does."""

    def __init__(self, flow_timer: int | None = None) -> None:
        self.flow_timer = flow_timer
        self.registers: list[Request] = []
        self.stun_in = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if is_stun(data):
            reply = binding_success(data, addr)
            if reply is not None:
                self.stun_in += 1
                self.transport.sendto(reply, addr)
            return
        msg = parse_message(data)
        if not isinstance(msg, Request) or msg.method != "REGISTER":
            return
        self.registers.append(msg)
        extra = [("Contact", msg.headers.get("Contact") or ""), ("Require", "outbound")]
        if self.flow_timer is not None:
            extra.append(("Flow-Timer", str(self.flow_timer)))
        self.transport.sendto(bytes(make_response(msg, 200, extra=extra)), addr)


async def test_stun_keepalive_over_udp_and_idle_bytes_on_the_wire() -> None:
    loop = asyncio.get_running_loop()
    registrar = RawRegistrar(flow_timer=1)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: registrar, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    edge = transport.get_extra_info("sockname")[:2]
    phone = await Phone.start("carol", transport="udp")
    wire: list[tuple[str, int]] = []
    phone.transport.add_tap(
        lambda ev: wire.append((ev.direction, len(ev.data))) if is_stun(ev.data) else None
    )
    try:
        agent = await RegistrationAgent.start(
            phone, [edge], domain=REALM, expires=300, instance=INSTANCE,
            keepalive=keepalive_policy("udp", min_interval=1.0), ka_timeout=1.0,
        )  # fmt: skip
        await agent.wait_registered(5)
        await asyncio.sleep(3.2)
        # Flow-Timer 1 s (RFC 5626 §5.4): a Binding every 0.8-1.0 s, each answered.
        assert 3 <= registrar.stun_in <= 5
        assert agent.mapped[0] == phone.local_addr, "XOR-MAPPED-ADDRESS is our socket"
        sent = [n for d, n in wire if d == "out"]
        got = [n for d, n in wire if d == "in"]
        assert sent and got and len(got) >= len(sent) - 1
        # On the wire: request = header 20 + FINGERPRINT 8, response = 20 + XOR-MAPPED-ADDRESS
        # (IPv4) 12 + FINGERPRINT 8; plus 28 B of IPv4/UDP each way. The usage planner counts
        # no FINGERPRINT (108 B): within 15 %.
        assert (sent[0], got[0]) == (28, 40)
        per_keepalive = (sent[0] + 28) + (got[0] + 28)
        planned = plan_keepalive("stun", 3600).bytes_per_hour
        assert per_keepalive == pytest.approx(planned, rel=0.15)
        assert len(registrar.registers) == 1, "keep-alives are not REGISTER refreshes"
    finally:
        await phone.close()
    # close() unregistered: the last REGISTER carries Expires: 0.
    assert registrar.registers[-1].headers.get("Expires") == "0"
    transport.close()


async def test_no_keepalives_without_outbound() -> None:
    """RFC 5626 §4.4: a registrar that did not accept outbound gets no keep-alives (it may
    not answer STUN on its SIP port, and a missing answer would look like a dead flow)."""
    loop = asyncio.get_running_loop()
    registrar = RawRegistrar(flow_timer=1)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: registrar, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    edge = transport.get_extra_info("sockname")[:2]
    phone = await Phone.start("erin", transport="udp")
    try:
        agent = await RegistrationAgent.start(
            phone, [edge], domain=REALM, expires=300,
            keepalive=keepalive_policy("udp", min_interval=1.0), ka_timeout=1.0,
        )  # fmt: skip
        await agent.wait_registered(5)
        await asyncio.sleep(1.5)
        assert agent.keepalives_sent == 0 and registrar.stun_in == 0
    finally:
        await phone.close()
        transport.close()


async def test_binding_change_seen_by_stun_reregisters() -> None:
    """The NAT forgot us: the Binding response shows a new mapped address, so the phone
    registers again at once (the edge's binding points at the dead mapping)."""
    loop = asyncio.get_running_loop()
    registrar = RawRegistrar(flow_timer=1)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: registrar, local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    edge = transport.get_extra_info("sockname")[:2]
    fake = iter([("203.0.113.5", 40000), ("203.0.113.5", 40000), ("203.0.113.5", 41234)])
    original = registrar.datagram_received

    def remapping(data: bytes, addr: tuple[str, int]) -> None:
        if is_stun(data):
            assert registrar.transport is not None
            reply = binding_success(data, next(fake, ("203.0.113.5", 41234)))
            registrar.stun_in += 1
            registrar.transport.sendto(reply or b"", addr)
            return
        original(data, addr)

    registrar.datagram_received = remapping  # type: ignore[method-assign]
    phone = await Phone.start("dave", transport="udp")
    try:
        agent = await RegistrationAgent.start(
            phone, [edge], domain=REALM, expires=300, instance=INSTANCE,
            keepalive=keepalive_policy("udp", min_interval=1.0), ka_timeout=1.0,
        )  # fmt: skip
        await agent.wait_registered(5)
        for _ in range(50):
            if len(registrar.registers) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(registrar.registers) == 2, "the new mapping triggered a REGISTER"
        assert agent.manager.flows[0].sizer is not None
        assert agent.manager.flows[0].sizer.lost == 1
    finally:
        await phone.close()
        transport.close()


async def test_stun_keepalives_answered_by_a_real_edge_over_udp(start_edge: Any) -> None:
    """The edge answers STUN Binding on its SIP UDP port (RFC 5626 §4.4.2): keep-alives on an
    outbound UDP flow come back with our mapped address and the flow stays up."""
    _, addr = await start_edge("udp")
    bob = await Phone.start("bob", transport="udp", password="pw-bob")
    try:
        agent = await RegistrationAgent.start(
            bob, [addr], domain=REALM, expires=300, instance=INSTANCE,
            keepalive=keepalive_policy("udp", initial_interval=1.0, min_interval=1.0),
            ka_timeout=1.0,
        )  # fmt: skip
        await agent.wait_registered(5)
        await asyncio.sleep(2.6)
        assert agent.keepalives_sent >= 2
        assert agent.mapped[0] == bob.local_addr
        sizer = agent.manager.flows[0].sizer
        assert sizer is not None and sizer.lost == 0 and agent.registered() == [0]
    finally:
        await bob.close()
