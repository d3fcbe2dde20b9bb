"""Locating SIP servers, sans-IO (RFC 3263 client side, RFC 2782 SRV, RFC 2308 negative cache).

The procedure is a generator that *yields* DNS questions and is *sent* answers, so it never
touches a socket: :meth:`ServerLocator.resolve` drives it with a synchronous resolver (tests,
zone fixtures) and :meth:`ServerLocator.resolve_async` with an async one
(:mod:`callward.sip.dns_resolver` adapts dnspython). Every answer goes through a TTL-respecting
:class:`DnsCache` driven by an injected clock; NXDOMAIN/NODATA are cached for the SOA minimum.

Output: an ordered failover list of :class:`Target` ``(transport, host, port)``: NAPTR order
and preference, then SRV priority with weighted random order (an injected RNG), then every
address of each SRV target.
"""

from __future__ import annotations

import ipaddress
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Protocol

from callward.errors import DnsError
from callward.sip.headers import Via
from callward.sip.uri import SipURI

__all__ = [
    "DEFAULT_PORTS",
    "AsyncResolver",
    "DnsAnswer",
    "DnsCache",
    "DnsQuery",
    "NaptrRecord",
    "Resolver",
    "ServerLocator",
    "SrvRecord",
    "Target",
    "order_srv",
]

DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "SCTP": 5060, "TLS": 5061, "WS": 80, "WSS": 443}

# RFC 3263 §4.1 NAPTR services, RFC 7118 §6 for WebSocket; value: (transport, SRV prefix).
SERVICES: dict[str, tuple[str, str]] = {
    "SIP+D2U": ("UDP", "_sip._udp"),
    "SIP+D2T": ("TCP", "_sip._tcp"),
    "SIPS+D2T": ("TLS", "_sips._tcp"),
    "SIP+D2S": ("SCTP", "_sip._sctp"),
    "SIP+D2W": ("WS", "_sip._ws"),
    "SIPS+D2W": ("WSS", "_sips._ws"),
}
_SRV_PREFIX = {transport: prefix for transport, prefix in SERVICES.values()}
_SECURE = frozenset({"TLS", "WSS"})


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


Record = NaptrRecord | SrvRecord | str  # A / AAAA records are address strings


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """An RRset (``records``) with its TTL, or a negative answer (no records) whose ``ttl`` is
    the RFC 2308 §5 negative TTL: min(SOA TTL, SOA MINIMUM); 0 when there was no SOA."""

    records: tuple[Record, ...] = ()
    ttl: float = 0.0
    nxdomain: bool = False


@dataclass(frozen=True, slots=True)
class DnsQuery:
    name: str
    rdtype: str  # "NAPTR", "SRV", "A", "AAAA"


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send: transport (UDP/TCP/TLS/SCTP/WS/WSS), an IP address, a port."""

    transport: str
    host: str
    port: int


class Resolver(Protocol):
    def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Answer or raise DnsError (server failure, timeout)."""
        ...


class AsyncResolver(Protocol):
    def query(self, name: str, rdtype: str) -> Awaitable[DnsAnswer]: ...


class DnsCache:
    """Positive and negative answers kept until their TTL runs out (RFC 1035 §3.2.1,
    RFC 2308 §5), least recently used evicted beyond ``capacity``. ``max_ttl`` caps absurd
    TTLs (RFC 8767 suggests a week at most)."""

    def __init__(self, *, capacity: int = 10_000, max_ttl: float = 86_400.0) -> None:
        self.capacity = capacity
        self.max_ttl = max_ttl
        self._items: OrderedDict[tuple[str, str], tuple[float, DnsAnswer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, name: str, rdtype: str, now: float) -> DnsAnswer | None:
        key = (name.lower().rstrip("."), rdtype)
        item = self._items.get(key)
        if item is None:
            return None
        expires, answer = item
        if now >= expires:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return answer

    def put(self, name: str, rdtype: str, answer: DnsAnswer, now: float) -> None:
        ttl = min(answer.ttl, self.max_ttl)
        if ttl <= 0:
            return
        key = (name.lower().rstrip("."), rdtype)
        self._items[key] = (now + ttl, answer)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class _RandInt(Protocol):
    def randint(self, a: int, b: int) -> int: ...


def order_srv(records: Sequence[SrvRecord], rng: _RandInt) -> list[SrvRecord]:
    """RFC 2782 ordering: ascending priority; inside a priority, repeatedly pick a record with
    probability proportional to its weight (zero-weight records first in the list so they
    get a small chance, as the RFC prescribes)."""
    out: list[SrvRecord] = []
    for prio in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == prio]
        group.sort(key=lambda r: r.weight != 0)  # zero weights first, stable otherwise
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


def _numeric(host: str) -> str | None:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


Plan = Generator[DnsQuery, DnsAnswer, list[Target]]


class ServerLocator:
    """RFC 3263 §4 for one client. ``transports`` are those we can use, in our preference
    order (used when there is no NAPTR, §4.1)."""

    def __init__(
        self,
        *,
        cache: DnsCache | None = None,
        clock: Callable[[], float] = lambda: 0.0,
        rng: _RandInt | None = None,
        transports: Sequence[str] = ("UDP", "TCP", "TLS"),
        prefer_ipv6: bool = False,
    ) -> None:
        self.cache = cache if cache is not None else DnsCache()
        self.clock = clock
        self.rng: _RandInt = rng if rng is not None else random.Random()
        self.transports = tuple(t.upper() for t in transports)
        self.prefer_ipv6 = prefer_ipv6

    # ------------------------------------------------------------ drivers
    def resolve(self, uri: SipURI, resolver: Resolver) -> list[Target]:
        """Run the plan with a synchronous resolver."""
        return self._drive(self.plan(uri), resolver)

    def _drive(self, plan: Plan, resolver: Resolver) -> list[Target]:
        try:
            query = next(plan)
            while True:
                try:
                    answer = resolver.query(query.name, query.rdtype)
                except DnsError as exc:
                    query = plan.throw(exc)
                    continue
                query = plan.send(answer)
        except StopIteration as done:
            result: list[Target] = done.value
            return result

    async def resolve_async(self, uri: SipURI, resolver: AsyncResolver) -> list[Target]:
        """Run the plan with an async resolver (same logic, answers awaited)."""
        return await self._drive_async(self.plan(uri), resolver)

    def resolve_response(self, via: Via, resolver: Resolver) -> list[Target]:
        """Where to send a response over an unreliable transport (see :meth:`response_plan`)."""
        return self._drive(self.response_plan(via), resolver)

    async def resolve_response_async(self, via: Via, resolver: AsyncResolver) -> list[Target]:
        return await self._drive_async(self.response_plan(via), resolver)

    async def _drive_async(self, plan: Plan, resolver: AsyncResolver) -> list[Target]:
        try:
            query = next(plan)
            while True:
                try:
                    answer = await resolver.query(query.name, query.rdtype)
                except DnsError as exc:
                    query = plan.throw(exc)
                    continue
                query = plan.send(answer)
        except StopIteration as done:
            result: list[Target] = done.value
            return result

    # ------------------------------------------------------------ the procedure
    def _lookup(self, name: str, rdtype: str) -> Generator[DnsQuery, DnsAnswer, DnsAnswer]:
        """Cache first; a failed lookup (DnsError) counts as an empty, uncached answer so the
        procedure falls through to the next step (§4.1 says to continue on failure)."""
        cached = self.cache.get(name, rdtype, self.clock())
        if cached is not None:
            return cached
        try:
            answer = yield DnsQuery(name, rdtype)
        except DnsError:
            return DnsAnswer()
        self.cache.put(name, rdtype, answer, self.clock())
        return answer

    def plan(self, uri: SipURI) -> Plan:
        """The RFC 3263 §4.1/§4.2 procedure as a generator of DNS questions."""
        secure = uri.scheme == "sips"
        host = uri.param("maddr") or uri.host  # §4: maddr overrides the host
        param = uri.transport.upper() if uri.transport else None
        if param is not None:
            if param == "TCP" and secure:
                param = "TLS"  # §4.1: sips with transport=tcp means TLS over TCP
            elif param == "WS" and secure:
                param = "WSS"
            if param not in DEFAULT_PORTS:
                raise DnsError(f"unknown transport {param!r} in URI (RFC 3263 §4.1)")
        numeric = _numeric(host)
        if numeric is not None or uri.port is not None:
            # §4.1/§4.2: numeric host or explicit port: no NAPTR/SRV, just addresses.
            transport = param or ("TLS" if secure else "UDP")
            port = uri.port or DEFAULT_PORTS[transport]
            if numeric is not None:
                return [Target(transport, numeric, port)]
            addrs = yield from self._addresses(host)
            return self._finish([Target(transport, a, port) for a in addrs], host)
        if param is not None:
            # §4.2: transport known, no port: SRV for it, else A/AAAA on the default port.
            targets = yield from self._srv(_SRV_PREFIX.get(param, "") + "." + host, param)
            if not targets:
                addrs = yield from self._addresses(host)
                targets = [Target(param, a, DEFAULT_PORTS[param]) for a in addrs]
            return self._finish(targets, host)
        found = yield from self._naptr(host, secure)
        targets = found or []
        if not targets:
            # No usable NAPTR (or its SRVs led nowhere): SRV for each transport we support,
            # in our preference order, then A/AAAA (§4.1, §4.2).
            for transport in self.transports:
                if secure and transport not in _SECURE:
                    continue
                prefix = _SRV_PREFIX.get(transport)
                if prefix is None:
                    continue
                targets += yield from self._srv(prefix + "." + host, transport)
            if not targets:
                transport = "TLS" if secure else "UDP"
                addrs = yield from self._addresses(host)
                targets = [Target(transport, a, DEFAULT_PORTS[transport]) for a in addrs]
        return self._finish(targets, host)

    def response_plan(self, via: Via) -> Plan:
        """RFC 3261 §18.2.2 + RFC 3263 §5 for unreliable transports (a reliable one answers on
        the request's connection, which is the transport's business): ``maddr`` first, then
        ``received`` (with the ``rport`` value, RFC 3581), else the sent-by: numeric or with a
        port → A/AAAA on that port, a bare name → SRV for the Via transport, then A/AAAA on the
        default port."""
        transport = via.transport.upper()
        if transport not in DEFAULT_PORTS:
            raise DnsError(f"unknown Via transport {transport[:10]!r} (RFC 3261 §18.2.2)")
        port = via.port
        rport = via.rport
        if via.maddr:
            host = via.maddr
        elif via.received:
            host = via.received
            if rport and rport.isdigit():
                port = int(rport)  # RFC 3581 §4: back to the source port
        else:
            host = via.host
        numeric = _numeric(host)
        if numeric is not None:
            return [Target(transport, numeric, port or DEFAULT_PORTS[transport])]
        if port is not None:
            addrs = yield from self._addresses(host)
            return self._finish([Target(transport, a, port) for a in addrs], host)
        targets = yield from self._srv(
            _SRV_PREFIX.get(transport, "_sip._udp") + "." + host, transport
        )
        if not targets:
            addrs = yield from self._addresses(host)
            targets = [Target(transport, a, DEFAULT_PORTS[transport]) for a in addrs]
        return self._finish(targets, host)

    def _finish(self, targets: list[Target], host: str) -> list[Target]:
        if not targets:
            raise DnsError(f"no SIP server found for {host[:80]} (RFC 3263 §4)")
        seen: set[Target] = set()
        unique = []
        for t in targets:
            if t not in seen:
                seen.add(t)
                unique.append(t)
        return unique

    def _naptr(
        self, host: str, secure: bool
    ) -> Generator[DnsQuery, DnsAnswer, list[Target] | None]:
        """§4.1: NAPTR records with the 's' flag and a SIP service we support, by order then
        preference; None when there are none (so SRV lookups follow)."""
        answer = yield from self._lookup(host, "NAPTR")
        usable = []
        for r in answer.records:
            if not isinstance(r, NaptrRecord) or r.flags.lower() != "s":
                continue
            service = SERVICES.get(r.service.upper())
            if service is None or service[0] not in self.transports:
                continue
            if secure and service[0] not in _SECURE:
                continue  # §4.1: a SIPS URI only uses secure services
            usable.append((r.order, r.preference, service[0], r.replacement))
        if not usable:
            return None
        usable.sort(key=lambda u: (u[0], u[1]))
        targets: list[Target] = []
        for _, _, transport, replacement in usable:
            targets += yield from self._srv(replacement, transport)
        return targets

    def _srv(self, name: str, transport: str) -> Generator[DnsQuery, DnsAnswer, list[Target]]:
        answer = yield from self._lookup(name, "SRV")
        records = [r for r in answer.records if isinstance(r, SrvRecord)]
        if len(records) == 1 and records[0].target.rstrip(".") == "":
            return []  # RFC 2782: target "." means "decidedly not available"
        targets: list[Target] = []
        for rec in order_srv(records, self.rng):
            addrs = yield from self._addresses(rec.target.rstrip("."))
            targets += [Target(transport, a, rec.port) for a in addrs]
        return targets

    def _addresses(self, host: str) -> Generator[DnsQuery, DnsAnswer, list[str]]:
        numeric = _numeric(host)
        if numeric is not None:
            return [numeric]
        families = ("AAAA", "A") if self.prefer_ipv6 else ("A", "AAAA")
        out: list[str] = []
        for rdtype in families:
            answer = yield from self._lookup(host, rdtype)
            out += [r for r in answer.records if isinstance(r, str)]
        return out
