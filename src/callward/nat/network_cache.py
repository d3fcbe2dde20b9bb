"""Per-network caches for NAT traversal, sans-IO: the STUN mapped address and the last ICE
candidate pair that worked, keyed by *which network* the phone is on.

A phone moves between networks (home Wi-Fi, office Wi-Fi, cellular); what worked on one is
the best first guess the next time it is there. :class:`NetworkKey` names a network by its
interface and gateway (or Wi-Fi SSID); the cache stores only a keyed digest of that, so a
cache dump or log line never shows an address or SSID (privacy rule of design.md). Entries
expire (a NAT's binding and mapping policy can change) and the cache is bounded (LRU).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from callward.errors import ConfigError

__all__ = ["CandidatePair", "NetworkCache", "NetworkKey"]

T = TypeVar("T")
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class NetworkKey:
    """Which network we are on: the interface and its gateway (or Wi-Fi SSID)."""

    interface: str
    gateway: str

    def digest(self, salt: bytes = b"callward-network") -> str:
        """A stable pseudonymous id (BLAKE2b keyed with ``salt``): cache key and log label."""
        raw = f"{self.interface}\x00{self.gateway}".encode()
        return hashlib.blake2b(raw, key=salt[:64], digest_size=12).hexdigest()

    def __repr__(self) -> str:  # never print the gateway/SSID
        return f"NetworkKey({self.digest()})"


@dataclass(frozen=True, slots=True)
class CandidatePair:
    """The pair ICE nominated last time on a network: our candidate's type (host, srflx,
    relay), the TURN server it used (relay only) and the remote address."""

    local_type: str
    remote: Address
    turn_server: str | None = None

    def __post_init__(self) -> None:
        if self.local_type not in ("host", "srflx", "prflx", "relay"):
            raise ConfigError(f"unknown ICE candidate type {self.local_type!r} (RFC 8445 §5.1.1)")


class NetworkCache(Generic[T]):
    """Values per network with an expiry, at most ``max_entries`` networks (LRU)."""

    def __init__(self, ttl: float, *, max_entries: int = 64) -> None:
        if ttl <= 0 or max_entries <= 0:
            raise ConfigError("network cache ttl and max_entries must be positive")
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: NetworkKey, now: float) -> T | None:
        k = key.digest()
        entry = self._entries.get(k)
        if entry is None or entry[0] <= now:
            if entry is not None:
                del self._entries[k]
            self.misses += 1
            return None
        self._entries.move_to_end(k)
        self.hits += 1
        return entry[1]

    def put(self, key: NetworkKey, value: T, now: float, ttl: float | None = None) -> None:
        k = key.digest()
        self._entries[k] = (now + (self.ttl if ttl is None else ttl), value)
        self._entries.move_to_end(k)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, key: NetworkKey) -> None:
        self._entries.pop(key.digest(), None)

    def __len__(self) -> int:
        return len(self._entries)
