"""Where a SIP message comes from or goes to: one value type for every layer.

A :class:`Peer` is a transport name, an address and, for connection-oriented transports, the id
of the connection (a phone behind NAT is only reachable over the connection it opened, RFC 5626
§5.3). The transaction layer carries it opaquely, the edge routes with it, the transports in
:mod:`callward.sip.transport` send to it and report incoming messages with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.sip.headers import Via
from callward.sip.message import Request

__all__ = ["TRANSPORTS", "Peer", "stamp_via", "via_destination"]

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


@dataclass(frozen=True, slots=True)
class Peer:
    transport: str  # "udp" | "tcp" | "tls" | "ws" | "wss"
    host: str
    port: int
    conn: str = ""  # connection id for stream transports ("": any / open a new one)

    @property
    def reliable(self) -> bool:
        """Stream transports: no retransmissions (RFC 3261 §17.1.1.2)."""
        return self.transport != "udp"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"

    def same_address(self, other: Peer) -> bool:
        return (self.transport, self.host, self.port) == (other.transport, other.host, other.port)

    @classmethod
    def parse(cls, text: str, conn: str = "") -> Peer:
        """The inverse of ``str()``: ``udp:127.0.0.1:5060`` / ``tcp:[::1]:5060``."""
        transport, _, rest = text.partition(":")
        host, _, port = rest.rpartition(":")
        return cls(transport, host.strip("[]"), int(port), conn)


def via_destination(via: Via) -> Peer:
    """§18.2.2: where a response goes by its Via: received/maddr and rport override sent-by."""
    host = via.received or via.maddr or via.host
    port = int(via.rport) if via.rport else (via.port or 5060)
    return Peer(via.transport.lower(), host.strip("[]"), port)


def stamp_via(request: Request, source: Peer) -> Request:
    """§18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via of a request that arrived
    from ``source``, so that :func:`via_destination` of its responses reaches the sender."""
    via = request.top_via
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
        return request
    _, headers = request.headers.pop_first_value("Via")
    headers = headers.prepend("Via", str(via.with_params(tuple(params))))
    return request.replace(headers=headers)
