"""Routing and target selection for the edge proxy (RFC 3261 §16.3-§16.5): who "we" are, Route
pre-processing with flow tokens (RFC 5626), sealed Contacts (topology hiding), static routes,
the location service (flows, NAT, other nodes), E.164 retries, and upstream failover lists
(configured or RFC 3263-resolved), never back into a traversed node.

Location lookups and DNS resolution are questions (:mod:`callward.edge.pending`): the methods
that need them are generators.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from callward.edge.flow import decode_flow_token, encode_flow_token
from callward.edge.identity import normalize_number
from callward.edge.location import Binding
from callward.edge.pending import Query, bindings_of, resolve_upstream
from callward.edge.routing import LocalIdentity, Target, branch_loop_hash, dest_for_uri
from callward.edge.settings import EdgeSettings
from callward.edge.topology import TopologyHider
from callward.errors import SipParseError, StoreError
from callward.sip.headers import parse_name_addr
from callward.sip.message import Headers, Request
from callward.sip.peer import Peer
from callward.sip.uri import SipURI, parse_uri

__all__ = ["ALLOW", "RouteResult", "Router"]

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, PRACK, UPDATE, INFO, MESSAGE, REFER"

RESOLVE_TTL = 30.0  # seconds an RFC 3263 answer for an upstream is reused


@dataclass(frozen=True, slots=True)
class RouteResult:
    """Where a request goes: its (maybe rewritten) form, targets, and whether they are an
    ordered failover list (serial) rather than a parallel fork. ``status`` instead of targets
    when the proxy must answer itself (404/416/430/480/503)."""

    request: Request
    targets: tuple[Target, ...] = ()
    serial: bool = False
    status: int = 0
    reason: str | None = None
    local: bool = False  # the Request-URI names one of our domains (no Route, no flow)


class Router:
    def __init__(self, settings: EdgeSettings, secret: bytes, topology: TopologyHider) -> None:
        self.secret = secret
        self.topology = topology
        self._blacklist: dict[tuple[str, str, int], float] = {}
        self._resolved: dict[str, tuple[float, list[Peer]]] = {}
        self.configure(settings)

    def configure(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.local = LocalIdentity(settings.listen, tuple(d.lower() for d in settings.domains))
        self.routes = {user: parse_uri(uri) for user, uri in settings.routes}
        self.upstreams = [parse_uri(u) for u in settings.upstreams]

    # ------------------------------------------------------------------ who we are
    def is_for_us(self, req: Request) -> bool:
        uri = req.uri
        return (
            isinstance(uri, SipURI)
            and uri.user is None
            and self.local.is_local_uri(uri)
            and not req.headers.get("Route")
        )

    def is_loop(self, req: Request, lhash: str) -> bool:
        """§16.3 item 4: a Via we inserted whose branch carries the same request hash."""
        for via in req.vias:
            h = branch_loop_hash(via.branch)
            if (
                h is not None
                and h == lhash
                and self.local.is_local_hostport(via.host, via.port, via.transport.lower())
            ):
                return True
        return False

    def aor_domain(self, host: str) -> str:
        """Our IP addresses all mean the realm, so ``alice@127.0.0.1`` is ``alice@<realm>``."""
        h = host.lower()
        return h if h in self.local.domains else self.settings.realm

    # ------------------------------------------------------------------ §16.4
    def pop_routes(self, req: Request, source: Peer) -> tuple[Request, Peer | None, str | None]:
        """Strict-route recovery, then remove our own Route values (both of a double
        Record-Route). Returns the request, a flow named by a token in our Route (RFC 5626
        §5.3) and the node that flow lives on."""
        flow: Peer | None = None
        flow_node: str | None = None
        uri = req.uri
        if isinstance(uri, SipURI) and uri.has_param("lr") and self.local.is_our_address(uri):
            # The previous hop was a strict router: the real Request-URI is the last Route.
            routes = req.headers.values("Route")
            if routes:
                last = parse_name_addr(routes[-1])
                headers = Headers([(n, v) for n, v in req.headers if n != "Route"])
                for r in routes[:-1]:
                    headers = headers.append("Route", r)
                req = req.replace(uri=last.uri, headers=headers)
            flow, flow_node = self._token(uri.user, source, _from_owner(uri, req))
        for _ in range(2):
            value = req.headers.values("Route")[:1]
            if not value:
                break
            top = parse_name_addr(value[0])
            if not self.local.is_our_address(top.uri):
                break
            _, headers = req.headers.pop_first_value("Route")
            req = req.replace(headers=headers)
            if flow is None and isinstance(top.uri, SipURI):
                flow, flow_node = self._token(top.uri.user, source, _from_owner(top.uri, req))
        return req, flow, flow_node

    def _token(
        self, user: str | None, source: Peer, from_owner: bool = False
    ) -> tuple[Peer | None, str | None]:
        if not user:
            return None, None
        decoded = decode_flow_token(self.secret, user)
        if decoded is None:
            return None, None
        node, peer = decoded
        if node == self.settings.node and (from_owner or peer.same_address(source)):
            # The request came *from* that flow's owner (its address, or its From tag after
            # it moved to a new address): it goes the other way.
            return None, None
        return peer, node

    # ------------------------------------------------------------------ §16.5
    def route(
        self, req: Request, source: Peer, *, initial: bool, now: float
    ) -> Generator[Query, object, RouteResult]:
        """Route pre-processing and the non-local cases of §16.5; a Request-URI naming our
        domain comes back with ``local`` set (registrar, OPTIONS, :meth:`local_route`)."""
        req, flow, flow_node = self.pop_routes(req, source)
        if not initial and "Route" not in req.headers and self.topology.is_untrusted(source):
            req = self.topology.restore_route_set(req)
        routes = req.headers.values("Route")
        if routes:
            top = parse_name_addr(routes[0])
            if not isinstance(top.uri, SipURI):
                return RouteResult(req, status=416)
            dest = dest_for_uri(top.uri)
            if not top.uri.has_param("lr"):
                # §16.6 step 6: next hop is a strict router.
                _, headers = req.headers.pop_first_value("Route")
                headers = headers.append("Route", f"<{req.uri}>")
                req = req.replace(uri=top.uri, headers=headers)
            return RouteResult(req, (Target(None, dest, label="route"),))
        if flow is not None:
            if flow_node == self.settings.node:
                return RouteResult(req, (Target(None, flow, label="flow"),))
            return RouteResult(req, status=430)  # RFC 5626 §5.3: flow not on this node
        if self.local.is_local_uri(req.uri):
            return RouteResult(req, local=True)
        if initial and self.upstreams:
            ups = yield from self.upstream_targets(req, now)
            if not ups:
                return RouteResult(req, status=503, reason="No Usable Upstream")
            return RouteResult(req, tuple(ups), True)
        if isinstance(req.uri, SipURI):
            return RouteResult(req, (Target(None, dest_for_uri(req.uri)),))
        return RouteResult(req, status=416)

    def local_route(
        self, req: Request, *, initial: bool, now: float
    ) -> Generator[Query, object, RouteResult]:
        targets, serial = yield from self.local_targets(req, now)
        if not targets:
            return RouteResult(req, status=480 if initial else 404)
        return RouteResult(req, tuple(targets), serial or targets[0].failover)

    def local_targets(
        self, req: Request, now: float
    ) -> Generator[Query, object, tuple[list[Target], bool]]:
        """Request-URI names our domain and a user: sealed Contact, static route, location
        service (with an E.164 retry), else upstream for unknown users."""
        uri = req.uri
        assert isinstance(uri, SipURI)
        user = uri.user_unescaped or ""
        sealed = self.topology.unseal_contact(user)
        if sealed is not None:
            return [Target(sealed, dest_for_uri(sealed), label="contact")], False
        route = self.routes.get(user)
        if isinstance(route, SipURI):
            return [Target(route, dest_for_uri(route), label="route")], False
        domain = self.aor_domain(uri.host)
        bindings = yield from bindings_of(f"{user}@{domain}")
        if not bindings:
            e164 = normalize_number(user, self.settings.default_region)
            if e164 is not None and e164 != user:
                route = self.routes.get(e164)
                if isinstance(route, SipURI):
                    return [Target(route, dest_for_uri(route), label="route")], False
                bindings = yield from bindings_of(f"{e164}@{domain}")
        if bindings:
            bindings.sort(key=lambda b: -b.q)
            return [self.binding_target(b) for b in bindings], False
        if self.upstreams:
            # Unknown here: the upstream may know (a trunk). In-dialog requests land here when
            # a UA ignores Record-Route (SIPp's built-in uac): they follow the INVITE's path.
            ups = yield from self.upstream_targets(req, now)
            return ups, True
        return [], False

    def binding_target(self, b: Binding) -> Target:
        na = parse_name_addr(b.contact)
        uri = na.uri
        if b.node and b.node != self.settings.node and (b.outbound or b.nat or b.conn):
            # The phone's flow terminates on another edge: go through it with a flow token.
            token = encode_flow_token(self.secret, b.node, Peer.parse(b.source, b.conn))
            node_uri = parse_uri(b.node_uri)
            assert isinstance(node_uri, SipURI)
            route_uri = SipURI(
                node_uri.host, token, None, node_uri.port, (*node_uri.params, ("lr", None))
            )
            return Target(uri, dest_for_uri(node_uri), routes=(f"<{route_uri}>",), label="node")
        if b.outbound or b.nat or b.conn:
            # RFC 5626 §5.3 / NAT: use the flow the REGISTER came over, keep the Contact as
            # the Request-URI (the "Contact fix-up" without rewriting the header).
            return Target(uri, Peer.parse(b.source, b.conn), label="flow")
        assert isinstance(uri, SipURI)
        return Target(uri, dest_for_uri(uri), label="contact")

    # ------------------------------------------------------------------ upstreams
    def blacklist(self, dest: Peer, now: float) -> None:
        if self.settings.blacklist_seconds > 0:
            self._blacklist[(dest.transport, dest.host, dest.port)] = (
                now + self.settings.blacklist_seconds
            )
            if len(self._blacklist) > 10_000:  # bounded: forget the expired ones
                self._blacklist = {k: t for k, t in self._blacklist.items() if t > now}

    def upstream_targets(self, req: Request, now: float) -> Generator[Query, object, list[Target]]:
        traversed = {(v.host.strip("[]").lower(), v.port or 5060) for v in req.vias}
        out: list[Target] = []
        for text, up in zip(self.settings.upstreams, self.upstreams, strict=True):
            if not isinstance(up, SipURI):
                continue
            dests = yield from self._resolve(text, up, now)
            for dest in dests:
                if (dest.host.lower(), dest.port) in traversed:
                    continue  # never back into a node the request already passed
                if self._blacklist.get((dest.transport, dest.host, dest.port), 0.0) > now:
                    continue
                if up.user is None:
                    # An outbound proxy: loose-route through it, Request-URI unchanged.
                    routes = (f"<{up.with_params((*up.params, ('lr', None)))}>",)
                    out.append(Target(None, dest, routes=routes, failover=True, label="upstream"))
                else:
                    out.append(Target(up, dest, failover=True, label="upstream"))
        return out

    def named_upstreams(self) -> list[tuple[str, SipURI]]:
        return [
            (text, up)
            for text, up in zip(self.settings.upstreams, self.upstreams, strict=True)
            if isinstance(up, SipURI) and not _is_numeric(up.param("maddr") or up.host)
        ]

    def warm(self, now: float) -> Generator[Query, object, None]:
        """Resolve every upstream given by name now (start-up, reload), not on the first call."""
        for text, up in self.named_upstreams():
            self._resolved.pop(text, None)
            yield from self._resolve(text, up, now)

    def _resolve(self, text: str, up: SipURI, now: float) -> Generator[Query, object, list[Peer]]:
        """RFC 3263 targets of an upstream given by name (asked, then cached for
        :data:`RESOLVE_TTL`); a numeric host is its own target."""
        if _is_numeric(up.param("maddr") or up.host):
            return [dest_for_uri(up)]
        cached = self._resolved.get(text)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            peers = yield from resolve_upstream(text)
        except StoreError:  # no answer: keep the last one, else try the name itself
            peers = cached[1] if cached is not None else []
        peers = peers or [dest_for_uri(up)]
        self._resolved[text] = (now + RESOLVE_TTL, peers)
        return peers


def _is_numeric(host: str) -> bool:
    h = host.strip("[]")
    if ":" in h:
        return True
    parts = h.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def _from_owner(route_uri: SipURI, req: Request) -> bool:
    """The Route's ``ftag`` (the From tag of the request that created the dialog) equals this
    request's From tag: it was sent by the party the flow token belongs to."""
    ftag = route_uri.param("ftag")
    if not ftag:
        return False
    try:
        return req.from_.tag == ftag
    except SipParseError:
        return False
