"""What staying reachable costs when no call is up: keep-alives and registration refreshes,
priced per transport, bytes on the wire in both directions.

- **CRLF** (RFC 5626 §3.5.1, §4.4.1) is a stream mechanism: CRLFCRLF ping, CRLF pong, over TCP
  or TLS. Each costs an IP + TCP segment (TCP header with the RFC 7323 timestamp option: 32 B),
  the pong carries the ACK of the ping, and the client's delayed ACK of the pong is a third,
  bare segment. Over TLS 1.3 each is one record: 5 B header + 1 B content type + 16 B tag.
- **STUN** (RFC 5626 §4.4.2, RFC 5389) keeps a UDP NAT binding: a 20 B Binding request and a
  response with XOR-MAPPED-ADDRESS (8 + 4 B attribute for IPv4, 20 + 4 for IPv6), each with
  the 8 B FINGERPRINT attribute the phone's STUN agent adds (RFC 5389 §15.5).
- **REGISTER refresh** (RFC 3261 §10.2.4): without a reusable nonce a refresh is four
  messages (REGISTER, 401, REGISTER with credentials, 200); reusing the nonce (RFC 7616 §3.4's
  nc counting) makes it two. Message sizes default to what callward's phone and edge send
  (measured on loopback), override them with :class:`SipSizes`.
- **OPTIONS** ping to the proxy (a common, heavier alternative): request + 200.
"""

from __future__ import annotations

from dataclasses import dataclass

from callward.errors import ConfigError

__all__ = [
    "METHODS",
    "IdlePlan",
    "KeepalivePlan",
    "SipSizes",
    "exchange_bytes",
    "plan_idle",
    "plan_keepalive",
]

METHODS = ("crlf", "stun", "register", "options")
TRANSPORTS = ("udp", "tcp", "tls")
_IP = {4: 20, 6: 40}
UDP = 8
TCP = 32  # 20 B header + 12 B timestamp option (RFC 7323 §3), as Linux sends
STUN_FINGERPRINT = 8  # RFC 5389 §15.5 attribute header + CRC-32
TLS_RECORD = 5 + 1 + 16  # TLS 1.3 record header, inner content type, AEAD tag (RFC 8446 §5.2)


@dataclass(frozen=True, slots=True)
class SipSizes:
    """SIP message sizes in bytes (the SIP text only). Defaults: callward's phone against
    callward's edge on loopback (``callward demo --json`` ladder)."""

    register: int = 401
    challenge: int = 460
    register_auth: int = 697
    register_ok: int = 343
    options: int = 380
    options_ok: int = 330


def _message(size: int, transport: str, ip_version: int) -> int:
    """One message on the wire (no ACK): IP + UDP/TCP header (+ TLS record) + payload."""
    if transport == "udp":
        return _IP[ip_version] + UDP + size
    tls = TLS_RECORD if transport == "tls" else 0
    return _IP[ip_version] + TCP + tls + size


def _exchange(request: int, response: int, transport: str, ip_version: int) -> int:
    """A request and its response; over TCP/TLS the response ACKs the request and the
    requester's delayed ACK of the response is one bare segment."""
    out = _message(request, transport, ip_version) + _message(response, transport, ip_version)
    if transport != "udp":
        out += _IP[ip_version] + TCP
    return out


def exchange_bytes(
    method: str,
    transport: str,
    *,
    ip_version: int = 4,
    sizes: SipSizes | None = None,
    reuse_nonce: bool = False,
) -> int:
    """Bytes on the wire, both directions, for one keep-alive or refresh."""
    if method not in METHODS:
        raise ConfigError(f"unknown keep-alive method {method!r}; expected {', '.join(METHODS)}")
    if transport not in TRANSPORTS:
        raise ConfigError(f"transport {transport!r}: expected udp, tcp or tls")
    if ip_version not in _IP:
        raise ConfigError(f"ip_version must be 4 or 6, not {ip_version}")
    sz = sizes or SipSizes()
    if method == "crlf":
        if transport == "udp":
            raise ConfigError("CRLF keep-alives need TCP or TLS; UDP uses STUN (RFC 5626 §4.4)")
        return _exchange(4, 2, transport, ip_version)
    if method == "stun":
        if transport != "udp":
            raise ConfigError("STUN keep-alives are for UDP flows (RFC 5626 §4.4.2)")
        mapped = 12 if ip_version == 4 else 24
        return _exchange(20 + STUN_FINGERPRINT, 20 + mapped + STUN_FINGERPRINT, "udp", ip_version)
    if method == "options":
        return _exchange(sz.options, sz.options_ok, transport, ip_version)
    refresh = _exchange(sz.register_auth, sz.register_ok, transport, ip_version)
    if reuse_nonce:
        return refresh
    return _exchange(sz.register, sz.challenge, transport, ip_version) + refresh


@dataclass(frozen=True, slots=True)
class KeepalivePlan:
    """Idle cost of one mechanism at one interval, bytes per hour in both directions."""

    method: str
    interval_s: int
    bytes_per_hour: float
    transport: str = "udp"
    bytes_per_exchange: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "transport": self.transport,
            "interval_s": self.interval_s,
            "bytes_per_exchange": self.bytes_per_exchange,
            "bytes_per_hour": round(self.bytes_per_hour),
        }


def plan_keepalive(
    method: str,
    interval_s: int,
    *,
    transport: str | None = None,
    ip_version: int = 4,
    sizes: SipSizes | None = None,
    reuse_nonce: bool = False,
) -> KeepalivePlan:
    """One mechanism every ``interval_s``; ``transport`` defaults to what the method runs
    on (CRLF: TCP, STUN: UDP, REGISTER/OPTIONS: UDP)."""
    if not 5 <= interval_s <= 86_400:
        raise ConfigError(f"keep-alive interval must be 5..86400 s, not {interval_s}")
    t = transport or ("tcp" if method == "crlf" else "udp")
    per = exchange_bytes(method, t, ip_version=ip_version, sizes=sizes, reuse_nonce=reuse_nonce)
    return KeepalivePlan(method, interval_s, per * 3600.0 / interval_s, t, per)


@dataclass(frozen=True, slots=True)
class IdlePlan:
    """A reachability strategy: a keep-alive (or none, with push) plus registration refresh."""

    name: str
    parts: tuple[KeepalivePlan, ...]

    @property
    def bytes_per_hour(self) -> float:
        return sum(p.bytes_per_hour for p in self.parts)

    def as_dict(self) -> dict[str, object]:
        return {
            "strategy": self.name,
            "bytes_per_hour": round(self.bytes_per_hour),
            "parts": [p.as_dict() for p in self.parts],
        }


def plan_idle(
    name: str,
    *,
    keepalive: tuple[str, int] | None,
    transport: str,
    register_s: int,
    reuse_nonce: bool = False,
    ip_version: int = 4,
) -> IdlePlan:
    """``keepalive`` = (method, interval) or None (push-assisted: the device is woken by the
    platform's push channel, so only the registration is refreshed)."""
    parts = []
    if keepalive is not None:
        parts.append(plan_keepalive(keepalive[0], keepalive[1], transport=transport,
                                    ip_version=ip_version))  # fmt: skip
    parts.append(plan_keepalive("register", register_s, transport=transport,
                                ip_version=ip_version, reuse_nonce=reuse_nonce))  # fmt: skip
    return IdlePlan(name, tuple(parts))
