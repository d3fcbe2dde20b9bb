"""Emergency calls from the phone, routed ahead of time.

Which dialled strings are emergency calls depends on where the phone is: 112 and 911 everywhere
(3GPP TS 22.101 §10.1: a mobile phone must recognise both in every network), plus the region's
own (999 in GB, 000 in AU, 111 in NZ, ...), and the RFC 5031 ``urn:service:sos`` family. The
route — the emergency edge's addresses — is resolved when the plan is prepared, never at call
time, so an emergency call goes out while DNS or the registration is down. The call goes to
``urn:service:sos`` (RFC 6881 §9.2) and carries the location *by reference* (RFC 6442
``Geolocation`` + ``Geolocation-Routing: yes``) toward that route only: no other call, log or
export ever sees it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from callward.errors import ConfigError, TransportError

__all__ = ["EMERGENCY_NUMBERS", "SOS_URN", "EmergencyPlan", "emergency_number", "prepare_plan"]

# 3GPP TS 22.101 §10.1.1: 112 and 911 in every network; the regions' own numbers on top.
_UNIVERSAL = frozenset({"112", "911"})
EMERGENCY_NUMBERS: dict[str, frozenset[str]] = {
    "US": _UNIVERSAL, "CA": _UNIVERSAL, "EU": _UNIVERSAL,
    "GB": _UNIVERSAL | {"999"}, "IE": _UNIVERSAL | {"999"}, "AU": _UNIVERSAL | {"000"},
    "NZ": _UNIVERSAL | {"111"}, "IN": _UNIVERSAL | {"100", "101", "102", "108"},
    "JP": _UNIVERSAL | {"110", "119"}, "BR": _UNIVERSAL | {"190", "192", "193"},
}  # fmt: skip
SOS_URN = "urn:service:sos"

Resolver = Callable[[str, int], Awaitable[list[tuple[str, int]]]]


def emergency_number(target: str, region: str) -> str | None:
    """The emergency number ``target`` dials in ``region`` (``sos`` for an RFC 5031 URN), or
    None when it is an ordinary call. ``target``: digits, ``tel:``, or ``sip:user@host``."""
    t = target.strip()
    if t.lower().startswith(SOS_URN):
        return "sos"
    user = t
    if ":" in t:
        scheme, _, rest = t.partition(":")
        if scheme.lower() not in ("sip", "sips", "tel"):
            return None
        user = rest.split("@", 1)[0].split(";", 1)[0]
    digits = user.replace("-", "").replace(" ", "")
    numbers = EMERGENCY_NUMBERS.get(region.upper(), _UNIVERSAL)
    return digits if digits in numbers else None


@dataclass(frozen=True, slots=True)
class EmergencyPlan:
    """Where emergency calls go (addresses resolved in advance) and the location reference."""

    region: str
    routes: tuple[tuple[str, int], ...]
    location: str | None = None  # RFC 6442 location URI (a LIS reference), never logged
    resolved_from: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.routes:
            raise ConfigError("an emergency plan needs at least one resolved route")
        if self.location is not None and not self.location.startswith(
            ("https:", "sip:", "sips:", "cid:")
        ):
            raise ConfigError("emergency location must be an https:, sip: or cid: URI (RFC 6442)")

    def __repr__(self) -> str:  # the location and addresses stay out of logs and tracebacks
        return f"EmergencyPlan(region={self.region!r}, routes={len(self.routes)})"

    def number(self, target: str) -> str | None:
        return emergency_number(target, self.region)

    def headers(self) -> list[tuple[str, str]]:
        """The INVITE's emergency headers: location by reference, routing allowed (RFC 6442
        §4.1-§4.2), and the ESNet priority namespace (RFC 4412 §9.2.1)."""
        out = [("Resource-Priority", "esnet.1")]
        if self.location is not None:
            out += [("Geolocation", f"<{self.location}>"), ("Geolocation-Routing", "yes")]
        return out


async def _getaddrinfo(host: str, port: int) -> list[tuple[str, int]]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    return [(str(info[4][0]), int(info[4][1])) for info in infos]


async def prepare_plan(
    region: str,
    edges: Sequence[str],
    *,
    location: str | None = None,
    resolver: Resolver = _getaddrinfo,
) -> EmergencyPlan:
    """Resolve the emergency edges (``host:port``) now, while the network works: the plan then
    needs no DNS at call time. An edge that does not resolve is skipped; none is ConfigError."""
    if region.upper() not in EMERGENCY_NUMBERS:
        raise ConfigError(
            f"unknown emergency region {region!r}; known: {', '.join(EMERGENCY_NUMBERS)}"
        )
    routes: list[tuple[str, int]] = []
    for edge in edges:
        host, _, port = edge.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"emergency edge {edge!r}: expected HOST:PORT")
        try:
            for addr in await resolver(host.strip("[]"), int(port)):
                if addr not in routes:
                    routes.append(addr)
        except (OSError, TransportError):
            continue
    return EmergencyPlan(region.upper(), tuple(routes), location, tuple(edges))
