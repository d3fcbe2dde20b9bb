"""Questions the sans-IO edge core asks the outside world, and how it waits for the answers.

The core never touches a store, a resolver or a relay. Code that needs one is written as a
generator (the pattern of :mod:`callward.sip.dns`) that *yields* a :class:`Query` and is *sent*
the answer::

    def handle(...) -> Task:
        bindings = yield from ask(LocationLookup(aor), list)   # typed answer
        ...

:class:`Tasks` drives such generators. Each yielded query becomes a :class:`Pending` (a
numbered request with a deadline) that the adapter takes with ``core.next_request()``,
performs (concurrently, off the event loop when it blocks) and answers with
``core.resolve(pending.id, result, now)``; the generator then continues where it stopped. An
answer that does not come before the deadline, or an exception instance given as the result,
is raised inside the generator as :class:`~callward.errors.StoreError` so the code that asked
can answer the caller (500/503) instead of leaving it hanging.

New kinds of question (a media relay offer, an admission check against a shared blocklist)
are new :class:`Query` subclasses plus a handler in the adapter
(:meth:`callward.edge.server.EdgeServer.answer_with`); nothing here changes.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from callward.edge.location import Binding
from callward.edge.subscribers import Subscriber
from callward.errors import StoreError
from callward.sip.peer import Peer

__all__ = [
    "LocationLookup",
    "LocationUpdate",
    "Pending",
    "Query",
    "ResolveUpstream",
    "SubscriberLookup",
    "Task",
    "Tasks",
    "ask",
    "bindings_of",
    "resolve_upstream",
    "subscriber",
]

T = TypeVar("T")


class Query:
    """Base of every question the core asks. Subclasses are frozen dataclasses; ``timeout``
    (seconds) bounds how long the core waits for the answer."""

    timeout: ClassVar[float] = 2.0


@dataclass(frozen=True, slots=True)
class LocationLookup(Query):
    """Answer: ``list[Binding]``, the live bindings of ``aor`` (RFC 3261 §10.3)."""

    aor: str


@dataclass(frozen=True, slots=True)
class LocationUpdate(Query):
    """Answer: ``None`` once applied. ``save`` bindings are written, ``remove`` keys deleted;
    ``remove_all`` drops every binding of ``aor`` first."""

    aor: str
    save: tuple[Binding, ...] = ()
    remove: tuple[str, ...] = ()
    remove_all: bool = False


@dataclass(frozen=True, slots=True)
class SubscriberLookup(Query):
    """Answer: ``Subscriber | None`` for ``username`` in ``realm``."""

    username: str
    realm: str


@dataclass(frozen=True, slots=True)
class ResolveUpstream(Query):
    """Answer: ``list[Peer]``, the RFC 3263 failover list for a configured upstream URI."""

    timeout: ClassVar[float] = 5.0
    uri: str


@dataclass(frozen=True, slots=True)
class Pending:
    """One outstanding question: answer it with ``core.resolve(id, result, now)``."""

    id: int
    query: Query
    deadline: float


Task = Generator[Query, object, None]


def ask(query: Query, kind: type[T] | tuple[type, ...]) -> Generator[Query, object, T]:
    """Yield ``query`` and return its answer checked against ``kind`` (None allowed when
    ``kind`` includes ``type(None)``)."""
    answer = yield query
    if not isinstance(answer, kind):
        raise StoreError(f"{type(query).__name__}: unexpected answer {type(answer).__name__}")
    return answer  # type: ignore[return-value]


def bindings_of(aor: str) -> Generator[Query, object, list[Binding]]:
    found = yield from ask(LocationLookup(aor), list)
    return [b for b in found if isinstance(b, Binding)]


def subscriber(username: str, realm: str) -> Generator[Query, object, Subscriber | None]:
    found: object = yield from ask(SubscriberLookup(username, realm), (Subscriber, type(None)))
    return found if isinstance(found, Subscriber) else None


def resolve_upstream(uri: str) -> Generator[Query, object, list[Peer]]:
    found = yield from ask(ResolveUpstream(uri), list)
    return [p for p in found if isinstance(p, Peer)]


class Tasks:
    """Generator tasks waiting on queries, with deadlines. At most ``limit`` tasks wait at
    once: beyond that :meth:`start` refuses (the caller sheds the request), so memory stays
    bounded whatever the stores' latency."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[Task, float]] = {}
        self._requests: deque[Pending] = deque()
        self._deadlines: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def full(self) -> bool:
        return len(self._waiting) >= self.limit

    def start(self, task: Task, now: float) -> None:
        """Run ``task`` until its first question (or its end)."""
        self._advance(task, None, now)

    def resolve(self, pending_id: int, result: object, now: float) -> bool:
        """Give the answer to question ``pending_id``; False when it is unknown (timed out)."""
        entry = self._waiting.pop(pending_id, None)
        if entry is None:
            return False
        self._advance(entry[0], result, now)
        return True

    def next_request(self) -> Pending | None:
        while self._requests:
            pending = self._requests.popleft()
            if pending.id in self._waiting:
                return pending
        return None

    def get_timer(self) -> float | None:
        heap = self._deadlines
        while heap and heap[0][1] not in self._waiting:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, pid = heapq.heappop(heap)
            entry = self._waiting.pop(pid, None)
            if entry is not None:
                self._advance(entry[0], StoreError("no answer before the deadline"), now)

    def _advance(self, task: Task, result: object, now: float) -> None:
        try:
            if isinstance(result, BaseException):
                exc = result if isinstance(result, StoreError) else StoreError(str(result))
                query = task.throw(exc)
            else:
                query = task.send(result)
        except StopIteration:
            return
        pid = next(self._ids)
        deadline = now + query.timeout
        self._waiting[pid] = (task, deadline)
        self._requests.append(Pending(pid, query, deadline))
        heapq.heappush(self._deadlines, (deadline, pid))
