"""A mapping of fixed capacity for per-source / per-account security state."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BoundedTable"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedTable(Generic[K, V]):
    """An LRU mapping of fixed capacity: inserting into a full table evicts the least recently
    used entry (one), so hostile key churn costs the attacker their own old entries first."""

    __slots__ = ("_d", "capacity", "evictions")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._d: OrderedDict[K, V] = OrderedDict()
        self.evictions = 0

    def get(self, key: K) -> V | None:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def peek(self, key: K) -> V | None:
        return self._d.get(key)

    def put(self, key: K, value: V) -> None:
        d = self._d
        if key in d:
            d.move_to_end(key)
        elif len(d) >= self.capacity:
            d.popitem(last=False)
            self.evictions += 1
        d[key] = value

    def get_or_create(self, key: K, make: Callable[[], V]) -> V:
        v = self.get(key)
        if v is None:
            v = make()
            self.put(key, v)
        return v

    def pop(self, key: K) -> V | None:
        return self._d.pop(key, None)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        return key in self._d
