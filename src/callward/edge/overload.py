"""Flood and overload control at the edge: a per-source token bucket (before parsing) and the
:class:`OverloadGuard` admission policy that sheds *new* work first.

Priority, highest first (RFC 3261 §21.5.4, RFC 7339 §1 on what to shed):

1. in-dialog requests (ACK, BYE, re-INVITE, CANCEL): they end calls or keep them going, and
   refusing them leaves resources (and callers) hanging: shed only at the hard limit;
2. REGISTER (refreshes keep phones reachable) and other out-of-dialog requests: shed above
   ``capacity * register_headroom``;
3. new INVITEs: shed with ``503 Service Unavailable`` + ``Retry-After`` as soon as the calls
   being set up exceed ``capacity``, or the adapter reports that the event loop lags.

The guard only reads counters the core keeps (calls in setup, live transactions) plus the lag
the adapter measures, so it is sans-IO like the rest of the core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callward.edge.bounded_table import BoundedTable
from callward.edge.hooks import ACCEPT, Reject, Verdict
from callward.sip.message import Request
from callward.sip.peer import Peer

__all__ = ["OverloadGuard", "OverloadLimits", "RateLimiter"]


class RateLimiter:
    """Token bucket per source host (requests/s with a burst); bounded table."""

    def __init__(self, rate: float, burst: int, max_sources: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        # LRU of fixed capacity: a spray of new sources evicts the oldest entries one at a
        # time, never the whole table (a wholesale clear handed every flooder a full bucket).
        self._buckets: BoundedTable[str, tuple[float, float]] = BoundedTable(max_sources)

    def admit(self, host: str, now: float) -> bool:
        tokens, last = self._buckets.get(host) or (self.burst, now)
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets.put(host, (tokens, now))
            return False
        self._buckets.put(host, (tokens - 1.0, now))
        return True


@dataclass(frozen=True, slots=True)
class OverloadLimits:
    capacity: int = 2000  # INVITE transactions in setup (no final response yet)
    register_headroom: float = 2.0  # other new requests shed above capacity * this
    max_transactions: int = 200_000  # hard limit on live transactions: memory bound
    max_lag: float = 0.25  # seconds of event-loop lag above which new INVITEs are shed
    retry_after: int = 5  # seconds, in the 503


class OverloadGuard:
    """An :class:`~callward.edge.hooks.AdmissionPolicy`. ``setup_calls`` and
    ``transactions`` are read from the core at each decision."""

    def __init__(
        self,
        limits: OverloadLimits,
        setup_calls: Callable[[], int],
        transactions: Callable[[], int],
    ) -> None:
        self.limits = limits
        self.setup_calls = setup_calls
        self.transactions = transactions
        self.lag = 0.0  # set by the adapter (seconds the event loop is behind)
        self.shed = 0
        self._debt = 0.0

    def _lagging(self, max_lag: float) -> bool:
        """Shed a share of new INVITEs that grows with the lag: none at ``max_lag``, all at
        twice it (deterministic: a running sum, no randomness), so that the edge keeps
        answering what it can instead of oscillating between all and nothing."""
        if self.lag <= max_lag:
            self._debt = 0.0
            return False
        self._debt += min(1.0, (self.lag - max_lag) / max_lag)
        if self._debt >= 1.0:
            self._debt -= 1.0
            return True
        return False

    def admit(self, request: Request, peer: Peer, *, in_dialog: bool, now: float) -> Verdict:
        lim = self.limits
        if self.transactions() >= lim.max_transactions:
            if request.method == "ACK":
                return ACCEPT  # stateless, no transaction: never the cause
            self.shed += 1
            return Reject(503, "Overloaded", lim.retry_after, rule="overload")
        if in_dialog:
            return ACCEPT
        setup = self.setup_calls()
        if request.method == "INVITE":
            if setup >= lim.capacity or self._lagging(lim.max_lag):
                self.shed += 1
                return Reject(503, "Overloaded", lim.retry_after, rule="overload")
            return ACCEPT
        if setup >= lim.capacity * lim.register_headroom:
            self.shed += 1
            return Reject(503, "Overloaded", lim.retry_after, rule="overload")
        return ACCEPT
