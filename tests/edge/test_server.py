"""Real sockets on loopback: edges in-process, phones as plain UDP sockets.

- Two edges sharing the real Redis: a phone registered on edge A is reached through edge B
  (B routes via A with a flow token; A sends over the phone's registered flow).
- Three edges whose upstreams point at each other: a request for an unknown domain ends in one
  5xx for the caller, each node sees it at most once (no loop, no storm).
"""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from callward.config import CallwardConfig, EdgeConfig
from callward.edge.app import EdgeNode
from callward.sip import Request, Response, parse_message


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr) -> None:
        self.inbox.put_nowait(parse_message(data))

    def send(self, text: str, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(text.replace("\n", "\r\n").encode(), ("127.0.0.1", port))

    async def expect(self, pred, timeout: float = 5.0):
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if pred(msg):
                    return msg


async def _phone() -> Phone:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    return proto


def _msg(
    method: str,
    uri: str,
    phone: Phone,
    *,
    call_id: str,
    to: str,
    frm: str,
    cseq: int = 1,
    extra: str = "",
    contact: str = "",
) -> str:
    return (
        f"{method} {uri} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\n"
        f"Max-Forwards: 70\nFrom: <{frm}>;tag=t{phone.port}\nTo: <{to}>\n"
        f"Call-ID: {call_id}\nCSeq: {cseq} {method}\n"
        f"Contact: <{contact or f'sip:u@127.0.0.1:{phone.port}'}>\n{extra}Content-Length: 0\n\n"
    )


def _answer(req: Request, status: int) -> str:
    lines = [f"SIP/2.0 {status} OK"]
    for name, value in req.headers:
        if name in ("Via", "From", "Call-ID", "CSeq", "Record-Route"):
            lines.append(f"{name}: {value}")
        elif name == "To":
            lines.append(f"To: {value};tag=callee")
    lines.append("Content-Length: 0")
    return "\n".join(lines) + "\n\n"


async def _answered(uas: Phone, caller: Phone, edge_port: int) -> Request:
    """The uas answers the INVITE the edge forwards (within 8 s: a failover first waits for
    Timer B, 64*T1) with a 200 sent back to the edge at ``edge_port``; the caller must get that
    200 as its final response. Returns the INVITE as the uas saw it."""
    inv = await uas.expect(lambda m: isinstance(m, Request) and m.method == "INVITE", 8)
    uas.send(_answer(inv, 200), edge_port)
    final = await caller.expect(lambda m: isinstance(m, Response) and m.status >= 200)
    assert final.status == 200
    return inv


async def _close(phones: list[Phone], *nodes: EdgeNode) -> None:
    for p in phones:
        assert p.transport is not None
        p.transport.close()
    for n in nodes:
        await n.stop()


def _cfg(node: str, port: int, **edge) -> CallwardConfig:
    return CallwardConfig(
        edge=EdgeConfig(listen=[f"udp:127.0.0.1:{port}"], node_id=node, auth=False, **edge)
    )


@pytest.mark.services
async def test_phone_on_edge_a_reachable_through_edge_b_with_redis() -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("why: Redis not running on 127.0.0.1:6379")
    prefix = f"cwtest-{uuid.uuid4().hex[:8]}"
    pa, pb = _port(), _port()
    common = dict(location="redis://127.0.0.1:6379/0", location_prefix=prefix, auth_secret="k")
    a = EdgeNode(_cfg("edge-a", pa, **common))
    b = EdgeNode(_cfg("edge-b", pb, **common))
    await a.start()
    await b.start()
    alice, bob = await _phone(), await _phone()
    try:
        alice.send(
            _msg(
                "REGISTER",
                "sip:callward.local",
                alice,
                call_id="reg",
                to="sip:alice@callward.local",
                frm="sip:alice@callward.local",
                extra="Expires: 300\n",
                contact="sip:alice@192.168.1.50:5060",
            ),
            pa,
        )
        ok = await alice.expect(lambda m: isinstance(m, Response) and m.status == 200)
        assert ok.headers.get("Contact")
        bob.send(
            _msg(
                "INVITE",
                "sip:alice@callward.local",
                bob,
                call_id="ab1",
                to="sip:alice@callward.local",
                frm="sip:bob@callward.local",
            ),
            pb,
        )
        inv = await alice.expect(lambda m: isinstance(m, Request) and m.method == "INVITE")
        # alice is behind NAT (private Contact): B → A (flow token) → alice's flow
        assert [v.port for v in inv.vias[:2]] == [pa, pb]
        assert str(inv.uri) == "sip:alice@192.168.1.50:5060"
        alice.send(_answer(inv, 200), pa)
        final = await bob.expect(lambda m: isinstance(m, Response) and m.status >= 200)
        assert final.status == 200 and final.call_id == "ab1"
    finally:
        await _close([alice, bob], a, b)
        from callward.edge.location import RedisLocation

        RedisLocation("redis://127.0.0.1:6379/0", prefix).clear()


async def test_three_edges_pointing_at_each_other_end_in_one_5xx() -> None:
    ports = [_port(), _port(), _port()]
    names = ["a", "b", "c"]
    nodes = []
    for i, name in enumerate(names):
        ups = [f"sip:127.0.0.1:{ports[(i + k) % 3]}" for k in (1, 2)]
        nodes.append(EdgeNode(_cfg(name, ports[i], upstreams=ups)))
    for n in nodes:
        await n.start()
    caller = await _phone()
    try:
        caller.send(
            _msg(
                "INVITE",
                "sip:carol@elsewhere.example",
                caller,
                call_id="loop3",
                to="sip:carol@elsewhere.example",
                frm="sip:bob@callward.local",
            ),
            ports[0],
        )
        final = await caller.expect(lambda m: isinstance(m, Response) and m.status >= 200, 10)
        assert 500 <= final.status < 600
        await asyncio.sleep(0.5)  # anything still bouncing around would show up here
        seen = [n.metrics.requests.labels("INVITE")._value.get() for n in nodes]
        # each node got it once (a retransmission on a slow machine at most): no loop, no storm
        assert all(1.0 <= x <= 2.0 for x in seen), seen
        # nothing else reached the caller: only Timer G resending that final (no ACK here)
        while not caller.inbox.empty():
            again = caller.inbox.get_nowait()
            assert isinstance(again, Response) and again.status == final.status
    finally:
        await _close([caller], *nodes)


async def test_dead_upstream_fails_over_then_blacklisted() -> None:
    pa, pb, dead = _port(), _port(), _port()
    uas = await _phone()
    a = EdgeNode(
        _cfg(
            "a",
            pa,
            upstreams=[f"sip:127.0.0.1:{dead}", f"sip:127.0.0.1:{pb}"],
            t1=0.05,
            blacklist_seconds=60,
        )
    )
    b = EdgeNode(_cfg("b", pb, routes={"carol": f"sip:carol@127.0.0.1:{uas.port}"}))
    await a.start()
    await b.start()
    caller = await _phone()
    try:
        for i in range(2):
            caller.send(
                _msg(
                    "INVITE",
                    "sip:carol@callward.local",
                    caller,
                    call_id=f"fo{i}",
                    to="sip:carol@callward.local",
                    frm="sip:bob@elsewhere.example",
                ),
                pa,
            )
            # first call waits for Timer B (64*T1 = 3.2 s) on the dead one; second goes direct
            await _answered(uas, caller, pb)
        assert a.metrics.failovers._value.get() == 1
    finally:
        await _close([uas, caller], a, b)


async def test_events_reach_the_bus_in_order() -> None:
    from callward.events import (
        CallAnswered,
        CallEnded,
        CallStarted,
        InProcessBus,
        RegistrationChanged,
    )

    bus = InProcessBus()
    got: list = []
    bus.subscribe(got.append)
    port = _port()
    uas = await _phone()
    node = EdgeNode(_cfg("ev", port, routes={"bob": f"sip:bob@127.0.0.1:{uas.port}"}), bus=bus)
    await node.start()
    alice = await _phone()
    try:
        alice.send(
            _msg("REGISTER", "sip:callward.local", alice, call_id="r", to="sip:alice@callward.local",
                 frm="sip:alice@callward.local", extra="Expires: 300\n"),
            port,
        )  # fmt: skip
        await alice.expect(lambda m: isinstance(m, Response) and m.status == 200)
        alice.send(
            _msg("INVITE", "sip:bob@callward.local", alice, call_id="ev1",
                 to="sip:bob@callward.local", frm="sip:alice@callward.local"),
            port,
        )  # fmt: skip
        inv = await uas.expect(lambda m: isinstance(m, Request) and m.method == "INVITE")
        uas.send(_answer(inv, 200), port)
        ok = await alice.expect(lambda m: isinstance(m, Response) and m.status == 200)
        rr = ok.headers.values("Record-Route")
        bye = _msg("BYE", f"sip:bob@127.0.0.1:{uas.port}", alice, call_id="ev1", cseq=2,
                   to="sip:bob@callward.local", frm="sip:alice@callward.local",
                   extra="".join(f"Route: {r}\n" for r in rr))  # fmt: skip
        alice.send(
            bye.replace("To: <sip:bob@callward.local>", "To: <sip:bob@callward.local>;tag=callee"),
            port,
        )
        await uas.expect(lambda m: isinstance(m, Request) and m.method == "BYE")
        await asyncio.sleep(0.2)
        kinds = [type(e) for e in got]
        assert kinds == [RegistrationChanged, CallStarted, CallAnswered, CallEnded]
        assert got[-1].reason == "bye" and [e.seq for e in got] == sorted(e.seq for e in got)
    finally:
        await _close([alice, uas], node)


class ZoneResolver:
    """An RFC 3263 zone in a dict (the AsyncResolver seam of callward.sip.dns)."""

    def __init__(self, records: dict) -> None:
        self.records = records
        self.asked: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str):
        from callward.sip.dns import DnsAnswer

        self.asked.append((name, rdtype))
        return DnsAnswer(tuple(self.records.get((name, rdtype), ())), ttl=60.0)


async def test_rfc3263_srv_upstreams_fail_over_in_priority_order() -> None:
    from callward.sip.dns import SrvRecord

    pa, pb, dead = _port(), _port(), _port()
    uas = await _phone()
    zone = ZoneResolver(
        {
            ("_sip._udp.trunk.example", "SRV"): [
                SrvRecord(10, 0, dead, "a.trunk.example"),
                SrvRecord(20, 0, pb, "b.trunk.example"),
            ],
            ("a.trunk.example", "A"): ["127.0.0.1"],
            ("b.trunk.example", "A"): ["127.0.0.1"],
        }
    )
    a = EdgeNode(_cfg("a", pa, upstreams=["sip:carol@trunk.example"], t1=0.05), dns_resolver=zone)
    b = EdgeNode(
        _cfg("b", pb, domains=["trunk.example"],
             routes={"carol": f"sip:carol@127.0.0.1:{uas.port}"})
    )  # fmt: skip
    await a.start()
    await b.start()
    caller = await _phone()
    try:
        assert ("_sip._udp.trunk.example", "SRV") in zone.asked
        caller.send(
            _msg("INVITE", "sip:dave@elsewhere.example", caller, call_id="srv1",
                 to="sip:dave@elsewhere.example", frm="sip:bob@callward.local"),
            pa,
        )  # fmt: skip
        # priority 10 is dead: after Timer B (3.2 s) the priority-20 target gets it
        inv = await _answered(uas, caller, pb)
        assert [v.port for v in inv.vias[:2]] == [pb, pa]
        assert a.metrics.failovers._value.get() == 1
    finally:
        await _close([uas, caller], a, b)


async def test_tcp_connection_limit_and_framing_errors_close() -> None:
    port = _port()
    cfg = CallwardConfig(
        edge=EdgeConfig(listen=[f"tcp:127.0.0.1:{port}"], auth=False, max_connections=2)
    )
    node = EdgeNode(cfg)
    await node.start()
    conns = []
    try:
        for _ in range(3):
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        # the third is over the limit: closed by the edge at once
        assert await asyncio.wait_for(conns[2][0].read(100), 5) == b""
        reader, writer = conns[0]
        writer.write(
            f"OPTIONS sip:127.0.0.1:{port};transport=tcp SIP/2.0\r\n".encode()
            + b"Via: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKlim\r\nMax-Forwards: 70\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: lim\r\nCSeq: 1 OPTIONS\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"SIP/2.0 200")
        # a stream without Content-Length cannot be framed (§18.3): the edge closes it
        r2, w2 = conns[1]
        w2.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n\r\n")
        assert await asyncio.wait_for(r2.read(100), 5) == b""
        assert node.metrics.rejected.labels("connection-limit")._value.get() == 1
        assert node.metrics.rejected.labels("framing")._value.get() == 1
    finally:
        for _, w in conns:
            w.close()
        await node.stop()


async def test_ipv6_call_through_edge() -> None:
    """IPv6 references in Via/Record-Route/Request-URI (RFC 3261 §19.1.1, RFC 5118)."""
    loop = asyncio.get_running_loop()
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
    except OSError:
        pytest.skip("why: no IPv6 loopback")
    port = probe.getsockname()[1]
    probe.close()
    uas_t, uas = await loop.create_datagram_endpoint(Phone, local_addr=("::1", 0))
    caller_t, caller = await loop.create_datagram_endpoint(Phone, local_addr=("::1", 0))
    cfg = CallwardConfig(
        edge=EdgeConfig(
            listen=[f"udp:[::1]:{port}"], auth=False,
            routes={"bob": f"sip:bob@[::1]:{uas.port}"},
        )
    )  # fmt: skip
    node = EdgeNode(cfg)
    await node.start()
    try:
        invite = (
            f"INVITE sip:bob@callward.local SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP [::1]:{caller.port};branch=z9hG4bKv6;rport\r\nMax-Forwards: 70\r\n"
            f"From: <sip:alice@callward.local>;tag=6\r\nTo: <sip:bob@callward.local>\r\n"
            f"Call-ID: v6\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        caller_t.sendto(invite.encode(), ("::1", port))
        inv = await uas.expect(lambda m: isinstance(m, Request) and m.method == "INVITE")
        assert inv.vias[0].host == "[::1]" and inv.vias[0].port == port
        assert f"[::1]:{port}" in inv.headers.values("Record-Route")[0]
        uas_t.sendto(_answer(inv, 200).replace("\n", "\r\n").encode(), ("::1", port))
        final = await caller.expect(lambda m: isinstance(m, Response) and m.status >= 200)
        assert final.status == 200
    finally:
        uas_t.close()
        caller_t.close()
        await node.stop()
