"""Trust domain and topology hiding at the edge.

Toward an *untrusted* peer the edge shows only itself: Vias and Record-Routes of the inside are
removed (and restored on the way back), each Contact is sealed into an HMAC-signed token in a
URI that names the edge (``sip:<token>@edge``), and the route set of the inside is put back on
in-dialog requests coming from the outside. *Trusted* peers are believed for
P-Asserted-Identity and need no authentication (RFC 3325).
"""

from __future__ import annotations

from collections.abc import Callable

from callward.edge.flow import decode_contact_token, encode_contact_token
from callward.errors import SipParseError
from callward.sip.message import Headers, Request, Response
from callward.sip.peer import Peer
from callward.sip.uri import SipURI, parse_uri

__all__ = ["TopologyHider", "rebuild_headers"]


class TopologyHider:
    def __init__(
        self,
        secret: bytes,
        trusted: tuple[str, ...],
        untrusted: tuple[str, ...],
        hidden_routes: Callable[[str], tuple[str, ...]] = lambda call_id: (),
    ) -> None:
        self.secret = secret
        self.trusted = trusted
        self.untrusted = untrusted
        self.hidden_routes = hidden_routes  # Call-ID → internal route set hidden from outside

    def is_trusted(self, peer: Peer) -> bool:
        """``host``, ``host:port``, or with a transport prefix (``tls:host``,
        ``tls:host:port``): trusted only over that transport (with mTLS: docs/security.md)."""
        t = self.trusted
        return (
            peer.host in t
            or f"{peer.host}:{peer.port}" in t
            or f"{peer.transport}:{peer.host}" in t
            or f"{peer.transport}:{peer.host}:{peer.port}" in t
        )

    def is_untrusted(self, peer: Peer) -> bool:
        return peer.host in self.untrusted or f"{peer.host}:{peer.port}" in self.untrusted

    def hidden_contacts(self, msg: Request | Response, iface: Peer) -> str:
        """Each Contact becomes ``sip:<sealed original>@<this edge>`` (header parameters
        kept), so the untrusted side targets us and we unseal on the way in."""
        host = f"[{iface.host}]" if ":" in iface.host else iface.host
        transport = "" if iface.transport == "udp" else f";transport={iface.transport}"
        out = []
        for na in msg.contacts:
            token = encode_contact_token(self.secret, str(na.uri))
            uri = f"sip:{token}@{host}:{iface.port}{transport}"
            params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in na.params)
            out.append(f"<{uri}>{params}")
        return ", ".join(out)

    def unseal_contact(self, user: str) -> SipURI | None:
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

    def restore_route_set(self, req: Request) -> Request:
        """An in-dialog request from the outside knows only us: put back the internal route
        set we hid and unseal the Request-URI."""
        hidden = self.hidden_routes(req.call_id)
        if not hidden:
            return req
        uri = req.uri
        sealed = self.unseal_contact(uri.user or "") if isinstance(uri, SipURI) else None
        headers = rebuild_headers(req.headers, [("Route", r) for r in hidden], {})
        return req.replace(headers=headers, uri=sealed or uri)

    def restore_response(
        self, headers: Headers, request: Request, hidden_rr: tuple[str, ...]
    ) -> Headers:
        """The response going back inside: the Vias we removed, the Record-Routes we hid."""
        headers = headers.remove("Via")
        for v in reversed(request.headers.values("Via")):
            headers = headers.prepend("Via", v)
        if hidden_rr and "Record-Route" in headers:
            for rr in hidden_rr:
                headers = headers.append("Record-Route", rr)
        return headers


def rebuild_headers(
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
