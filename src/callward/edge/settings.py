"""Resolved settings for one edge node: the YAML section plus command-line overrides, in the
frozen form the sans-IO core takes (so SIGHUP reload can swap them atomically)."""

from __future__ import annotations

from dataclasses import dataclass, field

from callward.errors import ConfigError
from callward.sip.parser import DEFAULT_LIMITS, ParseLimits
from callward.sip.peer import Peer

__all__ = ["EdgeSettings", "parse_listen"]

_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


def parse_listen(spec: str) -> Peer:
    """``udp:127.0.0.1:5060`` / ``tcp:[::1]:5060`` → Peer; ConfigError naming the input."""
    transport, _, rest = spec.partition(":")
    transport = transport.lower()
    host, _, port_text = rest.rpartition(":")
    host = host.strip("[]")
    if transport not in _TRANSPORTS or not host or not port_text.isdigit():
        raise ConfigError(
            f"listen {spec!r}: expected TRANSPORT:HOST:PORT with TRANSPORT in udp/tcp/tls/ws/wss"
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"listen {spec!r}: port out of range")
    return Peer(transport, host, port)


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    node: str = "edge-1"
    listen: tuple[Peer, ...] = (Peer("udp", "127.0.0.1", 5060),)
    realm: str = "callward.local"
    domains: tuple[str, ...] = ()
    routes: tuple[tuple[str, str], ...] = ()  # Request-URI user → SIP URI (static routes)
    upstreams: tuple[str, ...] = ()  # SIP URIs in failover order
    auth: bool = True
    record_route: bool = True
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    nonce_ttl: float = 600.0  # > a phone's refresh of a 600 s registration (75-90 %)
    # Challenges offered, in order (RFC 8760). SIPp, sipsak and baresip 1.0 fail as soon as a
    # SHA-256 challenge is present, so MD5 alone by default; ("SHA-256", "MD5") where phones
    # implement RFC 8760. Both HA1s are stored, so switching is configuration only.
    algorithms: tuple[str, ...] = ("MD5",)
    t1: float = 0.5  # RFC 3261 §17.1.1.1
    t2: float = 4.0
    timer_c: float = 180.0  # §16.6 step 11: > 3 minutes
    blacklist_seconds: float = 30.0
    session_expires: int = 1800  # RFC 4028: interval we ask for (0: do not insert)
    min_se: int = 90  # RFC 4028 §5: our minimum, 422 below it
    trusted: tuple[str, ...] = ()  # hosts or host:port whose PAI we believe and need no auth
    untrusted: tuple[str, ...] = ()  # peers we hide topology and asserted identity from
    default_region: str = "US"  # phonenumbers region for E.164 normalization
    tenant_regions: tuple[tuple[str, str], ...] = ()
    rate_limit: float = 0.0  # requests/s per source host (0: unlimited)
    rate_burst: int = 200
    max_setup_calls: int = 2000  # overload: INVITEs in setup before new ones get 503
    max_backlog: float = 0.25  # overload: seconds of backlog before new INVITEs get 503
    max_transactions: int = 200_000  # overload: hard cap on live transactions
    srtp_policy: str = "optional"  # optional | untrusted | always (edge/srtp_policy.py)
    security_admission: bool = True  # the security area's admission policy (edge/security.py)
    limits: ParseLimits = field(default_factory=lambda: DEFAULT_LIMITS)

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError("edge needs at least one listen address")
        if self.min_expires > self.max_expires:
            raise ConfigError("edge.min_expires must not exceed edge.max_expires")

    def region_for(self, tenant: str) -> str:
        for name, region in self.tenant_regions:
            if name == tenant:
                return region
        return self.default_region

    @property
    def node_uri(self) -> str:
        p = self.listen[0]
        host = f"[{p.host}]" if ":" in p.host else p.host
        suffix = "" if p.transport == "udp" else f";transport={p.transport}"
        return f"sip:{host}:{p.port}{suffix}"
