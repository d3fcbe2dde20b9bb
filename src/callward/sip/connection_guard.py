"""Admission of stream connections (TCP, TLS, WebSocket): per-address caps and a bounded pool of
connections that have not yet proved they speak SIP, so slowloris fails.

A slowloris peer opens many connections and keeps each one alive with a byte now and then (or
never finishes the TLS handshake), until the listener's connection table is full and legitimate
phones are locked out. The defence has three parts, all decided here without I/O:

* **per-address caps**: at most ``max_connections_per_ip`` connections from one IP address, of
  which at most ``max_pending_per_ip`` may be *pending* (accepted, but no complete SIP message
  yet: TLS/WebSocket handshake, or a first message still arriving);
* **a bounded pending pool**: at most ``max_pending`` pending connections in all; when a new
  one arrives at the bound, the oldest pending connection is evicted (random early drop by age:
  an honest client is pending for a round trip, an attacker for as long as it can);
* **deadlines** (enforced by the transport with this module's numbers): the handshake within
  ``connect_timeout``, the first complete message within ``first_message_timeout`` of the accept,
  and every message within ``message_timeout`` of its first byte, so trickling one byte a second
  does not keep a connection alive the way it keeps an idle timer alive.

A NATed site (hundreds of phones behind one address) is not a slowloris: its connections each
complete a message at once and stop counting as pending, so only ``max_connections_per_ip``
(generous by default) applies to them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Literal

__all__ = ["Admission", "ConnectionGuard"]

Refusal = Literal["ip-connection-limit", "ip-pending-limit"]


@dataclass(frozen=True, slots=True)
class Admission:
    """What to do with a new connection: refuse it (``refused`` says why), and which pending
    connections (by key) to close to make room."""

    refused: Refusal | None = None
    evict: tuple[object, ...] = ()


class ConnectionGuard:
    """Counts connections per IP address and pending connections (see the module docstring).

    Keys are opaque hashable connection handles chosen by the transport."""

    def __init__(self, max_per_ip: int, max_pending_per_ip: int, max_pending: int) -> None:
        self.max_per_ip = max_per_ip
        self.max_pending_per_ip = max_pending_per_ip
        self.max_pending = max_pending
        self._ip: dict[object, str] = {}
        self._per_ip: Counter[str] = Counter()
        self._pending: OrderedDict[object, str] = OrderedDict()  # oldest first
        self._pending_per_ip: Counter[str] = Counter()
        self.evicted = 0

    def admit(self, key: object, ip: str) -> Admission:
        """A connection from ``ip`` was accepted: count it as pending, or refuse it."""
        if self._per_ip[ip] >= self.max_per_ip:
            return Admission("ip-connection-limit")
        if self._pending_per_ip[ip] >= self.max_pending_per_ip:
            return Admission("ip-pending-limit")
        evict: list[object] = []
        while self._pending and len(self._pending) >= self.max_pending:
            old = next(iter(self._pending))
            self.release(old)
            evict.append(old)
        self.evicted += len(evict)
        self._ip[key] = ip
        self._per_ip[ip] += 1
        self._pending[key] = ip
        self._pending_per_ip[ip] += 1
        return Admission(None, tuple(evict))

    def established(self, key: object) -> None:
        """The connection delivered a complete SIP message: it is no longer pending."""
        ip = self._pending.pop(key, None)
        if ip is not None:
            _dec(self._pending_per_ip, ip)

    def release(self, key: object) -> None:
        """The connection closed (any reason; idempotent)."""
        self.established(key)
        ip = self._ip.pop(key, None)
        if ip is not None:
            _dec(self._per_ip, ip)

    def is_pending(self, key: object) -> bool:
        return key in self._pending

    @property
    def pending(self) -> int:
        return len(self._pending)

    def count(self, ip: str) -> int:
        return self._per_ip[ip]


def _dec(counter: Counter[str], ip: str) -> None:
    left = counter[ip] - 1
    if left > 0:
        counter[ip] = left
    else:
        del counter[ip]
