"""The edge's stateful proxy core (RFC 3261 §16), sans-IO.

``EdgeCore.receive(data, source, now)`` takes one datagram or stream frame; what to send is
collected in ``outgoing`` as ``(Peer, bytes)`` and typed events in ``events``;
``next_timer()``/``handle_timer(now)`` drive retransmissions (§17.1 timers A/B/E/F, Timer C),
failover and session timers. The asyncio server (:mod:`callward.edge.server`) only moves bytes.

Request path: Via stamping (received/rport, §18.2.1, RFC 3581) → retransmission / CANCEL / ACK
matching → Max-Forwards (483) → loop check (482, §16.3 item 4) → Route pre-processing (§16.4,
strict and loose) → target set (§16.5: flow tokens, registrar, static routes, location,
upstream failover) → forward each branch (§16.6) with Record-Route (double when the transport
changes, RFC 5658) → best-response selection (§16.7).
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

from callward.edge.calls import CallState, parse_min_se, parse_session_expires, sdp_summary
from callward.edge.flow import (
    Peer,
    decode_contact_token,
    decode_flow_token,
    encode_contact_token,
    encode_flow_token,
)
from callward.edge.identity import apply_privacy, assert_identity, normalize_number
from callward.edge.location import Binding, LocationStore
from callward.edge.metrics import EdgeMetrics
from callward.edge.registrar import Registrar, RegistrarPolicy
from callward.edge.routing import (
    LocalIdentity,
    Target,
    best_response,
    branch_loop_hash,
    dest_for_uri,
    loop_hash,
    make_branch,
)
from callward.edge.settings import EdgeSettings
from callward.edge.subscribers import SubscriberStore
from callward.errors import SipParseError
from callward.events import (
    CallAnswered,
    CallEnded,
    CallStarted,
    Event,
    RegistrationChanged,
    SecurityAlert,
)
from callward.sip.headers import NameAddr, Via, parse_name_addr
from callward.sip.message import Headers, Request, Response, make_response
from callward.sip.parser import parse_message
from callward.sip.uri import SipURI, parse_uri

__all__ = ["EdgeCore"]

# Calls without RFC 4028 supervision are forgotten after this long (seconds).
UNSUPERVISED_CALL_LIMIT = 12 * 3600.0
_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
_AUTH_METHODS = frozenset({"INVITE", "MESSAGE", "SUBSCRIBE", "REFER", "PUBLISH"})
_ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, PRACK, UPDATE, INFO, MESSAGE, REFER"


def _reason(text: str) -> str:
    clean = "".join(ch if " " <= ch <= "~" else " " for ch in text)
    return clean[:200]


@dataclass(slots=True, eq=False)
class ServerTx:
    key: tuple[str, str, str]
    request: Request
    source: Peer
    created: float
    invite: bool
    lhash: str
    initial: bool
    last: bytes | None = None
    final_status: int = 0
    cancelled: bool = False
    branches: list[Branch] = field(default_factory=list)
    pending: list[Target] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    tried: int = 0
    hidden_vias: bool = False
    hidden_rr: tuple[str, ...] = ()
    fwd_set: dict[str, str] = field(default_factory=dict)
    call: CallState | None = None
    forwarded: Request | None = None  # template after our edits, before per-branch changes


@dataclass(slots=True, eq=False)
class Branch:
    id: str
    st: ServerTx | None  # None: a request we originate (CANCEL, session-timer BYE)
    target: Target
    request: Request
    data: bytes
    invite: bool
    interval: float
    next_retx: float
    deadline: float
    state: int = 0  # 0 calling/trying, 1 proceeding, 2 completed
    final: Response | None = None
    cancel_sent: bool = False


class EdgeCore:
    """One edge node's protocol logic. Not thread-safe; one per event loop."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        location: LocationStore,
        subscribers: SubscriberStore | None = None,
        secret: bytes | None = None,
        metrics: EdgeMetrics | None = None,
    ) -> None:
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.location = location
        self.subscribers = subscribers
        self.metrics = metrics if metrics is not None else EdgeMetrics()
        self.outgoing: list[tuple[Peer, bytes]] = []
        self.events: list[Event] = []
        self._timers: list[tuple[float, int, str, Any]] = []
        self._tseq = itertools.count()
        self._ids = itertools.count(1)
        self._event_seq = itertools.count(1)
        self._server: dict[tuple[str, str, str], ServerTx] = {}
        self._branches: dict[str, Branch] = {}
        self._calls: dict[str, CallState] = {}
        self._blacklist: dict[tuple[str, str, int], float] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._resolved: dict[str, list[Peer]] = {}
        self._now = 0.0
        self.settings = settings
        self.reconfigure(settings)

    # ----------------------------------------------------------------- configuration
    def reconfigure(self, settings: EdgeSettings) -> None:
        """Swap settings (SIGHUP). Transactions and calls in progress keep running."""
        self.settings = settings
        self.local = LocalIdentity(settings.listen, tuple(d.lower() for d in settings.domains))
        self.routes = {user: parse_uri(uri) for user, uri in settings.routes}
        self.upstreams = [parse_uri(u) for u in settings.upstreams]
        self.registrar = Registrar(
            self.location,
            self.subscribers,
            self.secret,
            RegistrarPolicy(
                realm=settings.realm,
                min_expires=settings.min_expires,
                max_expires=settings.max_expires,
                default_expires=settings.default_expires,
                auth=settings.auth,
                nonce_ttl=settings.nonce_ttl,
                algorithms=settings.algorithms,
                node=settings.node,
                node_uri=settings.node_uri,
            ),
        )

    # ----------------------------------------------------------------- public API
    def receive(self, data: bytes, source: Peer, now: float) -> None:
        self._now = now
        if not data.strip(b"\r\n"):
            if data.startswith(b"\r\n\r\n") and source.reliable:
                self._send(source, b"\r\n")  # RFC 5626 §4.4.1 pong
            return
        if self.settings.rate_limit > 0 and not self._admit(source.host, now):
            return
        try:
            msg = parse_message(data, limits=self.settings.limits)
        except SipParseError as exc:
            self._malformed(data, source, exc)
            return
        self.receive_message(msg, source, now)

    def receive_message(self, msg: Request | Response, source: Peer, now: float) -> None:
        """Entry for transports that parse themselves (WebSocket via ``sip.transport``)."""
        self._now = now
        try:
            if isinstance(msg, Request):
                self.metrics.request(msg.method)
                self._on_request(msg, source, now)
            else:
                self._on_response(msg, source, now)
        except SipParseError as exc:
            # A header parsed lazily (Contact, Route, Session-Expires...) was malformed.
            if isinstance(msg, Request) and msg.method != "ACK":
                status = exc.status_hint if 400 <= exc.status_hint < 700 else 400
                self._send(source, bytes(make_response(msg, status, _reason(str(exc)))))
                self.metrics.reject("malformed")

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        self._now = now
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._timers)
            if kind == "b":
                self._branch_timer(key, now)
            elif kind == "st":
                st = self._server.get(key)
                if st is not None and (st.final_status or now - st.created > 300):
                    del self._server[key]
            elif kind == "call":
                self._call_timer(key, now)

    def flow_failed(self, peer: Peer, now: float) -> None:
        """A connection closed or a send failed: branches waiting on it fail over at once
        (the transport error of §16.7 step 9 / RFC 3263 §4.3)."""
        for b in list(self._branches.values()):
            if b.state < 2 and b.target.dest.same_address(peer):
                self._branch_timeout(b, now, transport_error=True)

    def take(self) -> tuple[list[tuple[Peer, bytes]], list[Event]]:
        out, ev = self.outgoing, self.events
        self.outgoing, self.events = [], []
        return out, ev

    @property
    def active_transactions(self) -> int:
        return len(self._server)

    # ----------------------------------------------------------------- plumbing
    def _send(self, peer: Peer, data: bytes) -> None:
        self.outgoing.append((peer, data))

    def _timer(self, when: float, kind: str, key: Any) -> None:
        heapq.heappush(self._timers, (when, next(self._tseq), kind, key))

    def _emit(self, cls: type, now: float, **fields: Any) -> None:
        self.events.append(
            cls(ts=now, node=self.settings.node, seq=next(self._event_seq), **fields)
        )

    def _admit(self, host: str, now: float) -> bool:
        """Token bucket per source host (flood control)."""
        rate, burst = self.settings.rate_limit, float(self.settings.rate_burst)
        tokens, last = self._buckets.get(host, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[host] = (tokens, now)
            self.metrics.reject("rate-limit")
            return False
        self._buckets[host] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        return True

    def _malformed(self, data: bytes, source: Peer, exc: SipParseError) -> None:
        """§16.3 / §21.4.1: answer a malformed request with 400 (or its status hint) naming the
        rule, if enough of it parses leniently to build a response; otherwise drop it."""
        self.metrics.reject("malformed")
        try:
            if exc.status_hint in (413, 513):
                # Oversized: answer from the header section alone (§21.4.14 / §21.5.14).
                end = data.find(b"\r\n\r\n")
                data = data[: end + 4] if 0 <= end < self.settings.limits.max_message_bytes else b""
            msg = parse_message(data, strict=False, limits=self.settings.limits)
            if not isinstance(msg, Request) or msg.method == "ACK":
                return
            msg.top_via  # noqa: B018 - a response needs a Via to go back on
            status = exc.status_hint if 400 <= exc.status_hint < 700 else 400
            resp = make_response(msg, status, _reason(str(exc)))
            self._send(source, bytes(resp))
        except (SipParseError, ValueError):
            return

    def _reply(self, st: ServerTx, resp: Response) -> None:
        data = bytes(resp)
        st.last = data
        if resp.status >= 200:
            st.final_status = resp.status
            self._timer(self._now + (1.0 if st.source.reliable else 32.0), "st", st.key)
        self.metrics.response(resp.status)
        self._send(st.source, data)

    def _respond(self, st: ServerTx, status: int, reason: str | None = None, **kw: Any) -> None:
        self._reply(st, make_response(st.request, status, reason, to_tag="cw" + st.lhash[:8], **kw))

    # ----------------------------------------------------------------- requests
    def _stamp_via(self, req: Request, source: Peer) -> Request:
        """§18.2.1 received, RFC 3581 rport: where the response must really go."""
        via = req.top_via
        params = list(via.params)
        changed = False
        if via.host.strip("[]") != source.host:
            params = [p for p in params if p[0].lower() != "received"]
            params.append(("received", source.host))
            changed = True
        if via.rport == "":
            params = [(k, str(source.port) if k.lower() == "rport" else v) for k, v in params]
            changed = True
        if not changed:
            return req
        first, headers = req.headers.pop_first_value("Via")
        del first
        headers = headers.prepend("Via", str(via.with_params(tuple(params))))
        return req.replace(headers=headers)

    def _on_request(self, req: Request, source: Peer, now: float) -> None:
        req = self._stamp_via(req, source)
        if not source.reliable:
            # §18.2.2: over UDP without rport the response goes to the Via port, which may
            # differ from the source port (sipsak sends and listens on different sockets).
            via = req.top_via
            port = int(via.rport) if via.rport else (via.port or 5060)
            if port != source.port:
                source = Peer("udp", source.host, port)
        key = req.transaction_key
        method = req.method
        if method == "ACK":
            st = self._server.get(key)
            if st is not None and st.final_status >= 300:
                return  # ACK for our non-2xx final: hop-by-hop, absorbed (§17.2.1)
            self._forward_stateless(req, source, now)
            return
        if method == "CANCEL":
            self._on_cancel(req, source, now)
            return
        st = self._server.get(key)
        if st is not None:
            if st.last is not None:
                self._send(st.source, st.last)  # retransmission: replay (§17.2.1/§17.2.2)
            return
        lhash = loop_hash(req)
        st = ServerTx(key, req, source, now, method == "INVITE", lhash, req.to.tag is None)
        self._server[key] = st
        self._timer(now + 300.0, "st", key)
        mf = req.max_forwards
        if mf is not None and mf <= 0:
            if method == "OPTIONS" and self._is_for_us(req):
                self._respond(st, 200, extra=[("Allow", _ALLOW)])
            else:
                self._respond(st, 483)
            return
        if self._is_loop(req, lhash):
            self.metrics.reject("loop")
            self._respond(st, 482)
            return
        if st.invite:
            # §16.2 / §16.7: a 100 now stops the caller's INVITE retransmissions.
            self._send(source, bytes(make_response(req, 100)))
        self._process(st, now)

    def _is_for_us(self, req: Request) -> bool:
        uri = req.uri
        return (
            isinstance(uri, SipURI)
            and uri.user is None
            and self.local.is_local_uri(uri)
            and not req.headers.get("Route")
        )

    def _is_loop(self, req: Request, lhash: str) -> bool:
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

    def _traversed(self, req: Request) -> set[tuple[str, int]]:
        """Addresses of every node this request already went through (its Vias), so failover
        never sends a request back into one of them."""
        out: set[tuple[str, int]] = set()
        for via in req.vias:
            out.add((via.host.strip("[]").lower(), via.port or 5060))
        return out

    def _pop_routes(self, req: Request, source: Peer) -> tuple[Request, Peer | None, str | None]:
        """§16.4: strict-route recovery, then remove our own Route values (both of a double
        Record-Route). Returns the request, a flow named by a token in our Route (RFC 5626
        §5.3) and the node that flow lives on."""
        flow: Peer | None = None
        flow_node: str | None = None
        uri = req.uri
        if isinstance(uri, SipURI) and uri.has_param("lr") and self.local.is_our_address(uri):
            # The previous hop was a strict router and put our RR URI in the Request-URI:
            # the real Request-URI is the last Route value (§16.4).
            routes = req.headers.values("Route")
            if routes:
                last = parse_name_addr(routes[-1])
                headers = Headers([(n, v) for n, v in req.headers if n != "Route"])
                for r in routes[:-1]:
                    headers = headers.append("Route", r)
                req = req.replace(uri=last.uri, headers=headers)
            flow, flow_node = self._token(uri.user, source)
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
                flow, flow_node = self._token(top.uri.user, source)
        return req, flow, flow_node

    def _token(self, user: str | None, source: Peer) -> tuple[Peer | None, str | None]:
        if not user:
            return None, None
        decoded = decode_flow_token(self.secret, user)
        if decoded is None:
            return None, None
        node, peer = decoded
        if node == self.settings.node and peer.same_address(source):
            return None, None  # the request came *from* that flow: it goes the other way
        return peer, node

    def _process(self, st: ServerTx, now: float) -> None:
        req, flow, flow_node = self._pop_routes(st.request, st.source)
        if not st.initial and "Route" not in req.headers and self._is_untrusted(st.source):
            call = self._calls.get(req.call_id)
            if call is not None and call.hidden_routes:
                # The outside only knows us; put back the internal route set we hid.
                items = [("Route", r) for r in call.hidden_routes]
                uri = req.uri
                sealed = self._unseal_contact(uri.user or "") if isinstance(uri, SipURI) else None
                req = req.replace(headers=_rebuild(req.headers, items, {}), uri=sealed or uri)
        targets: list[Target]
        serial = False
        routes = req.headers.values("Route")
        if routes:
            top = parse_name_addr(routes[0])
            if not isinstance(top.uri, SipURI):
                self._respond(st, 416)
                return
            dest = dest_for_uri(top.uri)
            if not top.uri.has_param("lr"):
                # §16.6 step 6: next hop is a strict router.
                _, headers = req.headers.pop_first_value("Route")
                headers = headers.append("Route", f"<{req.uri}>")
                req = req.replace(uri=top.uri, headers=headers)
            targets = [Target(None, dest, label="route")]
        elif flow is not None:
            if flow_node == self.settings.node:
                targets = [Target(None, flow, label="flow")]
            else:
                self._respond(st, 430)  # RFC 5626 §5.3: flow not on this node
                return
        elif self.local.is_local_uri(req.uri):
            local = self._local_targets(st, req, now)
            if local is None:
                return
            targets, serial = local
            if targets and targets[0].failover:
                serial = True
        else:
            if st.initial and self.upstreams:
                targets = self._upstream_targets(req, now)
                serial = True
                if not targets:
                    self._respond(st, 503, "No Usable Upstream", extra=[("Retry-After", "30")])
                    return
            elif isinstance(req.uri, SipURI):
                targets = [Target(None, dest_for_uri(req.uri))]
            else:
                self._respond(st, 416)
                return
        if not targets:
            return
        prepared = self._prepare(st, req, now)
        if prepared is None:
            return
        st.forwarded = prepared
        if serial:
            st.pending = targets[1:]
            self._start_branch(st, targets[0], now)
        else:
            for t in targets:
                self._start_branch(st, t, now)

    def _local_targets(
        self, st: ServerTx, req: Request, now: float
    ) -> tuple[list[Target], bool] | None:
        """Request-URI names our domain (§16.5): registrar, OPTIONS ping, static routes,
        location service, or upstream for unknown users."""
        uri = req.uri
        assert isinstance(uri, SipURI)
        if req.method == "REGISTER":
            self._register(st, req, now)
            return None
        if uri.user is None:
            if req.method == "OPTIONS":
                self._respond(st, 200, extra=[("Allow", _ALLOW), ("Accept", "application/sdp")])
            else:
                self._respond(st, 404)
            return None
        user = uri.user_unescaped or ""
        sealed = self._unseal_contact(user)
        if sealed is not None:
            return [Target(sealed, dest_for_uri(sealed), label="contact")], False
        route = self.routes.get(user)
        if route is not None and isinstance(route, SipURI):
            return [Target(route, dest_for_uri(route), label="route")], False
        aor = f"{user}@{self._aor_domain(uri.host)}"
        bindings = self.location.lookup(aor, now)
        if not bindings:
            tenant_region = self.settings.default_region
            e164 = normalize_number(user, tenant_region)
            if e164 is not None and e164 != user:
                route = self.routes.get(e164)
                if route is not None and isinstance(route, SipURI):
                    return [Target(route, dest_for_uri(route), label="route")], False
                bindings = self.location.lookup(f"{e164}@{self._aor_domain(uri.host)}", now)
        if bindings:
            bindings.sort(key=lambda b: -b.q)
            return [self._binding_target(b) for b in bindings], False
        if self.upstreams:
            # Unknown here: the upstream may know (a trunk). In-dialog requests land here when
            # a UA ignores Record-Route (SIPp's built-in uac): they follow the INVITE's path.
            targets = self._upstream_targets(req, now)
            if targets:
                return targets, True
        self._respond(st, 480 if st.initial else 404)
        return None

    def _aor_domain(self, host: str) -> str:
        """Our IP addresses all mean the realm, so ``alice@127.0.0.1`` and
        ``alice@127.0.0.1:5060`` are the same AOR as ``alice@<realm>``."""
        h = host.lower()
        return h if h in self.local.domains else self.settings.realm

    def _binding_target(self, b: Binding) -> Target:
        na = parse_name_addr(b.contact)
        uri = na.uri
        if b.node and b.node != self.settings.node and (b.outbound or b.nat or b.conn):
            # The phone's flow terminates on another edge: go through it with a flow token.
            src = _peer_of(b.source, b.conn)
            token = encode_flow_token(self.secret, b.node, src)
            node_uri = parse_uri(b.node_uri)
            assert isinstance(node_uri, SipURI)
            route_uri = SipURI(
                node_uri.host, token, None, node_uri.port, (*node_uri.params, ("lr", None))
            )
            return Target(uri, dest_for_uri(node_uri), routes=(f"<{route_uri}>",), label="node")
        if b.outbound or b.nat or b.conn:
            # RFC 5626 §5.3 / NAT: use the flow the REGISTER came over, keep the Contact as
            # the Request-URI (this is the "Contact fix-up" without rewriting the header).
            return Target(uri, _peer_of(b.source, b.conn), label="flow")
        assert isinstance(uri, SipURI)
        return Target(uri, dest_for_uri(uri), label="contact")

    def set_resolved(self, upstream: str, peers: list[Peer]) -> None:
        """RFC 3263 result for a configured upstream URI (resolved by the I/O layer): its
        targets, in failover order, replace the URI's own host:port."""
        self._resolved[upstream] = peers

    def _hidden_contacts(self, msg: Request | Response, iface: Peer) -> str:
        """Topology hiding: each Contact becomes ``sip:<sealed original>@<this edge>`` (header
        parameters kept), so the untrusted side targets us and we unseal on the way in."""
        host = f"[{iface.host}]" if ":" in iface.host else iface.host
        transport = "" if iface.transport == "udp" else f";transport={iface.transport}"
        out = []
        for na in msg.contacts:
            token = encode_contact_token(self.secret, str(na.uri))
            uri = f"sip:{token}@{host}:{iface.port}{transport}"
            params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in na.params)
            out.append(f"<{uri}>{params}")
        return ", ".join(out)

    def _unseal_contact(self, user: str) -> SipURI | None:
        if not user.startswith("c") or len(user) < 20:
            return None
        text = decode_contact_token(self.secret, user)
        if text is None:
            return None
        try:
            uri = parse_uri(text)
        except SipParseError:
            return None
        return uri if isinstance(uri, SipURI) else None

    def _upstream_targets(self, req: Request, now: float) -> list[Target]:
        traversed = self._traversed(req)
        out: list[Target] = []
        for text, up in zip(self.settings.upstreams, self.upstreams, strict=True):
            if not isinstance(up, SipURI):
                continue
            for dest in self._resolved.get(text) or [dest_for_uri(up)]:
                if (dest.host.lower(), dest.port) in traversed:
                    continue  # never back into a node the request already passed
                if self._blacklist.get((dest.transport, dest.host, dest.port), 0.0) > now:
                    continue
                if up.user is None:
                    # An outbound proxy: loose-route through it, Request-URI unchanged (§16.6.6).
                    routes = (f"<{up.with_params((*up.params, ('lr', None)))}>",)
                    out.append(Target(None, dest, routes=routes, failover=True, label="upstream"))
                else:
                    out.append(Target(up, dest, failover=True, label="upstream"))
        return out

    def _register(self, st: ServerTx, req: Request, now: float) -> None:
        result = self.registrar.handle(req, st.source, now, first_hop=len(req.vias) == 1)
        self._reply(st, result.response)
        if result.auth_failed:
            self.metrics.reject("auth")
            self._emit(
                SecurityAlert, now, rule="register-auth-failed", source=st.source.host, detail=""
            )
        if result.changed and result.reason:
            self._emit(
                RegistrationChanged,
                now,
                tenant=result.tenant,
                aor=result.aor,
                contact_count=result.contact_count,
                expires=result.expires,
                reason=result.reason,
            )

    def _is_trusted(self, peer: Peer) -> bool:
        t = self.settings.trusted
        return peer.host in t or f"{peer.host}:{peer.port}" in t

    def _is_untrusted(self, peer: Peer) -> bool:
        u = self.settings.untrusted
        return peer.host in u or f"{peer.host}:{peer.port}" in u

    def _prepare(self, st: ServerTx, req: Request, now: float) -> Request | None:
        """Per-request (not per-branch) edits: auth, identity, session timers, Max-Forwards."""
        method = req.method
        tenant = "default"
        if st.initial and method in _AUTH_METHODS:
            authed: str | None = None
            frm = req.from_.uri
            if (
                self.settings.auth
                and isinstance(frm, SipURI)
                and self.local.is_local_uri(frm)
                and not self._is_trusted(st.source)
            ):
                user, tenant, refusal = self.registrar.authenticate(
                    req, now, proxy=True, username=frm.user_unescaped
                )
                if refusal is not None:
                    self.metrics.reject("auth")
                    self._reply(st, refusal)
                    return None
                authed = f"{user}@{self._aor_domain(frm.host)}"
                req = req.replace(headers=req.headers.remove("Proxy-Authorization"))
            req = assert_identity(
                req,
                trusted_source=self._is_trusted(st.source),
                authenticated_aor=authed,
                region=self.settings.region_for(tenant),
            )
        mf = req.max_forwards
        # Header edits are collected and applied once per branch (each Headers edit copies).
        st.fwd_set = {"Max-Forwards": str(70 if mf is None else mf - 1)}
        if method == "INVITE" and st.initial:
            if not self._session_timer_request(st, req, st.fwd_set, now):
                return None
            self._call_started(st, req, now)
        elif method == "BYE":
            call = self._calls.pop(req.call_id, None)
            if call is not None:
                self.metrics.calls_active.dec()
                self._emit(CallEnded, now, call_id=req.call_id, status=200, reason="bye")
        return req

    def _session_timer_request(
        self, st: ServerTx, req: Request, sets: dict[str, str], now: float
    ) -> bool:
        """RFC 4028 §8.1: 422 below our Min-SE, raise Min-SE, insert Session-Expires."""
        s = self.settings
        se = parse_session_expires(req)
        if se is not None and se[0] < s.min_se:
            self._respond(st, 422, extra=[("Min-SE", str(s.min_se))])
            return False
        min_se = parse_min_se(req)
        if min_se is None or min_se < s.min_se:
            sets["Min-SE"] = str(s.min_se)
        if se is None and s.session_expires > 0:
            sets["Session-Expires"] = str(max(s.session_expires, s.min_se))
            st.call = CallState(req.call_id, "", "", now, st.source, inserted_se=True)
        return True

    def _call_started(self, st: ServerTx, req: Request, now: float) -> None:
        frm, to = req.from_.uri, req.uri
        caller = f"{frm.user}@{frm.host}" if isinstance(frm, SipURI) else str(frm)
        callee = f"{to.user}@{to.host}" if isinstance(to, SipURI) else str(to)
        inserted = st.call.inserted_se if st.call is not None else False
        contact = req.contacts[0].uri if req.contacts else None
        call = CallState(
            req.call_id,
            caller,
            callee,
            now,
            st.source,
            caller_contact=str(contact) if contact is not None else "",
            caller_from=req.headers.get("From") or "",
            invite_cseq=req.cseq.seq,
            inserted_se=inserted,
            uac_timer="timer" in {v.lower() for v in req.headers.values("Supported")},
        )
        st.call = call
        if req.call_id not in self._calls:
            self.metrics.calls_active.inc()
        self._calls[req.call_id] = call
        self._timer(now + UNSUPERVISED_CALL_LIMIT, "call", req.call_id)
        self._emit(
            CallStarted,
            now,
            call_id=req.call_id,
            caller=caller,
            callee=callee,
            sdp_summary=sdp_summary(req.body),
        )

    # ----------------------------------------------------------------- branches
    def _start_branch(self, st: ServerTx, target: Target, now: float) -> None:
        base = st.forwarded
        assert base is not None
        st.tried += 1
        bid = make_branch(st.lhash, f"{next(self._ids):x}")
        req, hidden = self._branch_request(st, base, target, bid)
        st.hidden_vias = st.hidden_vias or hidden
        self._launch(bid, st, target, req, now)

    def _branch_request(
        self, st: ServerTx, base: Request, target: Target, bid: str
    ) -> tuple[Request, bool]:
        """§16.6 steps 2-8 for one target: Request-URI, Route, Record-Route, Via."""
        dest = target.dest
        hidden = False
        untrusted = self._is_untrusted(dest)
        drop: tuple[str, ...] = ()
        if untrusted:
            # Topology hiding: the untrusted side sees only us (restored on the way back).
            hidden = True
            drop = ("Via", "Record-Route")
            if st.initial and base.method in _DIALOG_CREATING:
                st.hidden_rr = tuple(base.headers.values("Record-Route"))
                call = self._calls.get(base.call_id)
                if call is not None:
                    call.hidden_routes = st.hidden_rr
            base = apply_privacy(base)
        out_if = self.local.iface(dest.transport) or self.local.listen[0]
        host = f"[{out_if.host}]" if ":" in out_if.host else out_if.host
        front = [
            ("Via", f"SIP/2.0/{dest.transport.upper()} {host}:{out_if.port};branch={bid};rport")
        ]
        if self.settings.record_route and st.initial and base.method in _DIALOG_CREATING:
            in_if = self.local.iface(st.source.transport) or self.local.listen[0]
            if (in_if.transport, in_if.host, in_if.port) != (
                out_if.transport,
                out_if.host,
                out_if.port,
            ):
                front.append(("Record-Route", _rr(out_if, None)))  # RFC 5658 double RR
            token = None
            if len(st.request.vias) == 1 and not untrusted:
                token = encode_flow_token(self.secret, self.settings.node, st.source)
            front.append(("Record-Route", _rr(in_if, token)))
        front += [("Route", r) for r in target.routes]
        sets = st.fwd_set
        if untrusted and "Contact" in base.headers:
            sets = {**sets, "Contact": self._hidden_contacts(base, out_if)}
        headers = _rebuild(base.headers, front, sets, drop)
        req = (
            base.replace(headers=headers, uri=target.uri)
            if target.uri
            else base.replace(headers=headers)
        )
        return req, hidden

    def _launch(
        self, bid: str, st: ServerTx | None, target: Target, req: Request, now: float
    ) -> None:
        data = bytes(req)
        s = self.settings
        invite = req.method == "INVITE"
        reliable = target.dest.reliable
        b = Branch(
            bid,
            st,
            target,
            req,
            data,
            invite,
            s.t1,
            0.0 if reliable else now + s.t1,
            now + 64 * s.t1,
        )
        self._branches[bid] = b
        if st is not None:
            st.branches.append(b)
        self._send(target.dest, data)
        if not reliable:
            self._timer(b.next_retx, "b", bid)
        self._timer(b.deadline, "b", bid)

    def _branch_timer(self, bid: str, now: float) -> None:
        b = self._branches.get(bid)
        if b is None:
            return
        if b.state == 2:
            if now >= b.deadline:
                del self._branches[bid]
            return
        if b.next_retx and now >= b.next_retx and now < b.deadline:
            self._send(b.target.dest, b.data)
            # Timer A doubles; Timer E doubles up to T2 (and is T2 once proceeding).
            b.interval = b.interval * 2 if b.invite else min(b.interval * 2, self.settings.t2)
            b.next_retx = now + b.interval
            self._timer(b.next_retx, "b", bid)
        if now >= b.deadline:
            self._branch_timeout(b, now)

    def _branch_timeout(self, b: Branch, now: float, *, transport_error: bool = False) -> None:
        """Timer B/F (no answer: 408, §16.8), Timer C (CANCEL, then 408), or transport error."""
        if b.state == 1 and b.invite and not transport_error:
            self._send_cancel(b, now)
        # RFC 5626 §5.3: a registered flow that is gone is 430 Flow Failed (the phone will
        # re-register); any other transport error is a 503 that triggers failover.
        status = 408 if not transport_error else (430 if b.target.label == "flow" else 503)
        synthetic = make_response(b.request, status)
        if b.target.failover:
            self._blacklist_dest(b.target.dest, now)
        self._final(b, synthetic, now, synthetic_only=True)

    def _blacklist_dest(self, dest: Peer, now: float) -> None:
        if self.settings.blacklist_seconds > 0:
            self._blacklist[(dest.transport, dest.host, dest.port)] = (
                now + self.settings.blacklist_seconds
            )

    def _send_cancel(self, b: Branch, now: float) -> None:
        """§9.1: CANCEL with the INVITE's Request-URI, Call-ID, From, To, CSeq number, Route
        and the same branch (only our Via)."""
        if b.cancel_sent or b.state == 2:
            return
        b.cancel_sent = True
        r = b.request
        items: list[tuple[str, str]] = [("Via", r.headers.values("Via")[0])]
        items += [(n, v) for n, v in r.headers if n == "Route"]
        for name in ("From", "To", "Call-ID"):
            items.append((name, r.headers.get(name) or ""))
        items.append(("CSeq", f"{r.cseq.seq} CANCEL"))
        items.append(("Max-Forwards", "70"))
        cancel = Request(Headers(items), b"", method="CANCEL", uri=r.uri)
        cid = b.id + "c"
        # The CANCEL shares the INVITE's branch on the wire but is a separate transaction.
        self._launch(cid, None, b.target, cancel, now)

    # ----------------------------------------------------------------- responses
    def _on_response(self, resp: Response, source: Peer, now: float) -> None:
        via = resp.top_via
        bid = via.branch or ""
        key = bid + "c" if resp.cseq.method == "CANCEL" else bid
        b = self._branches.get(key)
        if b is None:
            if (
                200 <= resp.status < 300
                and resp.cseq.method == "INVITE"
                and branch_loop_hash(bid) is not None
            ):
                self._forward_response_stateless(resp)
            return
        if resp.status < 200:
            if b.state == 0:
                b.state = 1
                if b.invite:
                    b.next_retx = 0.0  # Timer A stops on a provisional (§17.1.1.2)
                    b.deadline = now + self.settings.timer_c
                    self._timer(b.deadline, "b", b.id)
            st = b.st
            if st is None:
                return
            if st.cancelled and b.invite:
                self._send_cancel(b, now)
                return
            if resp.status > 100 and st.final_status == 0:
                self._upstream(st, resp, now)
            return
        if b.final is not None:
            # A retransmitted final: re-ACK a non-2xx, pass a 2xx on (§16.7 step 5 / §17.1.1.3).
            if b.invite and resp.status >= 300:
                self._send(b.target.dest, bytes(_ack_for(b.request, resp)))
            elif b.invite and b.st is not None:
                self._upstream(b.st, resp, now, retransmit=True)
            return
        self._final(b, resp, now)

    def _final(
        self, b: Branch, resp: Response, now: float, *, synthetic_only: bool = False
    ) -> None:
        b.final = resp
        b.state = 2
        b.next_retx = 0.0
        b.deadline = now + (0.0 if b.target.dest.reliable else 32.0)
        self._timer(b.deadline, "b", b.id)
        if b.invite and resp.status >= 300 and not synthetic_only:
            self._send(b.target.dest, bytes(_ack_for(b.request, resp)))
        st = b.st
        if st is None:
            return
        status = resp.status
        if 200 <= status < 300:
            first = st.final_status == 0
            if b.invite and st.initial and first:
                resp = self._session_timer_response(st, resp)
            elif not st.initial and st.request.method in ("INVITE", "UPDATE"):
                self.session_refreshed(st.request, resp, now)
            self._upstream(st, resp, now)
            if b.invite:
                for other in st.branches:
                    if other is not b and other.state < 2:
                        self._send_cancel(other, now)  # §16.7 step 10
                st.pending.clear()
                if first and st.initial:
                    self._call_answered(st, b, resp, now)
            return
        if (
            (status in (408, 503) or synthetic_only)
            and b.target.failover
            and st.pending
            and not st.cancelled
            and st.final_status == 0
        ):
            # Outbound failover: next target (RFC 3263 §4.3 / §16.7 step 9 semantics).
            self._blacklist_dest(b.target.dest, now)
            self.metrics.failovers.inc()
            nxt = st.pending.pop(0)
            self._start_branch(st, nxt, now)
            return
        st.responses.append(resp)
        if b.target.failover:
            st.pending.clear()  # a real answer (not 408/503): stop walking the failover list
        if status >= 600 and b.invite:
            st.pending.clear()
            for other in st.branches:
                if other.state < 2:
                    self._send_cancel(other, now)
        if st.final_status == 0 and not st.pending and all(x.state == 2 for x in st.branches):
            best = best_response(st.responses)
            assert best is not None
            if best.status == 503:
                # §16.7 step 6: a 503 must not make the caller think *we* are overloaded.
                best = best.replace(status=500, reason="Server Internal Error")
            self._upstream(st, best, now)
            if st.invite and st.initial:
                call = self._calls.pop(st.request.call_id, None)
                if call is not None:
                    self.metrics.calls_active.dec()
                reason = "cancel" if st.cancelled else f"error:{best.status}"
                self._emit(
                    CallEnded, now, call_id=st.request.call_id, status=best.status, reason=reason
                )

    def _upstream(
        self, st: ServerTx, resp: Response, now: float, *, retransmit: bool = False
    ) -> None:
        """§16.7 step 9: remove our Via, restore hidden ones, send on the server transaction."""
        _, headers = resp.headers.pop_first_value("Via")
        if st.hidden_vias:
            headers = headers.remove("Via")
            for v in reversed(st.request.headers.values("Via")):
                headers = headers.prepend("Via", v)
            if st.hidden_rr and "Record-Route" in headers:
                for rr in st.hidden_rr:
                    headers = headers.append("Record-Route", rr)
        if "Contact" in headers and self._is_untrusted(st.source):
            iface = self.local.iface(st.source.transport) or self.local.listen[0]
            hidden = self._hidden_contacts(resp.replace(headers=headers), iface)
            headers = headers.set("Contact", hidden)
        out = resp.replace(headers=headers)
        if retransmit:
            self._send(st.source, bytes(out))
            return
        if (
            resp.status >= 200
            and st.final_status >= 200
            and not (st.invite and 200 <= resp.status < 300)
        ):
            return
        if resp.status >= 200 and st.final_status == 0:
            self._reply(st, out)
        elif resp.status >= 200:
            self._send(st.source, bytes(out))  # further 2xx of a forked INVITE
        else:
            data = bytes(out)
            st.last = data
            self._send(st.source, data)

    def _forward_response_stateless(self, resp: Response) -> None:
        """§16.11 for 2xx retransmissions after our transaction is gone: by Via."""
        _, headers = resp.headers.pop_first_value("Via")
        vias = headers.values("Via")
        if not vias:
            return
        from callward.sip.headers import parse_via

        nxt = parse_via(vias[0])
        self._send(_via_dest(nxt), bytes(resp.replace(headers=headers)))

    def _on_cancel(self, req: Request, source: Peer, now: float) -> None:
        """§16.10: answer 200, cancel every pending branch; 487 comes back from downstream."""
        branch, sent_by, _ = req.transaction_key
        st = self._server.get((branch, sent_by, "INVITE"))
        if st is None:
            self._send(source, bytes(make_response(req, 481)))
            return
        self._send(source, bytes(make_response(req, 200)))
        if st.final_status:
            return
        st.cancelled = True
        st.pending.clear()
        for b in st.branches:
            if b.state == 1:
                self._send_cancel(b, now)
            # state 0: CANCEL is sent when the first provisional arrives (§9.1).

    def _forward_stateless(self, req: Request, source: Peer, now: float) -> None:
        """ACK for a 2xx (its own transaction, §17.1.1.3 / §16.11): route and send, with a
        branch derived from the request so retransmissions keep it."""
        mf = req.max_forwards
        if mf is not None and mf <= 0:
            return
        lhash = loop_hash(req)
        if self._is_loop(req, lhash):
            return
        req, flow, flow_node = self._pop_routes(req, source)
        routes = req.headers.values("Route")
        dest: Peer | None = None
        uri = req.uri
        if routes:
            top = parse_name_addr(routes[0])
            if isinstance(top.uri, SipURI):
                dest = dest_for_uri(top.uri)
        elif flow is not None and flow_node == self.settings.node:
            dest = flow
        elif isinstance(uri, SipURI) and self.local.is_local_uri(uri):
            user = uri.user_unescaped or ""
            route = self.routes.get(user)
            sealed = self._unseal_contact(user)
            if sealed is not None:
                dest, uri = dest_for_uri(sealed), sealed
            elif isinstance(route, SipURI):
                dest, uri = dest_for_uri(route), route
            else:
                bindings = self.location.lookup(f"{user}@{self._aor_domain(uri.host)}", now)
                ups = [] if bindings else self._upstream_targets(req, now)
                t = self._binding_target(bindings[0]) if bindings else (ups[0] if ups else None)
                if t is not None:
                    dest, uri = t.dest, (t.uri or uri)
                    if t.routes:
                        req = req.replace(headers=req.headers.prepend("Route", t.routes[0]))
        elif isinstance(uri, SipURI):
            dest = dest_for_uri(uri)
        if dest is None:
            return
        top_branch = req.top_via.branch or ""
        bid = make_branch(lhash, "a" + top_branch[-10:].replace(".", ""))
        out_if = self.local.iface(dest.transport) or self.local.listen[0]
        headers = req.headers.prepend(
            "Via", f"SIP/2.0/{dest.transport.upper()} {out_if.host}:{out_if.port};branch={bid}"
        )
        headers = headers.set("Max-Forwards", str(70 if mf is None else mf - 1))
        self._send(dest, bytes(req.replace(headers=headers, uri=uri)))

    # ----------------------------------------------------------------- calls / RFC 4028
    def _call_answered(self, st: ServerTx, b: Branch, resp: Response, now: float) -> None:
        call = self._calls.get(st.request.call_id)
        if call is None:
            return
        call.answered = True
        call.callee_peer = b.target.dest
        call.callee_contact = str(resp.contacts[0].uri) if resp.contacts else ""
        call.callee_to = resp.headers.get("To") or ""
        self._emit(CallAnswered, now, call_id=call.call_id, sdp_summary=sdp_summary(resp.body))
        self._refresh_session(call, resp, now)

    def _session_timer_response(self, st: ServerTx, resp: Response) -> Response:
        """RFC 4028 §8.2: we asked for timers, the UAS ignored them, the UAC supports them:
        make the UAC the refresher so the session is still supervised."""
        call = self._calls.get(st.request.call_id)
        if call is None or not call.inserted_se or not call.uac_timer:
            return resp
        if "Session-Expires" in resp.headers:
            return resp
        se = max(self.settings.session_expires, self.settings.min_se)
        headers = resp.headers.append("Session-Expires", f"{se};refresher=uac")
        headers = headers.append("Require", "timer")
        return resp.replace(headers=headers)

    def _refresh_session(self, call: CallState, resp: Response, now: float) -> None:
        se = parse_session_expires(resp)
        if se is None:
            return  # no UA will refresh: do not supervise (it would kill healthy calls)
        call.session_expires, call.refresher = se
        call.expires_at = now + se[0]
        self._timer(call.expires_at, "call", call.call_id)

    def _call_timer(self, call_id: str, now: float) -> None:
        call = self._calls.get(call_id)
        if call is None:
            return
        if not call.session_expires:
            if now - call.started >= UNSUPERVISED_CALL_LIMIT:
                # No session timer and no BYE seen (peers that do not honour Record-Route
                # end calls directly): stop tracking so state and the gauge cannot leak.
                del self._calls[call_id]
                self.metrics.calls_active.dec()
                self._emit(CallEnded, now, call_id=call_id, status=200, reason="untracked")
            return
        if now < call.expires_at:
            return
        # RFC 4028 §10: no refresh within the interval: the session is dead. Tear it down.
        del self._calls[call_id]
        self.metrics.calls_active.dec()
        self.metrics.session_expired.inc()
        self._send_teardown(call, now)
        self._emit(CallEnded, now, call_id=call_id, status=200, reason="session-expired")

    def _send_teardown(self, call: CallState, now: float) -> None:
        """Best-effort BYE to each party so phones and media relays free the call."""
        try:
            frm = parse_name_addr(call.caller_from)
            to = parse_name_addr(call.callee_to)
        except SipParseError:
            return
        legs = []
        if call.callee_peer is not None and call.callee_contact:
            legs.append((call.callee_contact, call.callee_peer, frm, to, call.invite_cseq + 1000))
        if call.caller_contact:
            legs.append((call.caller_contact, call.caller_peer, to, frm, 1_000_000))
        for contact, peer, from_na, to_na, cseq in legs:
            try:
                uri = parse_uri(contact)
            except SipParseError:
                continue
            bid = make_branch("0" * 16, f"bye{next(self._ids):x}")
            iface = self.local.iface(peer.transport) or self.local.listen[0]
            items = [
                ("Via", f"SIP/2.0/{peer.transport.upper()} {iface.host}:{iface.port};branch={bid}"),
                ("Max-Forwards", "70"),
                ("From", str(from_na)),
                ("To", str(to_na)),
                ("Call-ID", call.call_id),
                ("CSeq", f"{cseq} BYE"),
                ("Reason", 'SIP;cause=408;text="Session expired"'),
            ]
            bye = Request(Headers(items), b"", method="BYE", uri=uri)
            self._launch(bid, None, Target(None, peer, label="teardown"), bye, now)

    def session_refreshed(self, req: Request, resp: Response, now: float) -> None:
        """Hook for in-dialog re-INVITE/UPDATE 2xx (called from the response path)."""
        call = self._calls.get(req.call_id)
        if call is not None:
            self._refresh_session(call, resp, now)


def _rebuild(
    headers: Headers,
    front: list[tuple[str, str]],
    sets: dict[str, str],
    drop: tuple[str, ...] = (),
) -> Headers:
    """One copy for all of a forward's edits: ``front`` lines first (our Via, Record-Route,
    pushed Route: each lands above the existing lines of its name), ``sets`` replace a header
    in place (or are appended), ``drop`` names are removed."""
    items = list(front)
    done: set[str] = set()
    for name, value in headers:
        if name in drop:
            continue
        new = sets.get(name)
        if new is not None:
            if name not in done:
                items.append((name, new))
                done.add(name)
            continue
        items.append((name, value))
    for name, value in sets.items():
        if name not in done:
            items.append((name, value))
    return Headers._trusted(items)


def _rr(iface: Peer, token: str | None) -> str:
    host = f"[{iface.host}]" if ":" in iface.host else iface.host
    user = f"{token}@" if token else ""
    transport = "" if iface.transport == "udp" else f";transport={iface.transport}"
    return f"<sip:{user}{host}:{iface.port}{transport};lr>"


def _peer_of(text: str, conn: int) -> Peer:
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    return Peer(transport, host.strip("[]"), int(port), conn)


def _via_dest(via: Via) -> Peer:
    """§18.2.2: received/rport override sent-by."""
    host = via.received or via.maddr or via.host
    port = int(via.rport) if via.rport else (via.port or 5060)
    return Peer(via.transport.lower(), host.strip("[]"), port)


def _ack_for(invite: Request, resp: Response) -> Request:
    """§17.1.1.3: the ACK a client transaction sends for a non-2xx final."""
    items: list[tuple[str, str]] = [("Via", invite.headers.values("Via")[0])]
    items += [(n, v) for n, v in invite.headers if n == "Route"]
    items.append(("From", invite.headers.get("From") or ""))
    items.append(("To", resp.headers.get("To") or ""))
    items.append(("Call-ID", invite.call_id))
    items.append(("CSeq", f"{invite.cseq.seq} ACK"))
    items.append(("Max-Forwards", "70"))
    return Request(Headers(items), b"", method="ACK", uri=invite.uri)


_ = NameAddr  # re-exported type used in annotations of helpers
