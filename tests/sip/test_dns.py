"""RFC 3263 server location against zone fixtures (no network), and the dnspython adapter
against a tiny DNS server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callward.errors import CallwardError, DnsError
from callward.sip import SipURI, parse_uri, parse_via
from callward.sip.dns import (
    DnsAnswer,
    DnsCache,
    NaptrRecord,
    ServerLocator,
    SrvRecord,
    Target,
    order_srv,
)
from callward.sip.dns_resolver import DnsPythonResolver


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


class FakeResolver:
    """Zone data as {(name, rdtype): (records, ttl)}; unknown names are NXDOMAIN with a
    negative TTL of ``neg_ttl``; names in ``broken`` raise DnsError (SERVFAIL)."""

    def __init__(
        self,
        zone: dict[tuple[str, str], tuple[tuple[Any, ...], float]],
        neg_ttl: float = 60.0,
        broken: frozenset[str] = frozenset(),
    ) -> None:
        self.zone = zone
        self.neg_ttl = neg_ttl
        self.broken = broken
        self.log: list[tuple[str, str]] = []

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        self.log.append((name, rdtype))
        if name in self.broken:
            raise DnsError("SERVFAIL")
        if (name, rdtype) in self.zone:
            records, ttl = self.zone[(name, rdtype)]
            return DnsAnswer(records, ttl)
        exists = any(n == name for n, _ in self.zone)
        return DnsAnswer((), self.neg_ttl, nxdomain=not exists)


class AsyncFake:
    def __init__(self, inner: FakeResolver) -> None:
        self.inner = inner

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        await asyncio.sleep(0)
        return self.inner.query(name, rdtype)


# RFC 3263 §4.1's example shape: TLS preferred over TCP over UDP.
ZONE: dict[tuple[str, str], tuple[tuple[Any, ...], float]] = {
    ("example.com", "NAPTR"): (
        (
            NaptrRecord(90, 50, "s", "SIP+D2T", "", "_sip._tcp.example.com"),
            NaptrRecord(100, 50, "s", "SIP+D2U", "", "_sip._udp.example.com"),
            NaptrRecord(50, 50, "s", "SIPS+D2T", "", "_sips._tcp.example.com"),
            NaptrRecord(10, 10, "u", "E2U+sip", "!^.*$!sip:x@y!", ""),  # not ours
        ),
        300,
    ),
    ("_sips._tcp.example.com", "SRV"): ((SrvRecord(0, 0, 5061, "tls.example.com."),), 300),
    ("_sip._tcp.example.com", "SRV"): ((SrvRecord(0, 0, 5060, "tcp.example.com."),), 300),
    ("_sip._udp.example.com", "SRV"): (
        (SrvRecord(20, 0, 5060, "backup.example.com."), SrvRecord(10, 0, 5070, "udp.example.com.")),
        300,
    ),
    ("tls.example.com", "A"): (("192.0.2.1",), 300),
    ("tcp.example.com", "A"): (("192.0.2.2",), 300),
    ("udp.example.com", "A"): (("192.0.2.3",), 300),
    ("udp.example.com", "AAAA"): (("2001:db8::3",), 300),
    ("backup.example.com", "A"): (("192.0.2.4",), 30),
    # no NAPTR here: SRV per transport
    ("_sip._tcp.srv.example", "SRV"): ((SrvRecord(0, 0, 5080, "a.srv.example"),), 300),
    ("_sip._udp.srv.example", "SRV"): ((SrvRecord(0, 0, 5090, "a.srv.example"),), 300),
    ("a.srv.example", "A"): (("198.51.100.1",), 300),
    # nothing but an address
    ("plain.example", "A"): (("203.0.113.5",), 120),
    ("plain.example", "AAAA"): (("2001:db8::5",), 120),
}


def locator(**kw: Any) -> ServerLocator:
    return ServerLocator(rng=random.Random(1), **kw)


def test_numeric_host_and_explicit_port_shortcuts() -> None:
    r = FakeResolver(ZONE)
    loc = locator()
    assert loc.resolve(sip("sip:192.0.2.9"), r) == [Target("UDP", "192.0.2.9", 5060)]
    assert loc.resolve(sip("sips:[2001:db8::1]"), r) == [Target("TLS", "2001:db8::1", 5061)]
    assert loc.resolve(sip("sip:192.0.2.9:5080;transport=tcp"), r) == [
        Target("TCP", "192.0.2.9", 5080)
    ]
    assert loc.resolve(sip("sips:192.0.2.9;transport=tcp"), r) == [Target("TLS", "192.0.2.9", 5061)]
    assert r.log == []  # §4.1: no DNS at all for numeric hosts
    got = loc.resolve(sip("sip:plain.example:5099"), r)
    assert got == [Target("UDP", "203.0.113.5", 5099), Target("UDP", "2001:db8::5", 5099)]
    assert {t for _, t in r.log} == {"A", "AAAA"}  # explicit port: no NAPTR/SRV (§4.2)
    assert loc.resolve(sip("sip:x@plain.example;maddr=192.0.2.77"), r) == [
        Target("UDP", "192.0.2.77", 5060)
    ]
    with pytest.raises(DnsError):
        loc.resolve(sip("sip:192.0.2.9;transport=carrier-pigeon"), r)


def test_naptr_srv_a_chain_in_order() -> None:
    r = FakeResolver(ZONE)
    got = locator(transports=("UDP", "TCP", "TLS")).resolve(sip("sip:bob@example.com"), r)
    assert got == [
        Target("TLS", "192.0.2.1", 5061),  # NAPTR order 50
        Target("TCP", "192.0.2.2", 5060),  # order 90
        Target("UDP", "192.0.2.3", 5070),  # order 100, SRV priority 10
        Target("UDP", "2001:db8::3", 5070),
        Target("UDP", "192.0.2.4", 5060),  # SRV priority 20
    ]
    assert r.log[0] == ("example.com", "NAPTR")
    # A client without TLS skips SIPS+D2T; a SIPS URI only takes secure services (§4.1).
    no_tls = locator(transports=("UDP", "TCP")).resolve(sip("sip:example.com"), r)
    assert [t.transport for t in no_tls][:2] == ["TCP", "UDP"]
    secure = locator().resolve(sip("sips:example.com"), r)
    assert secure == [Target("TLS", "192.0.2.1", 5061)]


def test_srv_without_naptr_and_a_fallback() -> None:
    r = FakeResolver(ZONE)
    got = locator(transports=("TCP", "UDP")).resolve(sip("sip:srv.example"), r)
    assert got == [Target("TCP", "198.51.100.1", 5080), Target("UDP", "198.51.100.1", 5090)]
    plain = locator(prefer_ipv6=True).resolve(sip("sip:plain.example"), r)
    assert plain == [Target("UDP", "2001:db8::5", 5060), Target("UDP", "203.0.113.5", 5060)]
    tls = locator().resolve(sip("sips:plain.example"), r)
    assert tls[0] == Target("TLS", "203.0.113.5", 5061)
    # transport param without port: SRV for that transport, else A on its default port (§4.2)
    tcp = locator().resolve(sip("sip:srv.example;transport=tcp"), r)
    assert tcp == [Target("TCP", "198.51.100.1", 5080)]
    ws = locator().resolve(sip("sip:plain.example;transport=ws"), r)
    assert ws[0] == Target("WS", "203.0.113.5", 80)
    with pytest.raises(DnsError):
        locator().resolve(sip("sip:nowhere.invalid"), r)


def test_srv_dot_target_means_unavailable() -> None:
    zone = {("_sip._udp.dot.example", "SRV"): ((SrvRecord(0, 0, 0, "."),), 60)}
    with pytest.raises(DnsError):
        locator(transports=("UDP",)).resolve(sip("sip:dot.example"), FakeResolver(zone))


def test_cache_respects_ttl_and_negative_ttl() -> None:
    now = [0.0]
    r = FakeResolver(ZONE, neg_ttl=60.0)
    loc = ServerLocator(clock=lambda: now[0], rng=random.Random(0))
    first = loc.resolve(sip("sip:example.com"), r)
    n = len(r.log)
    assert loc.resolve(sip("sip:example.com"), r) == first
    assert len(r.log) == n  # everything came from the cache
    now[0] = 31.0  # backup.example.com A (TTL 30) expired; the rest (TTL 300) did not
    loc.resolve(sip("sip:example.com"), r)
    assert r.log[n:] == [("backup.example.com", "A")]
    # NXDOMAIN / NODATA cached for the negative TTL (RFC 2308 §5).
    m = len(r.log)
    loc.resolve(sip("sip:plain.example"), r)  # NAPTR and SRVs are negative
    k = len(r.log)
    assert ("plain.example", "NAPTR") in r.log[m:]
    now[0] = 31.0 + 59.0
    loc.resolve(sip("sip:plain.example"), r)
    assert len(r.log) == k
    now[0] = 31.0 + 60.0
    loc.resolve(sip("sip:plain.example"), r)
    assert ("plain.example", "NAPTR") in r.log[k:]


def test_cache_limits() -> None:
    c = DnsCache(capacity=2, max_ttl=10)
    c.put("a", "A", DnsAnswer(("1.1.1.1",), 1000), 0.0)
    assert c.get("A.", "A", 9.9) is not None and c.get("a", "A", 10.0) is None
    c.put("zero", "A", DnsAnswer((), 0.0), 0.0)  # nothing to cache without a TTL
    assert c.get("zero", "A", 0.0) is None
    for name in ("x", "y", "z"):
        c.put(name, "A", DnsAnswer(("1.1.1.1",), 5), 0.0)
    assert len(c) == 2 and c.get("x", "A", 1.0) is None


def test_server_failure_falls_through() -> None:
    r = FakeResolver(ZONE, broken=frozenset({"example.com"}))
    got = locator(transports=("UDP",)).resolve(sip("sip:example.com"), r)
    assert got == [
        Target("UDP", "192.0.2.3", 5070),
        Target("UDP", "2001:db8::3", 5070),
        Target("UDP", "192.0.2.4", 5060),
    ]


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        # received + rport value: back to the source address and port (RFC 3581 §4)
        ("SIP/2.0/UDP pc.example;received=192.0.2.7;rport=40000", [("UDP", "192.0.2.7", 40000)]),
        # received without rport: sent-by port (or 5060) at the received address (§18.2.2)
        ("SIP/2.0/UDP pc.example:5070;received=192.0.2.7", [("UDP", "192.0.2.7", 5070)]),
        ("SIP/2.0/UDP pc.example;received=192.0.2.7", [("UDP", "192.0.2.7", 5060)]),
        # maddr wins (§18.2.2), with the sent-by port
        (
            "SIP/2.0/UDP pc.example:5071;maddr=192.0.2.9;received=192.0.2.7",
            [("UDP", "192.0.2.9", 5071)],
        ),
        ("SIP/2.0/UDP [2001:db8::1]:5072", [("UDP", "2001:db8::1", 5072)]),
        # a name with a port: A/AAAA only; a bare name: SRV first (RFC 3263 §5)
        (
            "SIP/2.0/UDP plain.example:5073",
            [("UDP", "203.0.113.5", 5073), ("UDP", "2001:db8::5", 5073)],
        ),
        ("SIP/2.0/UDP srv.example", [("UDP", "198.51.100.1", 5090)]),
        ("SIP/2.0/TCP plain.example", [("TCP", "203.0.113.5", 5060), ("TCP", "2001:db8::5", 5060)]),
    ],
)
def test_response_targets(via: str, expected: list[tuple[str, str, int]]) -> None:
    got = locator().resolve_response(parse_via(via), FakeResolver(ZONE))
    assert got == [Target(*e) for e in expected]


async def test_response_targets_async_and_errors() -> None:
    got = await locator().resolve_response_async(
        parse_via("SIP/2.0/UDP srv.example"), AsyncFake(FakeResolver(ZONE))
    )
    assert got == [Target("UDP", "198.51.100.1", 5090)]
    with pytest.raises(DnsError):
        locator().resolve_response(parse_via("SIP/2.0/FOO 192.0.2.1"), FakeResolver(ZONE))
    with pytest.raises(DnsError):
        locator().resolve_response(parse_via("SIP/2.0/UDP gone.invalid"), FakeResolver(ZONE))


class ScriptedRng:
    def __init__(self, picks: list[int]) -> None:
        self.picks = picks
        self.calls: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.calls.append((a, b))
        return self.picks.pop(0)


def test_order_srv_follows_rfc2782_selection() -> None:
    recs = [
        SrvRecord(10, 60, 1, "a"),
        SrvRecord(10, 0, 1, "zero"),
        SrvRecord(10, 40, 1, "b"),
        SrvRecord(5, 0, 1, "first"),
    ]
    # Priority 10 list with zero weights first: [zero(0), a(60), b(40)], sum 100.
    # pick 61 -> running sums 0, 60, 100 -> b; then [zero, a] sum 60, pick 0 -> zero; then a.
    rng = ScriptedRng([0, 61, 0, 0])
    got = [r.target for r in order_srv(recs, rng)]
    assert got == ["first", "b", "zero", "a"]
    assert rng.calls == [(0, 0), (0, 100), (0, 60), (0, 60)]


def test_order_srv_weights_are_proportional() -> None:
    recs = [SrvRecord(0, 10, 1, "light"), SrvRecord(0, 30, 1, "heavy")]
    rng = random.Random(42)
    firsts = Counter(order_srv(recs, rng)[0].target for _ in range(4000))
    # P(heavy first) = 30/40 per RFC 2782 (the 0-pick lands on "light": 11/41 vs 30/41).
    assert abs(firsts["heavy"] / 4000 - 30 / 41) < 0.03


async def test_resolve_async_same_result() -> None:
    r = FakeResolver(ZONE)
    got = await locator().resolve_async(sip("sip:example.com"), AsyncFake(r))
    assert got == locator().resolve(sip("sip:example.com"), FakeResolver(ZONE))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 65535),
            st.sampled_from(["s", "S", "u", "", "a"]),
            st.sampled_from(list(["SIP+D2U", "SIP+D2T", "SIPS+D2T", "SIP+D2W", "x", ""])),
            st.sampled_from(["_sip._udp.f", "_sip._tcp.f", "nope", "."]),
        ),
        max_size=6,
    ),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 100), st.integers(0, 65535)), max_size=5),
)
def test_fuzz_locator_only_raises_dns_error(naptrs: list[Any], srvs: list[Any]) -> None:
    zone: dict[tuple[str, str], tuple[tuple[Any, ...], float]] = {
        ("f", "NAPTR"): (tuple(NaptrRecord(o, p, f, s, "", rep) for o, p, f, s, rep in naptrs), 5),
        ("_sip._udp.f", "SRV"): (tuple(SrvRecord(a, b, c, "h.f") for a, b, c in srvs), 5),
        ("h.f", "A"): (("192.0.2.1",), 5),
    }
    try:
        targets = locator(transports=("UDP", "TCP", "TLS", "WS")).resolve(
            sip("sip:f"), FakeResolver(zone)
        )
    except CallwardError as exc:
        assert isinstance(exc, DnsError)
        return
    assert targets and len(set(targets)) == len(targets)


# ------------------------------------------------------------------ dnspython adapter


class _DnsServer(asyncio.DatagramProtocol):
    """Authoritative answers for a tiny zone, built with dnspython's message API."""

    ZONE_TEXT = {
        ("loc.test.", "NAPTR"): ['100 10 "S" "SIP+D2U" "" _sip._udp.loc.test.'],
        ("_sip._udp.loc.test.", "SRV"): ["0 5 5062 edge.loc.test."],
        ("edge.loc.test.", "A"): ["127.0.0.2"],
        ("edge.loc.test.", "AAAA"): [],
    }

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        query = dns.message.from_wire(data)
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        q = query.question[0]
        key = (q.name.to_text(), dns.rdatatype.to_text(q.rdtype))
        names = {n for n, _ in self.ZONE_TEXT}
        if self.ZONE_TEXT.get(key):
            resp.answer.append(dns.rrset.from_text(q.name, 120, "IN", key[1], *self.ZONE_TEXT[key]))
        else:
            if q.name.to_text() not in names:
                resp.set_rcode(dns.rcode.NXDOMAIN)
            # SOA TTL 3600 but MINIMUM 45: the negative TTL must be 45 (RFC 2308 §5)
            resp.authority.append(
                dns.rrset.from_text(
                    "loc.test.", 3600, "IN", "SOA", "ns.loc.test. h.loc.test. 1 60 60 600 45"
                )
            )
        self.transport.sendto(resp.to_wire(), addr)


async def test_dnspython_adapter_against_local_server() -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport, _ = await loop.create_datagram_endpoint(_DnsServer, local_addr=("127.0.0.1", port))
    try:
        res = DnsPythonResolver(nameservers=["127.0.0.1"], port=port, timeout=3.0)
        srv = await res.query("_sip._udp.loc.test", "SRV")
        assert srv == DnsAnswer((SrvRecord(0, 5, 5062, "edge.loc.test"),), 120.0)
        nx = await res.query("missing.loc.test", "A")
        assert nx.nxdomain and nx.records == () and nx.ttl == 45.0
        nodata = await res.query("edge.loc.test", "AAAA")
        assert not nodata.nxdomain and nodata.ttl == 45.0
        loc = ServerLocator(rng=random.Random(0))
        assert await loc.resolve_async(sip("sip:alice@loc.test"), res) == [
            Target("UDP", "127.0.0.2", 5062)
        ]
    finally:
        transport.close()
    # Nothing listening any more: a timeout becomes DnsError at the boundary.
    dead = DnsPythonResolver(nameservers=["127.0.0.1"], port=port, timeout=0.3)
    with pytest.raises(DnsError):
        await dead.query("loc.test", "A")
