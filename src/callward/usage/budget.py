"""An idle phone's byte budget: how to stay reachable within so many bytes per hour.

Staying reachable costs two things (``usage/keepalive.py`` prices both per transport):

- **Registration refresh** (RFC 3261 §10.2.4): the phone asks for :data:`REGISTER_EXPIRES`
  (3600 s, what registrars commonly grant at most) and refreshes at 75-90 % of it
  (``ua/registration.py``), so a refresh every ~2,970 s on average; four messages without a
  reusable nonce.
- **Keep-alives** (RFC 5626 §4.4): STUN on UDP, CRLF on TCP/TLS. The rest of the budget becomes
  the keep-alive sizer's ``bytes_per_hour_cap`` (``nat/keepalive.py``), a floor under the
  interval; the sizer still learns the NAT binding's lifetime above that floor.

When even the longest keep-alive interval the sizer uses (:data:`MAX_KEEPALIVE_S`) does not
fit, :attr:`IdleBudget.fits` is False and the plan says so: such a budget needs push-assisted
reachability (no keep-alive; the platform's push channel wakes the app), which
:attr:`IdleBudget.push_bytes_per_hour` prices.

Pure arithmetic: the phone (``callward phone answer --register --idle-budget``) applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from callward.errors import ConfigError
from callward.usage.keepalive import plan_keepalive

__all__ = ["MAX_KEEPALIVE_S", "REGISTER_EXPIRES", "IdleBudget", "idle_budget"]

REGISTER_EXPIRES = 3600
REFRESH_FRACTION = (0.75 + 0.90) / 2  # ua/registration.py refreshes at U(75 %, 90 %)
MAX_KEEPALIVE_S = 900.0  # nat/keepalive.py KeepAlivePolicy.max_interval
MIN_KEEPALIVE_S = 10.0  # nat/keepalive.py KeepAlivePolicy.min_interval


@dataclass(frozen=True, slots=True)
class IdleBudget:
    """How a phone spends ``bytes_per_hour`` when idle, and whether it fits."""

    bytes_per_hour: float
    transport: str
    keepalive_method: str
    register_expires: int
    register_bytes_per_hour: float
    keepalive_cap: float  # bytes per hour left for keep-alives (the sizer's cap)
    keepalive_floor_s: float  # the shortest keep-alive interval the cap allows
    fits: bool
    planned_bytes_per_hour: float  # at most: refresh + keep-alives at the floor interval
    push_bytes_per_hour: float  # the refresh alone: push-assisted reachability

    def as_dict(self) -> dict[str, object]:
        return {
            "bytes_per_hour": round(self.bytes_per_hour),
            "transport": self.transport,
            "keepalive": self.keepalive_method,
            "register_expires": self.register_expires,
            "register_bytes_per_hour": round(self.register_bytes_per_hour),
            "keepalive_cap_bytes_per_hour": round(self.keepalive_cap),
            "keepalive_min_interval_s": round(self.keepalive_floor_s, 1),
            "fits": self.fits,
            "planned_bytes_per_hour": round(self.planned_bytes_per_hour),
            "push_assisted_bytes_per_hour": round(self.push_bytes_per_hour),
        }


def idle_budget(bytes_per_hour: float, transport: str, *, ip_version: int = 4) -> IdleBudget:
    """Split ``bytes_per_hour`` between registration refresh and keep-alives (module
    docstring). ``transport`` is the SIP flow's: udp, tcp or tls (ws/wss count as tcp/tls)."""
    if not 100 <= bytes_per_hour <= 10_000_000 or math.isnan(bytes_per_hour):
        raise ConfigError(f"idle budget {bytes_per_hour} B/h: expected 100..10000000")
    carrier = {"ws": "tcp", "wss": "tls"}.get(transport, transport)
    if carrier not in ("udp", "tcp", "tls"):
        raise ConfigError(f"transport {transport!r}: expected udp, tcp, tls, ws or wss")
    method = "stun" if carrier == "udp" else "crlf"
    refresh_s = round(REGISTER_EXPIRES * REFRESH_FRACTION)
    register = plan_keepalive("register", refresh_s, transport=carrier, ip_version=ip_version)
    per = plan_keepalive(method, 3600, transport=carrier, ip_version=ip_version)
    cap = bytes_per_hour - register.bytes_per_hour
    cheapest = per.bytes_per_exchange * 3600.0 / MAX_KEEPALIVE_S
    fits = cap >= cheapest
    floor = per.bytes_per_exchange * 3600.0 / cap if cap > 0 else math.inf
    floor = max(floor, MIN_KEEPALIVE_S)
    keepalives = per.bytes_per_exchange * 3600.0 / min(floor, MAX_KEEPALIVE_S)
    return IdleBudget(
        bytes_per_hour, carrier, method, REGISTER_EXPIRES, register.bytes_per_hour,
        max(cap, 0.0), min(floor, MAX_KEEPALIVE_S), fits,
        register.bytes_per_hour + keepalives, register.bytes_per_hour,
    )  # fmt: skip
