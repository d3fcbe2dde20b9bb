# mypy: disable-error-code="misc"
# (mixin methods declare `self: EdgeCore`; mypy calls that a non-supertype self, which is the point)
"""Target selection for the edge proxy (RFC 3261 §16.5): sealed Contacts (topology hiding),
static routes, the location service (flows, NAT, other nodes via flow tokens), E.164 retries,
and upstream failover lists (configured or RFC 3263-resolved), never back into a traversed node.

A mixin of :class:`callward.edge.proxy.EdgeCore` (methods take ``self: EdgeCore``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callward.edge.branches import _peer_of
from callward.edge.flow import (
    Peer,
    decode_contact_token,
    encode_contact_token,
    encode_flow_token,
)
from callward.edge.identity import normalize_number
from callward.edge.location import Binding
from callward.edge.routing import (
    Target,
    dest_for_uri,
)
from callward.errors import SipParseError
from callward.sip.headers import parse_name_addr
from callward.sip.message import Request, Response
from callward.sip.uri import SipURI, parse_uri

if TYPE_CHECKING:
    from callward.edge.branches import ServerTx
    from callward.edge.proxy import EdgeCore

__all__ = ["ALLOW", "TargetMixin"]

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, PRACK, UPDATE, INFO, MESSAGE, REFER"


class TargetMixin:
    def _local_targets(
        self: EdgeCore, st: ServerTx, req: Request, now: float
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
                self._respond(st, 200, extra=[("Allow", ALLOW), ("Accept", "application/sdp")])
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

    def _aor_domain(self: EdgeCore, host: str) -> str:
        """Our IP addresses all mean the realm, so ``alice@127.0.0.1`` and
        ``alice@127.0.0.1:5060`` are the same AOR as ``alice@<realm>``."""
        h = host.lower()
        return h if h in self.local.domains else self.settings.realm

    def _binding_target(self: EdgeCore, b: Binding) -> Target:
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

    def set_resolved(self: EdgeCore, upstream: str, peers: list[Peer]) -> None:
        """RFC 3263 result for a configured upstream URI (resolved by the I/O layer): its
        targets, in failover order, replace the URI's own host:port."""
        self._resolved[upstream] = peers

    def _hidden_contacts(self: EdgeCore, msg: Request | Response, iface: Peer) -> str:
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

    def _unseal_contact(self: EdgeCore, user: str) -> SipURI | None:
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

    def _upstream_targets(self: EdgeCore, req: Request, now: float) -> list[Target]:
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
