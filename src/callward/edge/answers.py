"""Answers to the edge core's store questions (:mod:`callward.edge.pending`) from the location
and subscriber stores. Synchronous: the adapter calls it inline for in-memory stores and in a
worker thread for network ones (Redis, PostgreSQL); tests call it directly."""

from __future__ import annotations

from callward.edge.location import LocationStore
from callward.edge.pending import LocationLookup, LocationUpdate, Query, SubscriberLookup
from callward.edge.subscribers import SubscriberStore

__all__ = ["StoreAnswers"]


class StoreAnswers:
    def __init__(self, location: LocationStore, subscribers: SubscriberStore | None) -> None:
        self.location = location
        self.subscribers = subscribers

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
            return None
        if isinstance(query, SubscriberLookup):
            if self.subscribers is None:
                return None
            return self.subscribers.get(query.username, query.realm)
        raise TypeError(f"not a store question: {type(query).__name__}")
