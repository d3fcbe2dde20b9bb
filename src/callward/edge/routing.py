"""Proxy routing helpers (RFC 3261 §16.3–§16.6): who "we" are, loop-detection branches,
Record-Route values, destination addresses, and best-response selection (§16.7 step 6).

Pure functions over parsed values; the proxy state machine lives in :mod:`callward.edge.proxy`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from callward.edge.flow import Peer
from callward.sip.message import Request, Response
from callward.sip.uri import URI, SipURI

__all__ = [
    "BRANCH_PREFIX",
    "LocalIdentity",
    "Target",
    "best_response",
    "branch_loop_hash",
    "dest_for_uri",
    "loop_hash",
    "make_branch",
]

# RFC 3261 magic cookie plus our own marker, so we recognise our Vias on the way back.
BRANCH_PREFIX = "z9hG4bKcw"


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """The addresses and domains this node answers for."""

    listen: tuple[Peer, ...]
    domains: tuple[str, ...] = ()
    advertise: tuple[str, ...] = ()  # extra host names meaning "this node" (e.g. a DNS name)

    def iface(self, transport: str) -> Peer:
        """The listening address used to send over ``transport`` (Via, Record-Route); the
        first one when none listens on that transport."""
        for p in self.listen:
            if p.transport == transport:
                return p
        return self.listen[0]

    def via(self, transport: str, branch: str) -> str:
        """Our Via value for a request sent over ``transport`` (§16.6 step 8)."""
        iface = self.iface(transport)
        host = f"[{iface.host}]" if ":" in iface.host else iface.host
        return f"SIP/2.0/{transport.upper()} {host}:{iface.port};branch={branch}"

    def is_local_hostport(self, host: str, port: int | None, transport: str | None) -> bool:
        """Does ``host:port`` name one of our listening sockets? (§16.4 "a URI of this proxy")."""
        h = host.lower().strip("[]")
        for p in self.listen:
            if p.host.lower() != h and h not in self.advertise:
                continue
            default = 5061 if p.transport == "tls" else 5060
            if (port or default) == p.port:
                return True
        return False

    def is_local_domain(self, host: str) -> bool:
        # A fully qualified name with its trailing dot is the same domain (RFC 1034 §3.1).
        h = host.lower().rstrip(".")
        return h in self.domains

    def is_local_uri(self, uri: URI) -> bool:
        """A URI naming this node (by address) or one of its domains."""
        if not isinstance(uri, SipURI):
            return False
        if self.is_local_domain(uri.host):
            return True
        return self.is_local_hostport(uri.host, uri.port, uri.transport)

    def is_our_address(self, uri: URI) -> bool:
        """A URI naming this node by address (Route / Record-Route values we inserted)."""
        return isinstance(uri, SipURI) and self.is_local_hostport(uri.host, uri.port, None)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one branch goes: the (maybe retargeted) Request-URI, the next hop, extra Route
    values to push, and whether it is one of an ordered failover list."""

    uri: URI | None  # new Request-URI, None keeps the request's
    dest: Peer
    routes: tuple[str, ...] = ()
    failover: bool = False
    label: str = "contact"  # "contact" | "route" | "upstream" | "flow" | "node" (metrics)


def dest_for_uri(uri: SipURI, default_transport: str = "udp") -> Peer:
    """Next-hop address for a SIP URI without DNS (numeric hosts, or a name the server resolves):
    maddr wins, then host; transport from the parameter, sips → tls (RFC 3263 §4.1 simplified)."""
    transport = uri.transport or ("tls" if uri.scheme == "sips" else default_transport)
    if transport not in ("udp", "tcp", "tls", "ws", "wss"):
        transport = "udp"
    host = uri.param("maddr") or uri.host
    port = uri.port or (5061 if transport == "tls" else 5060)
    return Peer(transport, host.strip("[]"), port)


def loop_hash(req: Request) -> str:
    """Hash of the fields RFC 3261 §16.6 step 8 lists for loop detection: Request-URI, To tag,
    From tag, Call-ID, CSeq number, Route, Proxy-Require, Proxy-Authorization. A request that
    comes back with the same hash is a loop (482); a different one is a spiral."""
    h = hashlib.blake2b(digest_size=8)
    to = req.to.tag or ""
    frm = req.from_.tag or ""
    parts = (
        str(req.uri),
        to,
        frm,
        req.call_id,
        str(req.cseq.seq),
        "|".join(req.headers.get_lines("Route")),  # raw lines: same input, same hash
        "|".join(req.headers.get_lines("Proxy-Require")),
        "|".join(req.headers.get_lines("Proxy-Authorization")),
    )
    h.update("\x00".join(parts).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def make_branch(lhash: str, unique: str) -> str:
    return f"{BRANCH_PREFIX}{lhash}.{unique}"


def branch_loop_hash(branch: str | None) -> str | None:
    if not branch or not branch.startswith(BRANCH_PREFIX):
        return None
    rest = branch[len(BRANCH_PREFIX) :]
    lhash, dot, _ = rest.partition(".")
    return lhash if dot else None


# Responses carrying information the caller can act on are preferred within a class (§16.7.6).
_PREFERRED = (401, 407, 415, 420, 484)


def best_response(responses: Iterable[Response]) -> Response | None:
    """§16.7 step 6: any 6xx wins; otherwise the lowest class; within 4xx prefer the ones that
    let the client retry (401/407/415/420/484). 408 synthesized for silence is a last resort."""
    items = list(responses)
    if not items:
        return None
    six = [r for r in items if r.status >= 600]
    if six:
        return six[0]

    def rank(r: Response) -> tuple[int, int, int]:
        return (r.status // 100, 0 if r.status in _PREFERRED else 1, 1 if r.status == 408 else 0)

    return min(items, key=rank)
