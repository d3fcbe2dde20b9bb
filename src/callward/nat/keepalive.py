"""Keep-alive interval sized to the NAT in front of us (RFC 5626 §4.4), sans-IO.

RFC 5626 §4.4.1 sends a keep-alive at a random 80-100 % of an interval: the registrar's
``Flow-Timer`` when it sent one, else a default (29 s for UDP+STUN, 120 s for TCP/TLS CRLF).
Mobile NATs often keep UDP bindings for longer, and every keep-alive costs radio time and
bytes, so :class:`KeepAliveSizer` *learns* the binding lifetime instead: after each keep-alive
that found the binding intact it lengthens the interval; when the binding was lost (the STUN
XOR-MAPPED-ADDRESS changed, or the CRLF pong never came) it records that interval as too long
and searches between the longest good and the shortest bad interval, settling below the lifetime.
A bytes-per-hour cap puts a floor under the interval; when the floor is above what the NAT
needs, :attr:`KeepAliveSizer.budget_limited` says so.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from callward.errors import ConfigError

__all__ = ["DEFAULT_INTERVAL", "KeepAlivePolicy", "KeepAliveSizer"]

# RFC 5626 §4.4.1: recommended keep-alive intervals when no Flow-Timer is received.
DEFAULT_INTERVAL = {"stun": 29.0, "crlf": 120.0}


@dataclass(frozen=True, slots=True)
class KeepAlivePolicy:
    method: str  # "crlf" (TCP/TLS/WS) | "stun" (UDP)
    bytes_per_keepalive: int  # request + response on the wire, IP headers included
    initial_interval: float | None = None  # None: the RFC 5626 default for the method
    min_interval: float = 10.0
    max_interval: float = 900.0
    bytes_per_hour_cap: float | None = None
    learn: bool = True  # grow past the default while the binding survives
    growth: float = 1.5

    def __post_init__(self) -> None:
        if self.method not in DEFAULT_INTERVAL:
            raise ConfigError(f"keep-alive method must be crlf or stun, not {self.method!r}")
        if not 1.0 <= self.min_interval <= self.max_interval <= 86_400:
            raise ConfigError("keep-alive intervals must satisfy 1 <= min <= max <= 86400 s")
        if self.bytes_per_keepalive <= 0:
            raise ConfigError("bytes_per_keepalive must be positive")
        if self.bytes_per_hour_cap is not None and self.bytes_per_hour_cap <= 0:
            raise ConfigError("bytes_per_hour_cap must be positive")
        if not 1.0 < self.growth <= 4.0:
            raise ConfigError("keep-alive growth must be in (1, 4]")

    @property
    def floor(self) -> float:
        """The shortest interval the byte budget allows."""
        if self.bytes_per_hour_cap is None:
            return self.min_interval
        return max(self.min_interval, self.bytes_per_keepalive * 3600.0 / self.bytes_per_hour_cap)


class KeepAliveSizer:
    """The interval for the next keep-alive on one flow; see the module docstring."""

    def __init__(self, policy: KeepAlivePolicy) -> None:
        self.policy = policy
        start = policy.initial_interval or DEFAULT_INTERVAL[policy.method]
        self.flow_timer: float | None = None
        self.good = 0.0  # longest interval after which the binding was still there
        self.bad: float | None = None  # shortest interval after which it was gone
        self.interval = self._bounded(start)
        self.sent = 0
        self.lost = 0
        self._last_delay: float | None = None
        self._mapped: object | None = None

    def _bounded(self, value: float) -> float:
        return min(self.policy.max_interval, max(self.policy.floor, value))

    @property
    def budget_limited(self) -> bool:
        """True when the bytes-per-hour cap keeps us above an interval the NAT survives."""
        return self.bad is not None and self.policy.floor >= self.bad

    @property
    def bytes_per_hour(self) -> float:
        return self.policy.bytes_per_keepalive * 3600.0 / self.interval

    def set_flow_timer(self, seconds: float | None) -> None:
        """The registrar's Flow-Timer (RFC 5626 §5.4): it knows its own idle timeout."""
        self.flow_timer = seconds
        if seconds is not None and seconds > 0:
            self.interval = self._bounded(seconds)

    def next_delay(self, rng: random.Random) -> float:
        """Seconds until the next keep-alive: 80-100 % of the interval (§4.4.1)."""
        delay = self.interval * rng.uniform(0.8, 1.0)
        self._last_delay = delay
        self.sent += 1
        return delay

    def on_result(self, alive: bool, mapped: object | None = None) -> None:
        """Feed the outcome of the keep-alive sent after :meth:`next_delay`: ``alive`` is False
        when no answer came (a CRLF pong or STUN response); ``mapped`` is the STUN mapped
        address (a changed one means the NAT forgot us and made a new binding)."""
        waited = self._last_delay if self._last_delay is not None else self.interval
        changed = mapped is not None and self._mapped is not None and mapped != self._mapped
        if mapped is not None:
            self._mapped = mapped
        if not alive or changed:
            self.lost += 1
            self.bad = waited if self.bad is None else min(self.bad, waited)
            self.good = min(self.good, self.bad * 0.5)
            self.interval = self._bounded(max(self.good, self.bad * 0.5))
            return
        self.good = max(self.good, waited)
        if self.flow_timer is not None or not self.policy.learn:
            return
        if self.bad is None:
            self.interval = self._bounded(self.interval * self.policy.growth)
        else:
            # Search between good and bad; stay a margin under the lifetime (jitter is -20 %).
            target = min((self.good + self.bad) / 2, self.bad * 0.8)
            self.interval = self._bounded(max(self.interval, target))
