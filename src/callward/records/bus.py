"""Event transport for several nodes: NATS JetStream, and the CDR consumer on top of it.

Subjects are ``<prefix>.<tenant>.<kind>`` with prefix ``callward.events`` (design.md), so a
consumer can filter one tenant or one kind with NATS wildcards. Each message carries the
``Nats-Msg-Id`` header ``call_id/leg/node/seq``: JetStream drops a re-publish of the same event
inside its duplicate window, and the assembler drops any that get through (idempotency on the
same key), so a node that replays its events after a restart never double-counts.

Delivery guarantees of :class:`CdrConsumer` (durable pull consumer, explicit acks):

1. a batch of messages is decoded and written to the store's *event journal* in one transaction;
2. only then are the messages acked ("ack after commit");
3. the in-memory reconciler decides when a call's CDR is complete; the CDR is upserted by call_id.

A crash before 2 means JetStream redelivers after ``ack_wait`` and the journal ignores the
duplicates; a crash after 2 loses nothing because on start :meth:`CdrConsumer.recover` rebuilds
the in-flight calls from the journal. Upserts make re-emitting a CDR harmless, so every call ends
up exactly once in the store whatever the crash point.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from callward.errors import StoreError, TransportError
from callward.events import Event
from callward.events_jetstream import DEFAULT_PREFIX, JetStreamPublisher, subject_for
from callward.records.assembly import Reconciler

__all__ = ["DEFAULT_PREFIX", "CdrConsumer", "JetStreamPublisher", "ensure_stream", "subject_for"]


async def ensure_stream(
    js: Any, name: str, prefix: str = DEFAULT_PREFIX, memory: bool = False
) -> None:
    """Create the stream holding ``<prefix>.>`` unless it exists (an operator's existing
    stream, with its own storage and limits, is kept as it is)."""
    try:
        await js.stream_info(name)
        return
    except nats.js.errors.NotFoundError:
        pass
    cfg = StreamConfig(
        name=name,
        subjects=[f"{prefix}.>"],
        storage=StorageType.MEMORY if memory else StorageType.FILE,
        duplicate_window=120.0,
    )
    try:
        await js.add_stream(cfg)
    except nats.errors.Error as exc:
        raise TransportError(f"JetStream stream {name}: cannot create: {exc}") from None


@dataclass
class CdrConsumer:
    """Durable pull consumer: journal → ack → assemble → upsert CDRs (see module docstring)."""

    js: Any
    stream: str
    durable: str
    store: Any  # SqliteCdrStore | PostgresCdrStore: write() + journal_*()
    prefix: str = DEFAULT_PREFIX
    batch: int = 100
    ack_wait_s: float = 30.0
    clock: Callable[[], float] = time.time
    grace_s: float = 5.0
    timeout_s: float = 3600.0
    on_journaled: Callable[[int], None] | None = None  # test hook: crash between commit and ack
    reconciler: Reconciler = field(init=False)
    written: int = 0
    acked: int = 0

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(
            clock=self.clock, timeout_s=self.timeout_s, grace_s=self.grace_s
        )

    def recover(self) -> int:
        """Reload in-flight calls from the journal (after a crash or restart)."""
        events = self.store.journal_events()
        for ev in events:
            self.reconciler.observe(ev)
        return len(events)

    async def _subscription(self) -> Any:
        cfg = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_ack_pending=max(1000, self.batch * 4),
        )
        return await self.js.pull_subscribe(
            f"{self.prefix}.>", durable=self.durable, stream=self.stream, config=cfg
        )

    async def step(self, sub: Any, fetch_timeout: float = 1.0) -> int:
        """Fetch, journal, ack and assemble one batch; returns messages handled."""
        try:
            msgs = await sub.fetch(self.batch, timeout=fetch_timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            msgs = []
        events: list[Event] = []
        for m in msgs:
            try:
                events.append(self.store.codec.decode_event(m.data))
            except StoreError:
                await m.term()  # poison message: never redeliver, it can never parse
        if msgs:
            # stragglers of calls already written and forgotten are acked but not journaled:
            # after a restart they would rebuild a partial CDR over the complete one
            closed = self.reconciler.is_closed
            keep = [e for e in events if not closed(getattr(e, "call_id", ""))]
            self.reconciler.late_events += len(events) - len(keep)
            events = keep
            await asyncio.to_thread(self.store.journal_append, events)  # commit first ...
            if self.on_journaled is not None:
                self.on_journaled(len(msgs))
            for m in msgs:  # ... then ack
                await m.ack()
            self.acked += len(msgs)
            for ev in events:
                self.reconciler.observe(ev)
        await self.flush_due()
        return len(msgs)

    async def flush_due(self) -> int:
        cdrs = self.reconciler.due()
        if cdrs:
            await asyncio.to_thread(self.store.write, cdrs)
            self.written += len(cdrs)
        if self.reconciler.forgotten:
            gone, self.reconciler.forgotten = self.reconciler.forgotten, []
            await asyncio.to_thread(self.store.journal_drop, gone)
        return len(cdrs)

    async def run(self, stop: asyncio.Event, idle_exit_s: float | None = None) -> None:
        """Consume until ``stop`` is set (or, with ``idle_exit_s``, until nothing arrived and
        no call is pending for that long: used by batch jobs and tests)."""
        sub = await self._subscription()
        idle_since = time.monotonic()
        try:
            while not stop.is_set():
                n = await self.step(sub)
                if n:
                    idle_since = time.monotonic()
                elif (
                    idle_exit_s is not None
                    and time.monotonic() - idle_since >= idle_exit_s
                    and not self._pending_calls()
                ):
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _pending_calls(self) -> bool:
        asm = self.reconciler.assembler
        return any(asm._calls[c].emitted != asm._calls[c].changes for c in asm.call_ids())


async def connect(url: str) -> Any:
    try:
        return await nats.connect(url, connect_timeout=3, max_reconnect_attempts=3)
    except (OSError, nats.errors.Error) as exc:
        raise StoreError(f"NATS {url}: cannot connect: {exc}") from None
