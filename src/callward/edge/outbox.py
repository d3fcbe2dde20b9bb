"""What the edge core's components share: the datagrams to send, the events to publish and
the core's own timers (Timer C, session timers, guards). Sans-IO: nothing here sends or sleeps;
the adapter drains it."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from callward.events import Event
from callward.sip.peer import Peer

__all__ = ["Outbox"]

TimerFn = Callable[[Any, float], None]


class Outbox:
    def __init__(self, node: str) -> None:
        self.node = node
        self.datagrams: list[tuple[Peer, bytes]] = []
        self.events: deque[Event] = deque()
        self._heap: list[tuple[float, int, TimerFn, Any]] = []
        self._seq = itertools.count()
        self._event_seq = itertools.count(1)

    def send(self, peer: Peer, data: bytes) -> None:
        self.datagrams.append((peer, data))

    def emit(self, cls: type[Event], now: float, **fields: Any) -> None:
        self.events.append(cls(ts=now, node=self.node, seq=next(self._event_seq), **fields))

    def at(self, when: float, fn: TimerFn, arg: Any) -> None:
        """Call ``fn(arg, now)`` once ``when`` has passed (callbacks check their own state:
        there is no cancel, a stale timer is a no-op)."""
        heapq.heappush(self._heap, (when, next(self._seq), fn, arg))

    def get_timer(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, fn, arg = heapq.heappop(heap)
            fn(arg, now)

    def __len__(self) -> int:
        return len(self._heap)
