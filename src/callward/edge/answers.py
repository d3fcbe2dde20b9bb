"""Answers to the edge core's store questions (:mod:`callward.edge.pending`) from the location
and subscriber stores. Synchronous: the adapter calls it inline for in-memory stores and in a
worker thread for network ones (Redis, PostgreSQL); tests call it directly."""

from __future__ import annotations

from callward.edge.location import LocationStore
from callward.edge.pending import LocationLookup, LocationUpdate, Query, SubscriberLookup
from callward.edge.subscribers import SubscriberStore
from callward.errors import StoreError

__all__ = ["StoreAnswers"]


TOUCH_INTERVAL = 3600.0  # seconds between two last_seen writes for one AOR (retention only)


class StoreAnswers:
    def __init__(self, location: LocationStore, subscribers: SubscriberStore | None) -> None:
        self.location = location
        self.subscribers = subscribers
        self._touched: dict[str, float] = {}  # AOR -> last touch (bounded by the clearing below)

    def handles(self, query: Query) -> bool:
        return isinstance(query, LocationLookup | LocationUpdate | SubscriberLookup)

    def answer(self, query: Query, now: float) -> object:
        """The answer to ``query`` (raises StoreError when a store fails)."""
        if isinstance(query, LocationLookup):
            return self.location.lookup(query.aor, now)
        if isinstance(query, LocationUpdate):
            if query.remove_all:
                self.location.remove_all(query.aor)
            for key in query.remove:
                self.location.remove(query.aor, key)
            for binding in query.save:
                self.location.save(binding)
            if query.save:
                self._seen(query.aor, now)
            return None
        if isinstance(query, SubscriberLookup):
            if self.subscribers is None:
                return None
            return self.subscribers.get(query.username, query.realm)
        raise TypeError(f"not a store question: {type(query).__name__}")

    def _seen(self, aor: str, now: float) -> None:
        """A REGISTER saved bindings: the subscriber is active (its row's ``last_seen``, which
        retention ages subscribers by). The AOR user is the digest username (the registrar
        checks they match)."""
        last = self._touched.get(aor)
        if self.subscribers is None or (last is not None and now - last < TOUCH_INTERVAL):
            return
        if len(self._touched) > 100_000:
            self._touched.clear()
        self._touched[aor] = now
        try:
            self.subscribers.touch(aor.rsplit("@", 1)[0], now)
        except StoreError:
            pass  # ageing is bookkeeping: a failed touch never fails the REGISTER
