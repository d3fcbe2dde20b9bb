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
from typing import Any

from callward.edge.branches import Branch, BranchMixin, ServerTx, _rebuild
from callward.edge.calls import CallState
from callward.edge.flow import (
    Peer,
    decode_flow_token,
)
from callward.edge.identity import assert_identity
from callward.edge.location import LocationStore
from callward.edge.metrics import EdgeMetrics
from callward.edge.registrar import Registrar, RegistrarPolicy
from callward.edge.routing import (
    LocalIdentity,
    Target,
    branch_loop_hash,
    dest_for_uri,
    loop_hash,
    make_branch,
)
from callward.edge.sessions import UNSUPERVISED_CALL_LIMIT, SessionMixin
from callward.edge.settings import EdgeSettings
from callward.edge.subscribers import SubscriberStore
from callward.edge.targets import ALLOW, TargetMixin
from callward.errors import SipParseError
from callward.events import (
    CallEnded,
    Event,
    RegistrationChanged,
    SecurityAlert,
)
from callward.sip.headers import parse_name_addr
from callward.sip.message import Headers, Request, Response, make_response
from callward.sip.parser import parse_message
from callward.sip.uri import SipURI, parse_uri

__all__ = ["UNSUPERVISED_CALL_LIMIT", "EdgeCore"]

_OURS: frozenset[str] = frozenset()  # Proxy-Require option tags this proxy implements
_AUTH_METHODS = frozenset({"INVITE", "MESSAGE", "SUBSCRIBE", "REFER", "PUBLISH"})


def _reason(text: str) -> str:
    clean = "".join(ch if " " <= ch <= "~" else " " for ch in text)
    return clean[:200]


class EdgeCore(TargetMixin, BranchMixin, SessionMixin):
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
                self._respond(st, 200, extra=[("Allow", ALLOW)])
            else:
                self._respond(st, 483)
            return
        if self._is_loop(req, lhash):
            self.metrics.reject("loop")
            self._respond(st, 482)
            return
        if "Proxy-Require" in req.headers and method != "CANCEL":
            # §16.3 item 5: options a proxy must understand; we implement none of them.
            unknown = [v for v in req.headers.values("Proxy-Require") if v.lower() not in _OURS]
            if unknown:
                self._respond(st, 420, extra=[("Unsupported", ", ".join(unknown))])
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

    # ----------------------------------------------------------------- responses

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
        host = f"[{out_if.host}]" if ":" in out_if.host else out_if.host
        via = f"SIP/2.0/{dest.transport.upper()} {host}:{out_if.port};branch={bid}"
        headers = _rebuild(
            req.headers, [("Via", via)], {"Max-Forwards": str(70 if mf is None else mf - 1)}
        )
        self._send(dest, bytes(req.replace(headers=headers, uri=uri)))
